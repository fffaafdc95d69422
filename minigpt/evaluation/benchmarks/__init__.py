"""Benchmark readers and the runner behind ``eval_scripts/eval_{vqa,ref,caption,scienceqa,pope}.py``.

``BENCHMARKS`` maps each name the scripts accept (``--dataset okvqa,gqa``) to its
:class:`~minigpt.evaluation.benchmarks.base.Benchmark`: files under the data root, splits, reader,
prompt, scoring. ``eval_scripts/EVAL_README.md`` documents the data layout and the metrics.
"""

from __future__ import annotations

from typing import Dict, List

from minigpt.evaluation.benchmarks import caption, pope, refcoco, scienceqa, vqa
from minigpt.evaluation.benchmarks.base import Benchmark, BenchmarkDataError, EvalRecord
from minigpt.evaluation.benchmarks.runner import EvalSettings, SplitResult, format_table, run_split

BENCHMARKS: Dict[str, Benchmark] = {
    b.name: b for module in (vqa, refcoco, caption, scienceqa, pope) for b in module.BENCHMARKS
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; an unknown name is an error listing the close ones."""
    if name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(name, list(BENCHMARKS), n=3)
        hint = f" — did you mean {', '.join(close)}?" if close else ""
        raise BenchmarkDataError(f"unknown benchmark {name!r}{hint} (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def benchmarks_of(family: str) -> List[str]:
    """The benchmark names one eval script runs (``vqa``, ``ref``, ``caption``, ``scienceqa``, ``pope``)."""
    return [n for n, b in BENCHMARKS.items() if b.family == family]


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkDataError",
    "EvalRecord",
    "EvalSettings",
    "SplitResult",
    "benchmarks_of",
    "format_table",
    "get_benchmark",
    "run_split",
]
