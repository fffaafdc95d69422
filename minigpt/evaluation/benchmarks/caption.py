"""COCO captioning on the Karpathy test split (5,000 images), scored with CIDEr and BLEU-1..4.

Reads LAVIS's ``coco_karpathy_test.json`` (``[{image, caption: [refs...], image_id?}]``) or
Karpathy's own ``dataset_coco.json`` (``{"images": [{filepath, filename, split, cocoid,
sentences}]}``, its ``test`` entries). One record per image. The prompt is MiniGPT-v2's
``[caption] please describe this image?`` (its ``EvalCaptionData``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

from minigpt.evaluation import metrics as M
from minigpt.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    EvalRecord,
    Paths,
    check_unique_ids,
    clean_answer,
    field_of,
    find_image,
    load_json,
)

CAPTION_PROMPT = "[caption] please describe this image?"


def _image_id(entry: Dict[str, Any], image: str) -> str:
    for key in ("image_id", "cocoid", "id"):
        if key in entry:
            return str(entry[key])
    digits = re.findall(r"\d+", os.path.basename(image))  # COCO_val2014_000000391895.jpg -> 391895
    return str(int(digits[-1])) if digits else os.path.splitext(os.path.basename(image))[0]


def read_karpathy(paths: Paths, split: str) -> List[EvalRecord]:
    path = paths["annotations"]
    data = load_json(path, "caption annotations")
    entries = []
    if isinstance(data, dict):  # Karpathy's dataset_coco.json
        for i, im in enumerate(field_of(data, "images", path, "(top level)")):
            if im.get("split") != split:
                continue
            image = os.path.join(im.get("filepath", ""), field_of(im, "filename", path, i))
            refs = [s.get("raw") or " ".join(s.get("tokens", [])) for s in field_of(im, "sentences", path, i)]
            entries.append((i, im, image, refs))
    elif isinstance(data, list):  # LAVIS
        for i, e in enumerate(data):
            refs = field_of(e, "caption", path, i)
            entries.append((i, e, field_of(e, "image", path, i), [refs] if isinstance(refs, str) else list(refs)))
    else:
        raise BenchmarkDataError(f"{path}: caption annotations must be a JSON list or object, got {type(data).__name__}")
    records = []
    for i, e, image, refs in entries:
        if not refs:
            raise BenchmarkDataError(f"{path}: entry {i} ({image}) has no reference caption")
        records.append(
            EvalRecord(
                id=_image_id(e, image),
                image=find_image(paths["images"], [image], f"{path} entry {i}"),
                prompt=CAPTION_PROMPT,
                target={"references": refs},
            )
        )
    if not records:
        raise BenchmarkDataError(f"{path}: no images in split {split!r}")
    return check_unique_ids(records, path)


def score_caption(record: EvalRecord, prediction: str) -> Dict[str, Any]:
    # CIDEr is a corpus statistic: the per-sample score is only whether a reference was matched exactly.
    pred = " ".join(M.caption_tokens(clean_answer(prediction)))
    refs = {" ".join(M.caption_tokens(r)) for r in record.target["references"]}
    return {"score": float(pred in refs)}


def aggregate_caption(records: List[EvalRecord], rows: List[Dict[str, Any]]) -> Dict[str, float]:
    preds = {rec.id: clean_answer(row["prediction"]) for rec, row in zip(records, rows)}
    refs = {rec.id: list(rec.target["references"]) for rec in records}
    scores = dict(M.caption_scores(preds, refs))
    scores["exact_match"] = sum(r["score"] for r in rows) / len(rows) if rows else 0.0
    return scores


BENCHMARKS = [
    Benchmark(
        "coco_caption", "caption", ["test", "val"], "test",
        {"annotations": "coco/annotations/coco_karpathy_test.json", "images": "coco/images"},
        CAPTION_PROMPT, read_karpathy, score_caption, aggregate_caption,
        "COCO Karpathy test, CIDEr and BLEU-1..4",
    ),
    Benchmark(
        "synthetic_coco_caption", "caption", ["test"], "test",
        {"annotations": "synthetic/coco_caption/coco_karpathy_test.json", "images": "synthetic/images"},
        CAPTION_PROMPT, read_karpathy, score_caption, aggregate_caption,
        "the quickstart's held-out synthetic shapes, CIDEr and BLEU-1..4",
    ),
]
