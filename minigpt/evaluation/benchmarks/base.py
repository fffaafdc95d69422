"""What every benchmark reader shares: the record, the benchmark description, file and image helpers.

A benchmark is described once (:class:`Benchmark`): where its files sit under the data root, the
splits it has, how its annotation files are read into :class:`EvalRecord` s, the prompt the
original model was evaluated with, and how one prediction is scored and the scores summed up.
The runner (:mod:`minigpt.evaluation.benchmarks.runner`) does the rest the same way for all.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

Paths = Mapping[str, str]


class BenchmarkDataError(ValueError):
    """An annotation file or image of a benchmark is missing or not in the expected format."""


@dataclass
class EvalRecord:
    """One evaluation question: an id unique in its benchmark split, the image, the prompt, the truth.

    ``prompt`` is the instruction as the model reads it, task tag included, without the image slot
    (``Chat.answer_batch`` puts ``<Img><ImageHere></Img>`` in front). ``target`` holds what scoring
    needs (answers, label, box and image size, choices, reference captions), JSON-serialisable so
    it can be written next to the prediction; ``meta`` holds grouping keys (question type, subject).
    """

    id: str
    image: Optional[str]
    prompt: str
    target: Dict[str, Any]
    meta: Dict[str, Any] = field(default_factory=dict)


Reader = Callable[[Paths, str], List[EvalRecord]]
Scorer = Callable[[EvalRecord, str], Dict[str, Any]]
Aggregator = Callable[[List[EvalRecord], List[Dict[str, Any]]], Dict[str, float]]


@dataclass
class Benchmark:
    """A benchmark the eval scripts know: files, splits, reader, prompt, scoring. Not registered.

    ``paths`` maps a key (``annotations``, ``images``, ...) to a path relative to the data root;
    ``--path NAME.KEY=PATH`` overrides one. ``prompt`` is a ``str.format`` template with one
    ``{}`` slot (or none) and is recorded with the metrics. ``score(record, prediction)`` returns
    at least ``{"score": float}`` for one sample; ``aggregate(records, rows)`` turns the rows (in
    record order) into the metrics table, fractions in [0, 1] unless the metric says otherwise.
    """

    name: str
    family: str  # vqa | ref | caption | scienceqa: which eval script runs it
    splits: Sequence[str]
    default_split: str
    paths: Dict[str, str]
    prompt: str
    read: Reader
    score: Scorer
    aggregate: Aggregator
    description: str = ""

    def resolve_paths(self, data_root: str, overrides: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """This benchmark's paths, each joined to ``data_root`` unless absolute; ``overrides`` win."""
        out = {}
        for key, rel in {**self.paths, **dict(overrides or {})}.items():
            rel = os.path.expanduser(str(rel))
            out[key] = rel if os.path.isabs(rel) else os.path.join(data_root, rel)
        return out


# -- files ---------------------------------------------------------------------------------------
def load_json(path: str, what: str) -> Any:
    """A JSON file; a missing file or bad JSON is a :class:`BenchmarkDataError` naming ``what`` and the path."""
    if not os.path.isfile(path):
        raise BenchmarkDataError(f"{what}: file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:
        raise BenchmarkDataError(f"{what}: {path} is not valid JSON ({exc})") from exc


def load_jsonl(path: str, what: str) -> List[Any]:
    """A JSON-lines file (blank lines skipped); errors name the file and line."""
    if not os.path.isfile(path):
        raise BenchmarkDataError(f"{what}: file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise BenchmarkDataError(f"{what}: {path}:{lineno} is not valid JSON ({exc})") from exc
    return rows


def load_json_or_jsonl(path: str, what: str) -> List[Any]:
    """A ``.jsonl`` file's rows or a ``.json`` file's list."""
    if path.endswith(".jsonl"):
        return load_jsonl(path, what)
    data = load_json(path, what)
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{what}: {path} must hold a JSON list, got {type(data).__name__}")
    return data


def field_of(entry: Any, key: str, path: str, index: Any) -> Any:
    """``entry[key]``, or an error naming the file, the entry and the missing key."""
    if not isinstance(entry, Mapping) or key not in entry:
        keys = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
        raise BenchmarkDataError(f"{path}: entry {index} has no {key!r} (it has {keys})")
    return entry[key]


def find_image(root: str, candidates: Iterable[str], what: str) -> str:
    """The first of ``root/candidate`` that exists; the error lists every path tried."""
    tried = []
    for rel in candidates:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            return path
        tried.append(path)
    raise BenchmarkDataError(f"{what}: image not found; tried {', '.join(tried)}")


def check_unique_ids(records: Sequence[EvalRecord], what: str) -> List[EvalRecord]:
    seen: Dict[str, int] = {}
    for i, r in enumerate(records):
        if r.id in seen:
            raise BenchmarkDataError(f"{what}: record id {r.id!r} appears twice (entries {seen[r.id]} and {i})")
        seen[r.id] = i
    return list(records)


# -- answers -------------------------------------------------------------------------------------
def clean_answer(text: str) -> str:
    """What MiniGPT-v2's eval scripts do to every generated answer before scoring: drop ``<unk>``, strip."""
    return text.replace("<unk>", "").strip()


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def grouped_means(rows: Sequence[Mapping[str, Any]], records: Sequence[EvalRecord], key: str, prefix: str) -> Dict[str, float]:
    """``{prefix_<group>: mean score}`` over the records' ``meta[key]`` groups (sorted by group)."""
    groups: Dict[str, List[float]] = {}
    for rec, row in zip(records, rows):
        g = rec.meta.get(key)
        if g is not None:
            groups.setdefault(str(g), []).append(float(row["score"]))
    return {f"{prefix}_{_slug(g)}": mean(v) for g, v in sorted(groups.items())}


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
