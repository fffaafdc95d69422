"""Referring expression comprehension: RefCOCO, RefCOCO+, RefCOCOg and the quickstart's synthetic RefCOCO.

Reads the refer release (``refs(unc).p`` / ``refs(umd).p`` with COCO ``instances.json``), one record
per referring sentence, or MiniGPT-v2's preprocessed ``<name>_<split>.json`` when that is what the
folder holds. The prompt is MiniGPT-v2's ``[refer] give me the location of {}`` (its
``RefCOCOEvalData``); a prediction scores when the first ``{<x1><y1><x2><y2>}`` box in it has
IoU >= 0.5 with the ground-truth box (Acc@0.5).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from minigpt.common import grounding
from minigpt.datasets.datasets.io import DatasetError, load_pickle
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
    mean,
)

REFER_PROMPT = "[refer] give me the location of {}"


def _load_refs(path: str) -> List[Dict[str, Any]]:
    # the one restricted pickle reader of the library (plain data only; Python 2 refs decode as latin1)
    try:
        return load_pickle(path, "refer")
    except DatasetError as exc:
        raise BenchmarkDataError(str(exc)) from exc


def read_refer(paths: Paths, split: str) -> List[EvalRecord]:
    """Every sentence of every ref in ``split``; the box is the ref's COCO annotation (xywh -> xyxy).

    Without the refs pickle, MiniGPT-v2's ``<folder name>_<split>.json`` next to where it would be is read.
    """
    refs_path, inst_path = paths["refs"], paths["instances"]
    ann_dir = os.path.dirname(refs_path)
    if not os.path.isfile(refs_path):
        name = os.path.basename(os.path.normpath(ann_dir))
        json_path = os.path.join(ann_dir, f"{name}_{split}.json")
        if os.path.isfile(json_path):
            return _read_minigptv2_json(json_path, paths["images"])
        raise BenchmarkDataError(f"refer annotations not found: neither {refs_path} nor {json_path} exists")
    instances = load_json(inst_path, "refer instances")
    images = {im["id"]: im for im in field_of(instances, "images", inst_path, "(top level)")}
    anns = {a["id"]: a for a in field_of(instances, "annotations", inst_path, "(top level)")}
    refs = _load_refs(refs_path)
    present = sorted({str(r.get("split")) for r in refs})
    records = []
    for i, ref in enumerate(refs):
        if ref.get("split") != split:
            continue
        ann_id = field_of(ref, "ann_id", refs_path, i)
        if ann_id not in anns:
            raise BenchmarkDataError(f"{refs_path}: ref {ref.get('ref_id')} names ann_id {ann_id}, absent from {inst_path}")
        ann = anns[ann_id]
        im = images.get(ann["image_id"])
        if im is None:
            raise BenchmarkDataError(f"{inst_path}: annotation {ann_id} names image {ann['image_id']}, absent from images")
        x, y, w, h = ann["bbox"]
        image = find_image(paths["images"], [im["file_name"]], f"ref {ref.get('ref_id')}")
        for s, sent in enumerate(field_of(ref, "sentences", refs_path, i)):
            text = sent.get("sent") or sent.get("raw")
            records.append(
                EvalRecord(
                    id=f"{ref.get('ref_id', i)}_{sent.get('sent_id', s)}",
                    image=image,
                    prompt=REFER_PROMPT.format(text),
                    target={"box": [x, y, x + w, y + h], "width": im["width"], "height": im["height"]},
                )
            )
    if not records:
        raise BenchmarkDataError(f"{refs_path}: no refs in split {split!r}; the file has splits {', '.join(present)}")
    return check_unique_ids(records, refs_path)


def _read_minigptv2_json(path: str, image_root: str) -> List[EvalRecord]:
    """MiniGPT-v2's ``[{img_id, sents, bbox: [x, y, w, h], height, width}]``; the image is ``img_id[:27].jpg``."""
    data = load_json(path, "refcoco eval json")
    records = []
    for i, e in enumerate(data):
        img_id = str(field_of(e, "img_id", path, i))
        x, y, w, h = field_of(e, "bbox", path, i)
        records.append(
            EvalRecord(
                id=img_id,
                image=find_image(image_root, [f"{img_id[:27]}.jpg"], f"{path} entry {i}"),
                prompt=REFER_PROMPT.format(field_of(e, "sents", path, i)),
                target={"box": [x, y, x + w, y + h], "width": e["width"], "height": e["height"]},
            )
        )
    return check_unique_ids(records, path)


def score_refer(record: EvalRecord, prediction: str) -> Dict[str, Any]:
    t = record.target
    text = clean_answer(prediction)
    box = grounding.parse_box(text)
    iou = grounding.iou(grounding.grid_to_pixels(box, t["width"], t["height"]), t["box"]) if box else 0.0
    return {"score": M.refcoco_hit(text, t["box"], t["width"], t["height"]), "iou": iou, "parsed": box is not None}


def aggregate_refer(records: List[EvalRecord], rows: List[Dict[str, Any]]) -> Dict[str, float]:
    return {
        "acc@0.5": mean(r["score"] for r in rows),
        "mean_iou": mean(r["iou"] for r in rows),
        "box_parsed": mean(float(r["parsed"]) for r in rows),
    }


def _refer(name: str, folder: str, refs_file: str, splits: List[str], images: str, description: str) -> Benchmark:
    return Benchmark(
        name, "ref", splits, "val",
        {
            "refs": f"{folder}/{refs_file}",
            "instances": f"{folder}/instances.json",
            "images": images,
        },
        REFER_PROMPT, read_refer, score_refer, aggregate_refer, description,
    )


BENCHMARKS = [
    _refer("refcoco", "refcoco/refcoco", "refs(unc).p", ["val", "testA", "testB"], "coco/images/train2014",
           "RefCOCO (UNC splits), Acc@0.5"),
    _refer("refcoco+", "refcoco/refcoco+", "refs(unc).p", ["val", "testA", "testB"], "coco/images/train2014",
           "RefCOCO+ (UNC splits), Acc@0.5"),
    _refer("refcocog", "refcoco/refcocog", "refs(umd).p", ["val", "test"], "coco/images/train2014",
           "RefCOCOg (UMD splits), Acc@0.5"),
    # The generator files held-out refs under RefCOCO's "val" (it has no split named "test").
    _refer("synthetic_refcoco", "synthetic/refcoco", "refs(unc).p", ["val"], "synthetic/images",
           "the quickstart's held-out synthetic shapes, Acc@0.5"),
]
