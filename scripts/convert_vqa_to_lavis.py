"""Convert VQA-format question + annotation files (OK-VQA, VQAv2) to LAVIS's VQA JSON list.

The ``okvqa`` and ``coco_vqa`` builders read LAVIS's list
``[{"question_id", "question", "answer": [...], "image", "question_type", "dataset"}]``. Only
needed when you have the official release instead of LAVIS's copy: OK-VQA's
``OpenEnded_mscoco_train2014_questions.json`` + ``mscoco_train2014_annotations.json`` (or
VQAv2's ``v2_OpenEnded_mscoco_*_questions.json`` + ``v2_mscoco_*_annotations.json``). Images are
named the COCO way from the files' ``data_subtype``:
``{data_subtype}/COCO_{data_subtype}_{image_id:012d}.jpg`` (e.g. ``train2014/COCO_train2014_…``),
relative to the builder's image root (``coco/images`` by default).

    python scripts/convert_vqa_to_lavis.py \\
        --questions OpenEnded_mscoco_train2014_questions.json \\
        --annotations mscoco_train2014_annotations.json \\
        --out okvqa/okvqa_train.json --dataset okvqa
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional


class ConversionError(ValueError):
    """An input file that is not in the VQA format; the message names the file and the record."""


def _load(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConversionError(f"file not found: {path}") from None
    except ValueError as exc:
        raise ConversionError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _records(data: Dict[str, Any], key: str, path: str) -> List[Dict[str, Any]]:
    records = data.get(key)
    if not isinstance(records, list):
        raise ConversionError(f"{path} has no {key!r} list (is it a VQA {key} file?)")
    return records


def convert(
    questions: Dict[str, Any],
    annotations: Dict[str, Any],
    dataset: str = "vqa",
    questions_path: str = "questions",
    annotations_path: str = "annotations",
) -> List[Dict[str, Any]]:
    """LAVIS's VQA list from parsed question and annotation files (paths only name them in errors)."""
    subtype = questions.get("data_subtype") or annotations.get("data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise ConversionError(
            f"neither {questions_path} nor {annotations_path} has 'data_subtype' (e.g. 'train2014'), "
            "which names the COCO image folder"
        )
    by_qid: Dict[Any, Dict[str, Any]] = {}
    for i, ann in enumerate(_records(annotations, "annotations", annotations_path)):
        if not isinstance(ann, dict) or "question_id" not in ann or not isinstance(ann.get("answers"), list):
            raise ConversionError(
                f"{annotations_path}: annotation {i} needs 'question_id' and an 'answers' list"
            )
        by_qid[ann["question_id"]] = ann
    out = []
    for i, q in enumerate(_records(questions, "questions", questions_path)):
        missing = [
            k for k in ("question_id", "question", "image_id") if not isinstance(q, dict) or k not in q
        ]
        if missing:
            raise ConversionError(f"{questions_path}: question {i} lacks {', '.join(missing)}")
        ann = by_qid.get(q["question_id"])
        if ann is None:
            raise ConversionError(
                f"{annotations_path} has no annotation for question_id {q['question_id']} "
                f"(question {i} of {questions_path})"
            )
        try:
            answers = [str(a["answer"]) for a in ann["answers"]]
        except (KeyError, TypeError):
            raise ConversionError(
                f"{annotations_path}: answers of question_id {q['question_id']} must be objects with 'answer'"
            ) from None
        record = {
            "question_id": q["question_id"],
            "question": q["question"],
            "answer": answers,
            "image": f"{subtype}/COCO_{subtype}_{int(q['image_id']):012d}.jpg",
            "dataset": dataset,
        }
        if "question_type" in ann:
            record["question_type"] = ann["question_type"]
        out.append(record)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", required=True, help="VQA-format questions JSON")
    parser.add_argument("--annotations", required=True, help="VQA-format annotations JSON")
    parser.add_argument("--out", required=True, help="LAVIS-format JSON list to write")
    parser.add_argument("--dataset", default="vqa", help="value of each record's 'dataset' field")
    args = parser.parse_args(argv)
    try:
        records = convert(
            _load(args.questions), _load(args.annotations), args.dataset, args.questions, args.annotations
        )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{args.out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(records, f)
    os.replace(tmp, args.out)  # a reader never sees a half-written file
    print(f"wrote {len(records)} questions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
