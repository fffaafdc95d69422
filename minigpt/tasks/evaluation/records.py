"""What one evaluated sample is (:class:`EvalRecord`), the data error, and the small helpers scorers share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence


class BenchmarkDataError(ValueError):
    """An annotation file, image or predictions file of an evaluation is missing or not in the expected format."""


@dataclass
class EvalRecord:
    """One evaluation question: an id unique in its split, the image, the prompt, the truth.

    ``prompt`` is the instruction as the model reads it (for a benchmark: task tag included, without
    the image slot, which ``Chat.answer_batch`` puts in front). ``image`` is a path (benchmarks) or
    None (a dataset sample's image travels beside the record). ``target`` holds what scoring needs
    (answers, label, box and image size, choices, reference captions), JSON-serialisable so it can
    be written next to the prediction; ``meta`` holds grouping keys (question type, subject).
    """

    id: str
    image: Optional[str]
    prompt: str
    target: Dict[str, Any]
    meta: Dict[str, Any] = field(default_factory=dict)


def clean_answer(text: str) -> str:
    """What MiniGPT-v2's eval scripts do to every generated answer before scoring: drop ``<unk>``, strip."""
    return text.replace("<unk>", "").strip()


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def grouped_means(
    rows: Sequence[Mapping[str, Any]], records: Sequence[EvalRecord], key: str, prefix: str
) -> Dict[str, float]:
    """``{prefix_<group>: mean score}`` over the records' ``meta[key]`` groups (sorted by group)."""
    groups: Dict[str, List[float]] = {}
    for rec, row in zip(records, rows):
        g = rec.meta.get(key)
        if g is not None:
            groups.setdefault(str(g), []).append(float(row["score"]))
    return {f"{prefix}_{_slug(g)}": mean(v) for g, v in sorted(groups.items())}


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
