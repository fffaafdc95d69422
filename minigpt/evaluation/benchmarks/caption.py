"""COCO captioning on the Karpathy test split (5,000 images), scored with CIDEr and BLEU-1..4.

Reads LAVIS's ``coco_karpathy_test.json`` (``[{image, caption: [refs...], image_id?}]``) or
Karpathy's own ``dataset_coco.json`` (``{"images": [{filepath, filename, split, cocoid,
sentences}]}``, its ``test`` entries). One record per image; LAVIS's list is read by the training
reader (``COCOCaptionDataset`` in eval mode). The prompt is MiniGPT-v2's
``[caption] please describe this image?`` (its ``EvalCaptionData``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

from minigpt.datasets.datasets.caption_datasets import COCOCaptionDataset
from minigpt.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    EvalRecord,
    Paths,
    check_unique_ids,
    field_of,
    find_image,
    load_json,
    read_dataset,
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
            if not refs:
                raise BenchmarkDataError(f"{path}: entry {i} ({image}) has no reference caption")
            entries.append((i, _image_id(im, image), image, refs))
    elif isinstance(data, list):  # LAVIS, read by the training reader
        ds = read_dataset(
            lambda: COCOCaptionDataset("caption", [path], None, None, paths["images"], eval_mode=True),
            "caption annotations",
        )
        for i, r in enumerate(ds.records):
            known = {"image_id": r["image_id"]} if r["image_id"] != r["image"] else {}  # the reader's stand-in
            entries.append((i, _image_id(known, r["image"]), r["image"], list(r["captions"])))
    else:
        raise BenchmarkDataError(f"{path}: caption annotations must be a JSON list or object, got {type(data).__name__}")
    records = [
        EvalRecord(
            id=image_id,
            image=find_image(paths["images"], [image], f"{path} entry {i}"),
            prompt=CAPTION_PROMPT,
            target={"references": refs},
        )
        for i, image_id, image, refs in entries
    ]
    if not records:
        raise BenchmarkDataError(f"{path}: no images in split {split!r}")
    return check_unique_ids(records, path)


BENCHMARKS = [  # name, family, splits, default split, paths under the data root, prompt, reader, what it scores
    Benchmark("coco_caption", "caption", ["test", "val"], "test", {"annotations": "coco/annotations/coco_karpathy_test.json", "images": "coco/images"}, CAPTION_PROMPT, read_karpathy, "COCO Karpathy test, CIDEr and BLEU-1..4"),
    Benchmark("synthetic_coco_caption", "caption", ["test"], "test", {"annotations": "synthetic/coco_caption/coco_karpathy_test.json", "images": "synthetic/images"}, CAPTION_PROMPT, read_karpathy, "the quickstart's held-out synthetic shapes, CIDEr and BLEU-1..4"),
]
