"""VQA reader for LAVIS's VQA JSON (VQAv2 / OK-VQA style)."""

from __future__ import annotations

from typing import Any, Dict, Sequence

from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    load_json_list,
    most_frequent,
    pick,
    require_keys,
)
from minigpt.datasets.datasets.io import DatasetError


class VQADataset(BaseDataset):
    """Questions about images from a list of ``{"question_id", "question", "answer": [...], "image"}``.

    Instruction: ``"<Img><ImageHere></Img> [vqa] {question}"`` (the question through the text
    processor; with a prompt file, a template drawn per sample with ``{}`` for the question);
    answer: the most frequent of the annotators' answers (ties: the first). Every
    sample also carries ``"answers"`` (all of them, for VQA accuracy), ``"question_id"`` and,
    when the annotation has it, ``"question_type"``.
    """

    task = "vqa"

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        for path in ann_paths:
            for i, entry in enumerate(load_json_list(path, name)):
                require_keys(entry, ("question_id", "question", "answer", "image"), name, path, i)
                answers = entry["answer"]
                answers = [answers] if isinstance(answers, str) else list(answers)
                if not answers or not all(isinstance(a, str) for a in answers):
                    raise DatasetError(
                        f"dataset {name!r}: entry {i} (question_id {entry['question_id']}) of {path} "
                        f"needs a non-empty list of answer strings, got {entry['answer']!r}"
                    )
                record = {
                    "image": entry["image"],
                    "question": entry["question"],
                    "answers": answers,
                    "question_id": entry["question_id"],
                }
                if "question_type" in entry:
                    record["question_type"] = entry["question_type"]
                self.records.append(record)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["question_id"])
        question = self.text(record["question"])
        if self.prompts:
            question = pick(self.prompts, index).format(question)
        sample = {
            "image": self.load_image(record["image"], sample_id),
            "instruction_input": self.instruction(question),
            "answer": most_frequent(record["answers"]),
            "sample_id": sample_id,
            "task": self.task,
            "answers": list(record["answers"]),
            "question_id": record["question_id"],
        }
        if "question_type" in record:
            sample["question_type"] = record["question_type"]
        return sample
