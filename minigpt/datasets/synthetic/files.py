"""Where the synthetic generator puts its files, how it numbers rows, and how it writes a file.

Shared by :mod:`~minigpt.datasets.synthetic.writers` (the generator's own formats) and
:mod:`~minigpt.datasets.synthetic.real_layout` (the real builders' layout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

VQA_ANSWER_REPEATS = 10  # VQAv2 stores ten human answers per question; LAVIS readers expect the list
# Ids are derived from the image index instead of counted, so every chunk can build its rows on
# its own, in a worker, and the files still come out the same for any number of workers.
ANN_IDS_PER_IMAGE = 4  # > MAX_SHAPES: ann_id = image_id * 4 + object position
QUESTION_IDS_PER_IMAGE = 10  # question_id = image index * 10 + position of the type in QUESTION_TYPES

FILES: Dict[str, str] = {
    "images_train": "images/train",
    "images_test": "images/test",
    "scenes_train": "scenes_train.jsonl",
    "scenes_test": "scenes_test.jsonl",
    "cc_sbu_align": "cc_sbu_align/filter_cap.json",
    "coco_caption_train": "coco_caption/coco_karpathy_train.json",
    "coco_caption_test": "coco_caption/coco_karpathy_test.json",
    "vqa_train": "vqa/vqa_train.json",
    "vqa_test": "vqa/vqa_test.json",
    "refcoco_refs": "refcoco/refs(unc).p",
    "refcoco_instances": "refcoco/instances.json",
    "llava_train": "llava/conversation_train.json",
    "llava_test": "llava/conversation_test.json",
}


def shard_name(split: str, shard: int) -> str:
    return f"cc_sbu/{split}-{shard:05d}.tar"


# -- atomic file writes --------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes, mkdir: bool = True) -> None:
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any, indent: Optional[int] = None) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))
