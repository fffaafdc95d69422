"""ScienceQA, as LaVIN evaluates it: every problem of the split, image and text-only.

Reads the release (``problems.json``, ``pid_splits.json``, ``images/<split>/<pid>/image.png``) through
the training reader (:class:`~minigpt.datasets.datasets.scienceqa_datasets.ScienceQADataset`), so
the prompt is the one LaVIN trains and evaluates with (``QCM``: question, context = the hint or
``N/A``, options ``(A) ... (B) ...``, ``Response:``); the model answers ``The answer is X.``, which
``scienceqa_accuracy`` reads. Problems without an image are asked without one. The scores are the
official table (NAT/SOC/LAN, TXT/IMG/NO, G1-6/G7-12, average; ``aggregate_scienceqa``).
``scienceqa_img`` keeps only the problems with an image (the IMG column alone).
"""

from __future__ import annotations

from typing import List

from minigpt.datasets.datasets.scienceqa_datasets import SCIENCEQA_PROMPT, ScienceQADataset
from minigpt.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    EvalRecord,
    Paths,
    find_image,
    read_dataset,
)


def _reader(image_only: bool):
    def read(paths: Paths, split: str) -> List[EvalRecord]:
        ppath = paths["problems"]
        ds = read_dataset(
            lambda: ScienceQADataset(
                "scienceqa", ppath, paths["pid_splits"], split, None, None, paths["images"],
                image_only=image_only, read_images=False,
            ),
            f"scienceqa split {split!r}",
        )
        records = []
        for rec in ds.records:
            pid, image = rec["key"], rec["image"]
            truth = rec["truth"]
            records.append(
                EvalRecord(
                    id=pid,
                    image=None if image is None else find_image(paths["images"], [image], f"scienceqa {pid}"),
                    prompt=rec["prompt"],
                    target={"answer": truth["answer"], "choices": truth["choices"]},
                    meta={k: v for k, v in truth.items() if k not in ("answer", "choices")},
                )
            )
        if not records:
            which = "with an image" if image_only else "at all"
            raise BenchmarkDataError(f"{ppath}: split {split!r} has no problem {which}")
        return records

    return read


_PATHS = {"problems": "scienceqa/problems.json", "pid_splits": "scienceqa/pid_splits.json", "images": "scienceqa/images"}
_SPLITS = ["test", "val", "minival", "train"]

BENCHMARKS = [
    Benchmark(
        "scienceqa", "scienceqa", _SPLITS, "test", dict(_PATHS), SCIENCEQA_PROMPT, _reader(image_only=False),
        "ScienceQA, every question (image and text-only), accuracy with the official breakdown",
    ),
    Benchmark(
        "scienceqa_img", "scienceqa", _SPLITS, "test", dict(_PATHS), SCIENCEQA_PROMPT, _reader(image_only=True),
        "ScienceQA questions with an image (IMG), accuracy",
    ),
]


