"""VideoChat-Instruct-11K (VideoChat's video instruction data over WebVid-10M clips).

The released ``videochat_instruct_11k.json`` is a JSON list of ``{"video": "<folder>/<id>.mp4",
"QA": [{"i": instruction, "q": question, "a": answer}, ...]}`` (7K detailed descriptions, whose
instruction is in ``i``, and 4K multi-turn conversations, whose questions are in ``q``); other keys
(``caption``) are ignored. One entry is one conversation about its video.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from minigpt.common.constants import WHOLE_VIDEO_PLACEHOLDER
from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import Processor, require_keys
from minigpt.datasets.datasets.video_datasets import VIDEO_EXTENSIONS, VideoInstructDataset

VIDEO_PATHS = ("as_written", "file_name")


class VideoChatInstructDataset(VideoInstructDataset):
    """VideoChat-Instruct conversations: one sample per conversation (or per ``max_turns`` of it).

    A turn's question is its ``i`` and ``q`` joined by a space (either may be empty, not both); the
    first turn starts with the video slot ``<Vid><ImageHere></Vid>`` and the task tag, if any.
    ``video_path: as_written`` reads ``video`` under the videos root as the file names it;
    ``file_name`` reads its last path component there (MM-LLaMA's download keeps the ~8K videos in one
    folder). ``max_turns`` cuts a longer conversation into samples of at most that many turns, each
    with the video. ``"instruction_input"``/``"answer"`` are lists of turns; samples also carry ``"video_id"``.
    """

    task = "video_conversation"

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        videos_root: Optional[str],
        task_tag: Optional[str] = None,
        video_path: str = "as_written",
        max_turns: Optional[int] = None,
        video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
    ) -> None:
        if video_path not in VIDEO_PATHS:
            raise ValueError(f"datasets.{name}.video_path must be one of {', '.join(VIDEO_PATHS)}, got {video_path!r}")
        if max_turns is not None and (int(max_turns) != max_turns or max_turns < 1):
            raise ValueError(f"datasets.{name}.max_turns must be a positive integer or null, got {max_turns!r}")
        self.video_path_mode = video_path
        self.max_turns = max_turns
        super().__init__(name, ann_paths, vis_processor, text_processor, videos_root, task_tag, video_extensions)

    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        require_keys(entry, ("video", "QA"), self.name, path, i)
        where = f"dataset {self.name!r}: entry {i} of {path}"
        video, qa = entry["video"], entry["QA"]
        if not isinstance(video, str) or not video.strip():
            raise DatasetError(f"{where}: 'video' must be a non-empty path, got {video!r:.200}")
        if not isinstance(qa, list) or not qa:
            raise DatasetError(f"{where}: 'QA' must be a non-empty list of {{i, q, a}} turns")
        questions, answers = [], []
        for t, turn in enumerate(qa):
            if not isinstance(turn, dict) or not isinstance(turn.get("a"), str) or not turn["a"].strip():
                raise DatasetError(f"{where}: turn {t} needs a non-empty answer 'a', got {turn!r:.200}")
            parts = [turn.get(k) or "" for k in ("i", "q")]
            if not all(isinstance(p, str) for p in parts) or not any(p.strip() for p in parts):
                raise DatasetError(f"{where}: turn {t} needs an instruction 'i' or a question 'q', got {turn!r:.200}")
            questions.append(" ".join(" ".join(p.split()) for p in parts if p.strip()))
            answers.append(turn["a"].strip())
        video = video.strip()
        if self.video_path_mode == "file_name":
            video = os.path.basename(video)
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

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        first = " ".join(p for p in (WHOLE_VIDEO_PLACEHOLDER, self.task_tag or "", record["questions"][0]) if p)
        return {
            "image": self.load_video(record["video_id"], sample_id),
            "instruction_input": [first] + list(record["questions"][1:]),
            "answer": list(record["answers"]),
            "sample_id": sample_id,
            "task": self.task,
            "video_id": record["video_id"],
        }
