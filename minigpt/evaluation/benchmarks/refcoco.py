"""Referring expression comprehension: RefCOCO, RefCOCO+, RefCOCOg and the quickstart's synthetic RefCOCO.

Reads the refer release (``refs(unc).p`` / ``refs(umd).p`` with COCO ``instances.json``), one record
per referring sentence, or MiniGPT-v2's preprocessed ``<name>_<split>.json`` when that is what the
folder holds. The prompt is MiniGPT-v2's ``[refer] give me the location of {}`` (its
``RefCOCOEvalData``); a prediction scores when the first ``{<x1><y1><x2><y2>}`` box in it has
IoU >= 0.5 with the ground-truth box (Acc@0.5).
"""

from __future__ import annotations

import os
from typing import List

from minigpt.datasets.datasets.refcoco_datasets import RefCOCODataset
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

REFER_PROMPT = "[refer] give me the location of {}"


def read_refer(paths: Paths, split: str) -> List[EvalRecord]:
    """Every sentence of every ref in ``split``, read by the training reader (:class:`RefCOCODataset`);
    the box is the ref's COCO annotation (xywh -> xyxy).

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
    ds = read_dataset(
        # the expression is put into REFER_PROMPT here, so the reader's own template is the bare slot
        lambda: RefCOCODataset("refer", refs_path, inst_path, [split], None, None, paths["images"], prompts=["{}"]),
        "refer annotations",
    )
    records = []
    for r in ds.records:
        ref_id, sent_id = str(r["key"]).rsplit(":", 1)
        width, height = r["size"]
        records.append(
            EvalRecord(
                id=f"{ref_id}_{sent_id}",
                image=find_image(paths["images"], [r["image"]], f"ref {r['ref_id']}"),
                prompt=REFER_PROMPT.format(r["expression"]),
                target={"box": list(r["box"]), "width": width, "height": height},
            )
        )
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


def _refer(name: str, folder: str, refs_file: str, splits: List[str], images: str, description: str) -> Benchmark:
    return Benchmark(
        name, "ref", splits, "val",
        {
            "refs": f"{folder}/{refs_file}",
            "instances": f"{folder}/instances.json",
            "images": images,
        },
        REFER_PROMPT, read_refer, description,
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
