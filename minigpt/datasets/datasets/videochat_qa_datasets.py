"""VideoChat-Instruct's released layout: ``[{"video": <file>, "QA": [{"i", "q", "a"}, ...]}, ...]``.

Each question/answer pair is one sample over its entry's video (``video`` relative to the videos
folder). ``i`` (an instruction, often empty) goes in front of ``q``. A QA entry may also carry
``question_type``, which evaluation reports accuracy by (the synthetic set writes ``motion`` and
``colour``). The video goes through the dataset's video processor, or, with ``features_dir``, is its
stored embedding (:mod:`minigpt.common.feature_store`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import BaseDataset, Processor, require_keys


class VideoChatQADataset(BaseDataset):
    """VideoChat-Instruct-style conversations about videos, one sample per QA pair; task ``vqa``.

    Beside :class:`~minigpt.datasets.datasets.videochat_datasets.VideoChatInstructDataset` (one sample
    per conversation, for training): this reader asks each question alone and keeps its
    ``question_type``, for evaluation by kind and for stored features (the video quickstart)."""

    task = "vqa"

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        videos_root: Optional[str],
        task_tag: Optional[str] = None,
        read_images: bool = True,
    ) -> None:
        super().__init__(name, vis_processor, text_processor, videos_root, task_tag, None, read_images)
        self.add_json_lists(ann_paths)

    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        require_keys(entry, ("video", "QA"), self.name, path, i)
        if not isinstance(entry["video"], str) or not entry["video"].strip() or not isinstance(entry["QA"], list):
            raise DatasetError(
                f"dataset {self.name!r}: entry {i} of {path}: 'video' must be a file name and 'QA' a list, "
                f"got {entry!r:.200}"
            )
        records = []
        for j, qa in enumerate(entry["QA"]):
            require_keys(qa, ("q", "a"), self.name, path, i)
            question = " ".join(f"{qa.get('i') or ''} {qa['q']}".split())
            if not question or not isinstance(qa["a"], str) or not qa["a"].strip():
                raise DatasetError(f"dataset {self.name!r}: entry {i} of {path}: QA {j} needs a question and an answer")
            record = {"key": f"{len(self.records) + len(records)}:{entry['video']}", "video": entry["video"].strip(),
                      "question": question, "answer": qa["a"].strip()}
            if qa.get("question_type") is not None:
                record["question_type"] = str(qa["question_type"])
            records.append(record)
        return records

    def load_video(self, rel_path: str, sample_id: str):
        """The processed clip ``[T, 3, H, W]`` of ``rel_path`` (or its stored features; None when media are not read)."""
        if not self.read_images:
            return None
        # refused when it leaves the videos folder
        return self.read_video(self.image_path(rel_path, sample_id), sample_id)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        sample = {
            "image": self.load_video(record["video"], sample_id),
            "instruction_input": self.instruction(record["question"]),
            "answer": record["answer"],
            "answers": [record["answer"]],
            "sample_id": sample_id,
            "task": self.task,
            "video": record["video"],
        }
        if "question_type" in record:
            sample["question_type"] = record["question_type"]
        return sample
