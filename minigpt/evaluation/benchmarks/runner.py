"""Run one benchmark split through the one evaluation loop (:mod:`minigpt.tasks.evaluation.loop`).

The loop (batched generation, torchrun sharding, resumable predictions, gather, scoring) is the one
in-training evaluation uses; here a benchmark's records, the model's answer function and the
benchmark's scorer are handed to it. Files under ``output_dir`` for benchmark ``B`` and split ``S``:
``predictions/B_S.rank<r>-of-<w>.jsonl`` and ``predictions/B_S.meta.json`` (the resumable predictions
and the settings they were made with), ``B_S_predictions.jsonl`` (merged, in annotation order, with
ground truth and score) and ``B_S_metrics.json``.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch

from minigpt.evaluation.benchmarks.base import Benchmark, EvalRecord
from minigpt.tasks.evaluation.loop import (
    EvalSettings,
    PredictionWriter,
    SplitResult,
    evaluate_split,
    part_files,
    read_predictions,
)
from minigpt.tasks.evaluation.sources import RecordSource
from minigpt.tasks.evaluation.table import format_table

AnswerFn = Callable[[List[Optional[torch.Tensor]], List[str]], List[str]]
ImageLoader = Callable[[str], torch.Tensor]

__all__ = [
    "AnswerFn", "EvalSettings", "ImageLoader", "PredictionWriter", "SplitResult", "format_table", "part_files",
    "read_predictions", "run_split",
]


def run_split(
    benchmark: Benchmark,
    split: str,
    records: List[EvalRecord],
    answer: AnswerFn,
    load_image: ImageLoader,
    settings: EvalSettings,
) -> SplitResult:
    """Predict what is missing for ``records`` on this rank's shard, then (rank 0) merge and score."""

    def predict(recs: List[EvalRecord], images: List[Optional[torch.Tensor]]) -> List[str]:
        return answer(images, [r.prompt for r in recs])

    return evaluate_split(
        benchmark.name,
        split,
        RecordSource(records, load_image),
        predict,
        benchmark.scorer,
        settings,
        identity={"prompt": benchmark.prompt},
        describe={"description": benchmark.description, "prompt": benchmark.prompt},
    )
