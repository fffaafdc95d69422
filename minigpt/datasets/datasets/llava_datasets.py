"""LLaVA-Instruct-150K: ``conversation_58k.json``, ``detail_23k.json``, ``complex_reasoning_77k.json``.

All three files share one format, so one reader serves them; ``detail`` and ``complex reasoning``
hold one question and one answer per image and are read with ``single_turn=True``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import (
    IMAGE_PLACEHOLDER,
    BaseDataset,
    load_json_list,
    require_keys,
)

# LLaVA marks the image position with "<image>" at the start or end of the first human turn.
_LLAVA_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


class LlavaConversationDataset(BaseDataset):
    """Multi-turn conversations: ``[{"id", "image", "conversations": [{"from", "value"}, ...]}]``.

    Each human turn becomes one entry of ``"instruction_input"`` (a list) and each following gpt
    turn the matching entry of ``"answer"``. LLaVA's ``<image>`` marker is removed; the first
    turn instead starts with ``"<Img><ImageHere></Img> "`` and the builder's task tag, if any.
    An entry without ``"image"`` is a text-only sample (``"image": None``, no placeholder).
    Turn text is kept as written (newlines and lists matter in answers): no text processor.

    With ``single_turn=True`` (LLaVA's detail and complex-reasoning files) every entry must hold
    exactly one human/gpt pair, and ``"instruction_input"`` and ``"answer"`` are plain strings
    like every other single-turn task's.
    """

    task = "conversation"

    def __init__(
        self, name: str, ann_paths: Sequence[str], *args: Any, single_turn: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(name, *args, **kwargs)
        self.single_turn = single_turn
        for path in ann_paths:
            # a malformed entry is logged, counted and left out; a file of nothing else is an error
            self.add_records(
                path, load_json_list(path, name), lambda i, entry, path=path: self._parse(entry, path, i)
            )

    def _parse(self, entry: Any, path: str, index: int) -> Dict[str, Any]:
        require_keys(entry, ("id", "conversations"), self.name, path, index)
        turns = entry["conversations"]
        where = f"dataset {self.name!r}: entry {index} (id {entry['id']!r}) of {path}"
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            raise DatasetError(f"{where}: 'conversations' must be a non-empty list of human/gpt pairs")
        if self.single_turn and len(turns) != 2:
            raise DatasetError(
                f"{where}: holds {len(turns) // 2} human/gpt pairs; dataset {self.name!r} reads single-turn "
                "files (one question, one answer) — read multi-turn files with llava_conversation"
            )
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
        instructions = [first] + list(record["questions"][1:])
        answers = list(record["answers"])
        return {
            "image": self.load_image(record["image"], sample_id) if has_image else None,
            "instruction_input": instructions[0] if self.single_turn else instructions,
            "answer": answers[0] if self.single_turn else answers,
            "sample_id": sample_id,
            "task": self.task,
        }
