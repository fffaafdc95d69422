"""POPE: yes/no questions about objects present and absent, the object-hallucination benchmark.

Reads the released question files (``coco_pope_{random,popular,adversarial}.json`` of POPE's
``output/coco/``: one JSON object a line, ``{"question_id", "image", "text", "label"}``, images from
COCO val2014; a file holding one JSON list is read too). Each split is one of POPE's three ways of
choosing the absent objects. Answers are read and scored as POPE's ``evaluate.py`` does
(:mod:`minigpt.tasks.evaluation.pope`): accuracy, precision, recall, F1 and the share of "yes".
``synthetic_pope`` is the same format over the synthetic generator's held-out shapes
(:mod:`minigpt.datasets.synthetic.pope`), so the benchmark runs offline.
"""

from __future__ import annotations

import json
import os
from typing import Any, List

from minigpt.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    EvalRecord,
    Paths,
    check_unique_ids,
    field_of,
    find_image,
)
from minigpt.evaluation.benchmarks.vqa import SHORT_ANSWER_PROMPT, SYNTHETIC_VQA_PROMPT

SPLITS = ["random", "popular", "adversarial"]


def load_pope_file(path: str) -> List[Any]:
    """A POPE question file: JSON lines as released, or one JSON list; errors name the file and line."""
    if not os.path.isfile(path):
        raise BenchmarkDataError(f"pope questions: file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise BenchmarkDataError(f"pope questions: {path} is not valid JSON ({exc})") from exc
        return list(rows)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise BenchmarkDataError(f"pope questions: {path}:{lineno} is not valid JSON ({exc})") from exc
    return rows


def pope_reader(prompt: str):
    """A reader of POPE files that asks each question through ``prompt``."""

    def read(paths: Paths, split: str) -> List[EvalRecord]:
        if split not in SPLITS:
            raise BenchmarkDataError(f"POPE has no split {split!r}; its splits are {', '.join(SPLITS)}")
        path = paths[split]
        records = []
        for i, row in enumerate(load_pope_file(path)):
            label = str(field_of(row, "label", path, i)).strip().lower()
            if label not in ("yes", "no"):
                raise BenchmarkDataError(f"{path}: entry {i} has label {row['label']!r}; POPE labels are yes/no")
            image = str(field_of(row, "image", path, i))
            records.append(
                EvalRecord(
                    id=str(field_of(row, "question_id", path, i)),
                    image=find_image(paths["images"], [image, os.path.basename(image)], f"pope entry {i}"),
                    prompt=prompt.format(field_of(row, "text", path, i)),
                    target={"label": label},
                    meta={"split": split},
                )
            )
        if not records:
            raise BenchmarkDataError(f"{path}: no questions")
        return check_unique_ids(records, path)

    return read


BENCHMARKS = [
    Benchmark(
        "pope", "pope", SPLITS, "random",
        {**{s: f"pope/coco/coco_pope_{s}.json" for s in SPLITS}, "images": "coco/images/val2014"},
        SHORT_ANSWER_PROMPT, pope_reader(SHORT_ANSWER_PROMPT),
        "POPE over COCO val2014 (random / popular / adversarial): accuracy, precision, recall, F1, yes-ratio",
    ),
    Benchmark(
        "synthetic_pope", "pope", SPLITS, "random",
        {**{s: f"synthetic/pope/synthetic_pope_{s}.json" for s in SPLITS}, "images": "synthetic/images"},
        SYNTHETIC_VQA_PROMPT, pope_reader(SYNTHETIC_VQA_PROMPT),
        "POPE's questions over the synthetic held-out shapes: accuracy, precision, recall, F1, yes-ratio",
    ),
]
