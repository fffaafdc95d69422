"""LLaVA instruction-tuning conversations (``llava_instruct_150k.json`` and the like)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

from minigpt.datasets.datasets.base_dataset import (
    IMAGE_PLACEHOLDER,
    BaseDataset,
    load_json_list,
    require_keys,
)
from minigpt.datasets.datasets.io import DatasetError

# LLaVA marks the image position with "<image>" at the start or end of the first human turn.
_LLAVA_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


class LlavaConversationDataset(BaseDataset):
    """Multi-turn conversations: ``[{"id", "image", "conversations": [{"from", "value"}, ...]}]``.

    Each human turn becomes one entry of ``"instruction_input"`` (a list) and each following gpt
    turn the matching entry of ``"answer"``. LLaVA's ``<image>`` marker is removed; the first
    turn instead starts with ``"<Img><ImageHere></Img> "`` and the builder's task tag, if any.
    An entry without ``"image"`` is a text-only sample (``"image": None``, no placeholder).
    Turn text is kept as written (newlines and lists matter in answers): no text processor.
    """

    task = "conversation"

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        for path in ann_paths:
            for i, entry in enumerate(load_json_list(path, name)):
                require_keys(entry, ("id", "conversations"), name, path, i)
                self.records.append(self._parse(entry, path, i))

    def _parse(self, entry: Dict[str, Any], path: str, index: int) -> Dict[str, Any]:
        turns = entry["conversations"]
        where = f"dataset {self.name!r}: entry {index} (id {entry['id']!r}) of {path}"
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            raise DatasetError(f"{where}: 'conversations' must be a non-empty list of human/gpt pairs")
        questions: List[str] = []
        answers: List[str] = []
        for t, turn in enumerate(turns):
            expected = "human" if t % 2 == 0 else "gpt"
            if (
                not isinstance(turn, dict)
                or turn.get("from") != expected
                or not isinstance(turn.get("value"), str)
            ):
                raise DatasetError(
                    f"{where}: turn {t} must be {{'from': {expected!r}, 'value': str}}, got {turn!r:.200}"
                )
            value = turn["value"]
            if expected == "human":
                questions.append(_LLAVA_IMAGE_TOKEN.sub(" ", value).strip())
            else:
                answers.append(value.strip())
        return {"key": entry["id"], "image": entry.get("image"), "questions": questions, "answers": answers}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        has_image = record["image"] is not None and self.read_images
        first = " ".join(
            p
            for p in (IMAGE_PLACEHOLDER if has_image else "", self.task_tag or "", record["questions"][0])
            if p
        )
        return {
            "image": self.load_image(record["image"], sample_id) if has_image else None,
            "instruction_input": [first] + list(record["questions"][1:]),
            "answer": list(record["answers"]),
            "sample_id": sample_id,
            "task": self.task,
        }
