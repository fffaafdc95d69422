"""What every benchmark reader shares: the record, the benchmark description, file and image helpers.

A benchmark is described once (:class:`Benchmark`): where its files sit under the data root, the
splits it has, how its annotation files are read into :class:`EvalRecord` s and the prompt the
original model was evaluated with. Where a training dataset reader reads the same format, the
benchmark reads through it (:func:`read_dataset`). Scoring is the benchmark's entry in the scorers
table, and the runner (:mod:`minigpt.evaluation.benchmarks.runner`) hands the records to the one
evaluation loop of :mod:`minigpt.tasks.evaluation`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import parse_json_lines
from minigpt.tasks.evaluation.records import BenchmarkDataError, EvalRecord, clean_answer, grouped_means, mean
from minigpt.tasks.evaluation.scorers import SCORERS, Scorer

__all__ = [
    "Benchmark", "BenchmarkDataError", "EvalRecord", "Paths", "Reader", "check_unique_ids", "clean_answer",
    "field_of", "find_image", "grouped_means", "load_json", "load_json_or_jsonl", "load_jsonl", "mean", "read_dataset",
]

Paths = Mapping[str, str]


Reader = Callable[[Paths, str], List[EvalRecord]]


@dataclass
class Benchmark:
    """A benchmark the eval scripts know: files, splits, reader, prompt. Not registered.

    ``paths`` maps a key (``annotations``, ``images``, ...) to a path relative to the data root;
    ``--path NAME.KEY=PATH`` overrides one. ``prompt`` is a ``str.format`` template with one
    ``{}`` slot (or none) and is recorded with the metrics. How it is scored is its entry in the
    scorers table (:data:`minigpt.tasks.evaluation.scorers.SCORERS`), :attr:`scorer`.
    """

    name: str
    family: str  # vqa | ref | caption | scienceqa: which eval script runs it
    splits: Sequence[str]
    default_split: str
    paths: Dict[str, str]
    prompt: str
    read: Reader
    description: str = ""

    @property
    def scorer(self) -> Scorer:
        """This benchmark's entry in the scorers table."""
        return SCORERS[self.name]

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
    with open(path, encoding="utf-8") as fh:
        return parse_json_lines(
            fh, lambda lineno, exc: BenchmarkDataError(f"{what}: {path}:{lineno} is not valid JSON ({exc})")
        )


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


def read_dataset(build: Callable[[], Any], what: str) -> Any:
    """A training dataset reader built by ``build()``, strict as a benchmark must be.

    A :class:`DatasetError` becomes a :class:`BenchmarkDataError`, and an entry the reader would leave
    out as malformed (training tolerates a few) is an error naming it: a benchmark scores every question.
    """
    try:
        ds = build()
    except DatasetError as exc:
        raise BenchmarkDataError(f"{what}: {exc}") from exc
    bad = getattr(ds, "malformed_records", None)
    if bad:
        raise BenchmarkDataError(f"{what}: {len(bad)} malformed entries, the first: {bad[0]['error']}")
    return ds
