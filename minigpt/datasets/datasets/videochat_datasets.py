"""VideoChat-Instruct-11K (VideoChat's video instruction data over WebVid-10M clips), and its synthetic twin.

The released ``videochat_instruct_11k.json`` is a JSON list of ``{"video": "<folder>/<id>.mp4",
"QA": [{"i": instruction, "q": question, "a": answer}, ...]}`` (7K detailed descriptions, whose
instruction is in ``i``, and 4K multi-turn conversations, whose questions are in ``q``); other keys
(``caption``) are ignored. A QA turn may also carry ``question_type``, which evaluation reports
accuracy by (the synthetic clips write ``motion`` and ``colour``).

Which slot a clip fills follows from what the reader hands out for it: the video processors' frames
``[T, 3, H, W]`` go in the video slot ``<Video><VideoHere></Video>``, which every family encodes frame
by frame (``model.video_pooling``); a clip read whole (its stored features ``[C]`` from ``features_dir``,
or ImageBind's views ``[S, 3, T, H, W]``) is one item in an image slot.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import torch

from minigpt.common.constants import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, WHOLE_VIDEO_PLACEHOLDER
from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import Processor, make_instruction, require_keys
from minigpt.datasets.datasets.video_datasets import VIDEO_EXTENSIONS, VideoInstructDataset

VIDEO_PATHS = ("as_written", "file_name")
SAMPLES = ("conversation", "question")  # one sample per conversation (training chats) or per QA turn


class VideoChatDataset(VideoInstructDataset):
    """VideoChat-Instruct entries; ``samples`` says what one sample is.

    ``samples: conversation`` (the ``videochat_instruct`` builder): one sample per conversation (or
    per ``max_turns`` of it), task ``video_conversation``; ``"instruction_input"``/``"answer"`` are
    lists of turns, the first starting with the clip's slot and the task tag.
    ``samples: question`` (the ``synthetic_videochat`` builder): one sample per QA turn, asked alone
    behind the clip's slot, task ``vqa``, with ``"answers"`` and the turn's ``question_type``
    (evaluation by kind). The slot (:meth:`clip_slot`): frames ``[T, 3, H, W]`` in
    ``<Video><VideoHere></Video>``; a clip read whole in ``<Vid><ImageHere></Vid>`` (conversations,
    MM-LLaMA's ``<<VID>>``) or ``<Img><ImageHere></Img>`` (questions: the video quickstart's stored features).

    A turn's question is its ``i`` and ``q`` joined by a space (either may be empty, not both).
    ``video_path: as_written`` reads ``video`` under the videos root as the file names it;
    ``file_name`` reads its last path component there (MM-LLaMA's download keeps the ~8K videos in one
    folder). Samples also carry the clip's path: ``"video_id"`` per conversation, ``"video"`` per question. With ``features_dir``
    a clip is its stored embedding; with ``read_images: false`` (``data_type: text``) it is None.
    """

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        videos_root: Optional[str],
        task_tag: Optional[str] = None,
        samples: str = "conversation",
        video_path: str = "as_written",
        max_turns: Optional[int] = None,
        video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
        read_images: bool = True,
    ) -> None:
        if samples not in SAMPLES:
            raise ValueError(f"datasets.{name}.samples must be one of {', '.join(SAMPLES)}, got {samples!r}")
        if video_path not in VIDEO_PATHS:
            raise ValueError(f"datasets.{name}.video_path must be one of {', '.join(VIDEO_PATHS)}, got {video_path!r}")
        if max_turns is not None and (int(max_turns) != max_turns or max_turns < 1):
            raise ValueError(f"datasets.{name}.max_turns must be a positive integer or null, got {max_turns!r}")
        self.samples = samples
        self.task = "video_conversation" if samples == "conversation" else "vqa"
        # the slot of a clip read whole (stored features, ImageBind's views): one item in an image slot
        self.placeholder = WHOLE_VIDEO_PLACEHOLDER if samples == "conversation" else IMAGE_PLACEHOLDER
        self.video_path_mode = video_path
        self.max_turns = max_turns
        super().__init__(name, ann_paths, vis_processor, text_processor, videos_root, task_tag, video_extensions,
                         read_images=read_images, require_processor=samples == "conversation")

    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        require_keys(entry, ("video", "QA"), self.name, path, i)
        where = f"dataset {self.name!r}: entry {i} of {path}"
        video, qa = entry["video"], entry["QA"]
        if not isinstance(video, str) or not video.strip() or not isinstance(qa, list) or not qa:
            raise DatasetError(
                f"{where}: 'video' must be a non-empty path and 'QA' a list of {{i, q, a}} turns, got {entry!r:.200}"
            )
        questions, answers, kinds = [], [], []
        for t, turn in enumerate(qa):
            if not isinstance(turn, dict) or not isinstance(turn.get("a"), str) or not turn["a"].strip():
                raise DatasetError(f"{where}: turn {t} needs a non-empty answer 'a', got {turn!r:.200}")
            parts = [turn.get(k) or "" for k in ("i", "q")]
            if not all(isinstance(p, str) for p in parts) or not any(p.strip() for p in parts):
                raise DatasetError(f"{where}: turn {t} needs an instruction 'i' or a question 'q', got {turn!r:.200}")
            questions.append(" ".join(" ".join(p.split()) for p in parts if p.strip()))
            answers.append(turn["a"].strip())
            kinds.append(None if turn.get("question_type") is None else str(turn["question_type"]))
        video = video.strip()
        if self.video_path_mode == "file_name":
            video = os.path.basename(video)
        if self.samples == "question":
            records = []
            for question, answer, kind in zip(questions, answers, kinds):
                record = {"key": f"{len(self.records) + len(records)}:{video}", "video_id": video,
                          "question": question, "answer": answer}
                if kind is not None:
                    record["question_type"] = kind
                records.append(record)
            return records
        step = self.max_turns or len(questions)
        return [
            {
                "key": f"{len(self.records)}:{k // step}:{video}",
                "video_id": video,
                "questions": questions[k : k + step],
                "answers": answers[k : k + step],
            }
            for k in range(0, len(questions), step)
        ]

    def load_video(self, video_id: str, sample_id: str):
        """The processed clip, or its stored features (the file need not exist then); None when media are not read."""
        if not self.read_images:
            return None
        if self.feature_store is not None:
            return self.read_video(self.image_path(video_id, sample_id), sample_id)
        return super().load_video(video_id, sample_id)

    def clip_slot(self, media: Any) -> str:
        """The placeholder for a clip as :meth:`load_video` hands it out: frames ``[T, 3, H, W]`` go in
        the video slot (each frame through the model's image path, then pooled or concatenated); in an
        image slot they would be read as ``T`` images. Anything else is one item read whole."""
        if isinstance(media, torch.Tensor) and media.dim() == 4:
            return VIDEO_PLACEHOLDER
        return self.placeholder

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        media = self.load_video(record["video_id"], sample_id)
        slot = self.clip_slot(media)
        if self.samples == "question":
            sample = {
                "image": media,
                "instruction_input": make_instruction(record["question"], self.task_tag, self.read_images, slot),
                "answer": record["answer"],
                "answers": [record["answer"]],
                "sample_id": sample_id,
                "task": self.task,
                "video": record["video_id"],
            }
            if "question_type" in record:
                sample["question_type"] = record["question_type"]
            return sample
        first = " ".join(p for p in (slot, self.task_tag or "", record["questions"][0]) if p)
        return {
            "image": media,
            "instruction_input": [first] + list(record["questions"][1:]),
            "answer": list(record["answers"]),
            "sample_id": sample_id,
            "task": self.task,
            "video_id": record["video_id"],
        }
