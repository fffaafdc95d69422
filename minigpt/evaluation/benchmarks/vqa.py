"""The VQA-style benchmarks of the MiniGPT-v2 / TinyGPT-V tables: OK-VQA, VizWiz, IconQA, GQA, VSR,
Hateful Memes, and the quickstart's synthetic VQA.

Each reader takes the benchmark's released annotation format (see ``eval_scripts/EVAL_README.md``
for the layout under the data root); GQA and LAVIS's VQA list are read by the training readers
(``minigpt.datasets.datasets.vqa_datasets``). Scoring: ``minigpt.tasks.evaluation.scorers``. Prompts are the ones the released evaluation code used:
TinyGPT-V's ``minigpt4/datasets/datasets/vqa_datasets.py`` (``*EvalData`` classes), which MiniGPT-v2
shares except for VizWiz and VSR, where TinyGPT-V's wording (with the ``[vqa]`` tag) is kept because
the checkpoints this library targets were evaluated with it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

from minigpt.datasets.datasets.vqa_datasets import GQADataset, VQADataset
from minigpt.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    EvalRecord,
    Paths,
    check_unique_ids,
    field_of,
    find_image,
    load_json,
    load_json_or_jsonl,
    read_dataset,
)

SHORT_ANSWER_PROMPT = "[vqa] Based on the image, respond to this question with a short answer: {}"
VIZWIZ_PROMPT = (
    "[vqa] The question is '{}' Based on the image, answer the question with a single word or phrase. "
    "and reply 'unanswerable' when the provided information is insufficient"
)
VSR_PROMPT = "[vqa] Based on the image, is this statement true or false? {}"
# "writting" is the released prompt's spelling; the model was evaluated with it, so it stays.
HM_PROMPT = "This is an image writting '{}'. Is this image hateful? Answer yes or no. Answer:"
# The quickstart's synthetic VQA trains on "[vqa] <question>" (datasets.synthetic_vqa: task_tag [vqa], no prompt file).
SYNTHETIC_VQA_PROMPT = "[vqa] {}"


# -- readers -------------------------------------------------------------------------------------
def read_okvqa(paths: Paths, split: str) -> List[EvalRecord]:
    """OK-VQA's official pair: ``OpenEnded_mscoco_val2014_questions.json`` + ``mscoco_val2014_annotations.json``.

    Ten answers per question (each of the five annotators' answers twice), scored with the VQA
    accuracy. Images are COCO val2014, named either way COCO ships them.
    """
    qpath, apath = paths["questions"], paths["annotations"]
    questions = field_of(load_json(qpath, "okvqa questions"), "questions", qpath, "(top level)")
    anns = field_of(load_json(apath, "okvqa annotations"), "annotations", apath, "(top level)")
    by_qid = {field_of(a, "question_id", apath, i): a for i, a in enumerate(anns)}
    records = []
    for i, q in enumerate(questions):
        qid = field_of(q, "question_id", qpath, i)
        if qid not in by_qid:
            raise BenchmarkDataError(f"{apath}: no annotation for question_id {qid} of {qpath}")
        ann = by_qid[qid]
        image_id = int(field_of(q, "image_id", qpath, i))
        answers = [a["answer"] for a in field_of(ann, "answers", apath, qid)]
        image = find_image(
            paths["images"], [f"COCO_val2014_{image_id:012d}.jpg", f"{image_id:012d}.jpg"], f"okvqa question {qid}"
        )
        records.append(
            EvalRecord(
                id=str(qid),
                image=image,
                prompt=SHORT_ANSWER_PROMPT.format(field_of(q, "question", qpath, i)),
                target={"answers": answers},
                meta={"answer_type": ann.get("answer_type"), "question_type": ann.get("question_type")},
            )
        )
    return check_unique_ids(records, qpath)


def read_vizwiz(paths: Paths, split: str) -> List[EvalRecord]:
    """VizWiz-VQA's ``val.json``: ``[{image, question, answers: [{answer, answer_confidence}], answer_type}]``."""
    path = paths["annotations"]
    records = []
    for i, e in enumerate(load_json_or_jsonl(path, "vizwiz annotations")):
        image_name = field_of(e, "image", path, i)
        answers = [a["answer"] for a in field_of(e, "answers", path, i)]
        records.append(
            EvalRecord(
                id=os.path.splitext(image_name)[0],
                image=find_image(paths["images"], [image_name], f"vizwiz entry {i}"),
                prompt=VIZWIZ_PROMPT.format(field_of(e, "question", path, i)),
                target={"answers": answers},
                meta={"answer_type": e.get("answer_type")},
            )
        )
    return check_unique_ids(records, path)


def _iconqa_answer(e: Dict[str, Any], choices: Sequence[str], where: str) -> str:
    answer = e["answer"]
    if isinstance(answer, int) and not isinstance(answer, bool):  # the release stores the choice index
        if not 0 <= answer < len(choices):
            raise BenchmarkDataError(f"{where}: answer index {answer} outside its {len(choices)} choices")
        return choices[answer]
    return str(answer)


def read_iconqa(paths: Paths, split: str) -> List[EvalRecord]:
    """IconQA multiple-choice text questions (the ``choose_txt`` subset MiniGPT-v2 reports).

    Either MiniGPT-v2's ``choose_text_val.json`` (``[{image_id, question, choices, answer}]``, the
    image at ``images/<image_id>/image.png``) or, when ``annotations`` is a folder, the IconQA
    release's ``<split>/choose_txt/<pid>/{data.json,image.png}`` tree.
    """
    path = paths["annotations"]
    entries = []
    if os.path.isdir(path):
        folder = os.path.join(path, split, "choose_txt") if os.path.isdir(os.path.join(path, split)) else path
        for pid in sorted(os.listdir(folder)):
            data_path = os.path.join(folder, pid, "data.json")
            if os.path.isfile(data_path):
                e = load_json(data_path, "iconqa problem")
                entries.append((data_path, {**e, "image_id": pid}, os.path.join(folder, pid)))
        if not entries:
            raise BenchmarkDataError(f"iconqa: no <pid>/data.json under {folder}")
    else:
        for i, e in enumerate(load_json_or_jsonl(path, "iconqa annotations")):
            image_id = str(field_of(e, "image_id", path, i))
            entries.append((f"{path} entry {i}", e, os.path.join(paths["images"], image_id)))
    records = []
    for where, e, image_dir in entries:
        choices = [str(c) for c in field_of(e, "choices", where, "")]
        field_of(e, "answer", where, "")
        records.append(
            EvalRecord(
                id=str(e["image_id"]),
                image=find_image(image_dir, ["image.png"], f"iconqa {where}"),
                prompt=SHORT_ANSWER_PROMPT.format(field_of(e, "question", where, "")),
                target={"answer": _iconqa_answer(e, choices, where), "choices": choices},
            )
        )
    return check_unique_ids(records, path)


def read_gqa(paths: Paths, split: str) -> List[EvalRecord]:
    """GQA's ``testdev_balanced_questions.json``, read by the training reader (:class:`GQADataset`): the
    release's ``{qid: {imageId, question, answer, types}}`` or LAVIS's list ``[{question_id, image, question, answer}]``."""
    path = paths["annotations"]
    ds = read_dataset(lambda: GQADataset("gqa", [path], None, None, paths["images"]), "gqa questions")
    records = []
    for r in ds.records:
        records.append(
            EvalRecord(
                id=str(r["key"]),
                image=find_image(paths["images"], [r["image"]], f"gqa question {r['key']}"),
                prompt=SHORT_ANSWER_PROMPT.format(r["question"]),
                target={"answer": r["answers"][0]},
                meta={"structural": r["extra"].get("structural")},
            )
        )
    return check_unique_ids(records, path)


def read_vsr(paths: Paths, split: str) -> List[EvalRecord]:
    """VSR (zero-shot split) ``test.jsonl``: ``{image, caption, label (1 true / 0 false), relation}`` per line.

    Images are COCO 2017 files, looked up in the image folder and its ``train2017``/``val2017``.
    """
    path = paths["annotations"]

    def record(i: int, e: Dict[str, Any]) -> EvalRecord:
        name = field_of(e, "image", path, i)
        candidates = [name, os.path.join("train2017", name), os.path.join("val2017", name)]
        return EvalRecord(
            id=str(i),
            image=find_image(paths["images"], candidates, f"vsr line {i + 1}"),
            prompt=VSR_PROMPT.format(field_of(e, "caption", path, i)),
            target={"label": int(field_of(e, "label", path, i))},
            meta={"relation": e.get("relation")},
        )

    return [record(i, e) for i, e in enumerate(load_json_or_jsonl(path, "vsr annotations"))]


def read_hm(paths: Paths, split: str) -> List[EvalRecord]:
    """Hateful Memes ``dev.jsonl``: ``{id, img: "img/42953.png", label, text}`` per line."""
    path = paths["annotations"]

    def record(i: int, e: Dict[str, Any]) -> EvalRecord:
        rel = field_of(e, "img", path, i)
        return EvalRecord(
            id=str(e.get("id", i)),
            image=find_image(paths["images"], [rel, os.path.basename(rel)], f"hm line {i + 1}"),
            prompt=HM_PROMPT.format(field_of(e, "text", path, i)),
            target={"label": int(field_of(e, "label", path, i))},
        )

    records = [record(i, e) for i, e in enumerate(load_json_or_jsonl(path, "hateful memes annotations"))]
    return check_unique_ids(records, path)


def read_lavis_vqa(paths: Paths, split: str) -> List[EvalRecord]:
    """LAVIS's VQA list ``[{question_id, question, answer: [...], image, question_type?}]`` (what the
    synthetic generator writes as ``vqa/vqa_test.json``), read by the training reader (:class:`VQADataset`)."""
    path = paths["annotations"]
    ds = read_dataset(lambda: VQADataset("vqa", [path], None, None, paths["images"]), "vqa annotations")
    records = []
    for i, r in enumerate(ds.records):
        records.append(
            EvalRecord(
                id=str(r["key"]),
                image=find_image(paths["images"], [r["image"]], f"vqa entry {i}"),
                prompt=SYNTHETIC_VQA_PROMPT.format(r["question"]),
                target={"answers": list(r["answers"])},
                meta={"question_type": r["extra"].get("question_type")},
            )
        )
    return check_unique_ids(records, path)


BENCHMARKS = [  # name, family, splits, default split, paths under the data root, prompt, reader, what it scores
    Benchmark("okvqa", "vqa", ["val"], "val", {"questions": "okvqa/OpenEnded_mscoco_val2014_questions.json", "annotations": "okvqa/mscoco_val2014_annotations.json", "images": "coco/images/val2014"}, SHORT_ANSWER_PROMPT, read_okvqa, "OK-VQA val, VQA accuracy"),
    Benchmark("vizwiz", "vqa", ["val"], "val", {"annotations": "vizwiz/val.json", "images": "vizwiz/val"}, VIZWIZ_PROMPT, read_vizwiz, "VizWiz-VQA val, VQA accuracy"),
    Benchmark("iconvqa", "vqa", ["val", "test"], "val", {"annotations": "iconvqa/choose_text_val.json", "images": "iconvqa/iconvqa_images"}, SHORT_ANSWER_PROMPT, read_iconqa, "IconQA multiple-choice (text choices), accuracy"),
    Benchmark("gqa", "vqa", ["testdev"], "testdev", {"annotations": "gqa/testdev_balanced_questions.json", "images": "gqa/images"}, SHORT_ANSWER_PROMPT, read_gqa, "GQA test-dev balanced, exact-match accuracy"),
    Benchmark("vsr", "vqa", ["test"], "test", {"annotations": "vsr/test.jsonl", "images": "vsr/images"}, VSR_PROMPT, read_vsr, "VSR zero-shot test, true/false accuracy"),
    Benchmark("hm", "vqa", ["dev"], "dev", {"annotations": "hateful_meme/dev.jsonl", "images": "hateful_meme"}, HM_PROMPT, read_hm, "Hateful Memes dev (seen), yes/no accuracy"),
    Benchmark("synthetic_vqa", "vqa", ["test"], "test", {"annotations": "synthetic/vqa/vqa_test.json", "images": "synthetic/images"}, SYNTHETIC_VQA_PROMPT, read_lavis_vqa, "the quickstart's held-out synthetic shapes, VQA accuracy per question type"),
]
