"""The table of scorers: how one prediction is scored and how a split's rows become its figures.

A :class:`Scorer` pairs ``score(record, prediction) -> row`` (at least ``{"score": float}``) with
``aggregate(records, rows) -> {metric: value}`` (fractions in [0, 1] unless the metric says otherwise).

* :data:`SCORERS` -- keyed by benchmark name (``okvqa``, ``refcoco``, ...): each scored as its own
  evaluation scores it (see :mod:`~minigpt.tasks.evaluation.metrics`), after MiniGPT-v2's answer cleaning.
* :data:`TASK_SCORERS` -- keyed by a dataset sample's ``task`` (``vqa``, ``refer``, ``caption``, ``scienceqa``; any other
  task scores exact match): what in-training evaluation reports per task. :data:`SAMPLES_SCORER`
  scores a split of mixed samples through it, each row by its own task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from minigpt.common import grounding
from minigpt.datasets.synthetic.absent import is_refusal
from minigpt.tasks.evaluation import metrics as M
from minigpt.tasks.evaluation import pope
from minigpt.tasks.evaluation.records import EvalRecord, clean_answer, grouped_means, mean

Row = Dict[str, Any]
NOT_DRAWN = "not drawn"  # a creation prediction when the model wrote no <dream>


@dataclass(frozen=True)
class Scorer:
    """One way of scoring a split: ``score`` per prediction, ``aggregate`` over the split's rows (in record order)."""

    score: Callable[[EvalRecord, str], Row]
    aggregate: Callable[[List[EvalRecord], List[Row]], Dict[str, float]]


# -- benchmarks -----------------------------------------------------------------------------------------
def score_vqa(record: EvalRecord, prediction: str) -> Row:
    return {"score": M.vqa_accuracy(clean_answer(prediction), record.target["answers"])}


def score_gqa(record: EvalRecord, prediction: str) -> Row:
    return {"score": M.gqa_accuracy(clean_answer(prediction), record.target["answer"])}


def score_vsr(record: EvalRecord, prediction: str) -> Row:
    return {"score": M.vsr_accuracy(clean_answer(prediction), record.target["label"])}


def score_iconqa(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    return {"score": M.iconqa_accuracy(clean_answer(prediction), t["answer"], t["choices"])}


def score_hm(record: EvalRecord, prediction: str) -> Row:
    return {"score": M.hm_accuracy(clean_answer(prediction), record.target["label"])}


def score_synthetic_vqa(record: EvalRecord, prediction: str) -> Row:
    row = score_vqa(record, prediction)
    flag = hallucinated(str(record.meta.get("question_type")), record.target["answers"][0], clean_answer(prediction))
    if flag is not None:
        row["hallucinated"] = flag
    return row


def aggregate_synthetic_vqa(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    out = accuracy_by("question_type")(records, rows)
    flags = [r["hallucinated"] for r in rows if "hallucinated" in r]
    if flags:
        out["hallucination_rate"] = mean(float(f) for f in flags)
    return out


def accuracy_by(key: str) -> Callable[[List[EvalRecord], List[Row]], Dict[str, float]]:
    """Mean score as ``accuracy``, plus ``accuracy_<group>`` over the records' ``meta[key]`` (none if ``key`` is empty)."""

    def aggregate(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
        out = {"accuracy": mean(r["score"] for r in rows)}
        if key:
            out.update(grouped_means(rows, records, key, "accuracy"))
        return out

    return aggregate


def score_refer(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    text = clean_answer(prediction)
    box = grounding.parse_box(text)
    iou = grounding.iou(grounding.grid_to_pixels(box, t["width"], t["height"]), t["box"]) if box else 0.0
    return {"score": M.refcoco_hit(text, t["box"], t["width"], t["height"]), "iou": iou, "parsed": box is not None}


def aggregate_refer(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    return {
        "acc@0.5": mean(r["score"] for r in rows),
        "mean_iou": mean(r["iou"] for r in rows),
        "box_parsed": mean(float(r["parsed"]) for r in rows),
    }


def score_caption(record: EvalRecord, prediction: str) -> Row:
    # CIDEr is a corpus statistic: the per-sample score is only whether a reference was matched exactly.
    pred = " ".join(M.caption_tokens(clean_answer(prediction)))
    refs = {" ".join(M.caption_tokens(r)) for r in record.target["references"]}
    return {"score": float(pred in refs)}


def aggregate_caption(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    preds = {rec.id: clean_answer(row["prediction"]) for rec, row in zip(records, rows)}
    refs = {rec.id: list(rec.target["references"]) for rec in records}
    scores = dict(M.caption_scores(preds, refs))
    scores["exact_match"] = sum(r["score"] for r in rows) / len(rows) if rows else 0.0
    return scores


def score_scienceqa(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    return {"score": M.scienceqa_accuracy(clean_answer(prediction), t["answer"], t["choices"])}


# The columns of the official ScienceQA table (its paper; LaVIN's eval.py): column -> (meta key, value).
# TXT, IMG and NO are the context modality: a hint text (TXT), an image (IMG; a problem may be both),
# neither (NO). G1-6 / G7-12 are grade bands. The average is ``accuracy``.
SCIENCEQA_COLUMNS: Dict[str, Tuple[str, Any]] = {
    "nat": ("subject", "natural science"),
    "soc": ("subject", "social science"),
    "lan": ("subject", "language science"),
    "txt": ("has_text", True),
    "img": ("has_image", True),
    "no": ("no_context", True),
    "g1_6": ("grade", "G1-6"),
    "g7_12": ("grade", "G7-12"),
}


def aggregate_scienceqa(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    """``accuracy`` (the table's average) and ``accuracy_<column>`` for each column of the official table.

    A column none of the questions falls in is left out (the full test split fills all of them). Besides
    the table, ``accuracy_text_only`` is the share of the questions without an image answered right.
    """
    out: Dict[str, float] = {"accuracy": mean(r["score"] for r in rows)}
    for column, (key, value) in SCIENCEQA_COLUMNS.items():
        scores = [row["score"] for rec, row in zip(records, rows) if rec.meta.get(key) == value]
        if scores:
            out[f"accuracy_{column}"] = mean(scores)
    text_only = [row["score"] for rec, row in zip(records, rows) if rec.meta.get("has_image") is False]
    if text_only:
        out["accuracy_text_only"] = mean(text_only)
    return out


def score_pope(record: EvalRecord, prediction: str) -> Row:
    said = pope.pope_answer(clean_answer(prediction))
    return {"score": float(said == record.target["label"]), "answer": said}


def aggregate_pope(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    return pope.pope_metrics([r["answer"] for r in rows], [rec.target["label"] for rec in records])


_REFER = Scorer(score_refer, aggregate_refer)
_POPE = Scorer(score_pope, aggregate_pope)
_CAPTION = Scorer(score_caption, aggregate_caption)

SCORERS: Dict[str, Scorer] = {
    "okvqa": Scorer(score_vqa, accuracy_by("answer_type")),
    "vizwiz": Scorer(score_vqa, accuracy_by("answer_type")),
    "iconvqa": Scorer(score_iconqa, accuracy_by("")),
    "gqa": Scorer(score_gqa, accuracy_by("structural")),
    "vsr": Scorer(score_vsr, accuracy_by("")),
    "hm": Scorer(score_hm, accuracy_by("")),
    "synthetic_vqa": Scorer(score_synthetic_vqa, aggregate_synthetic_vqa),
    "refcoco": _REFER,
    "refcoco+": _REFER,
    "refcocog": _REFER,
    "synthetic_refcoco": _REFER,
    "coco_caption": _CAPTION,
    "synthetic_coco_caption": _CAPTION,
    "scienceqa": Scorer(score_scienceqa, aggregate_scienceqa),
    "scienceqa_img": Scorer(score_scienceqa, aggregate_scienceqa),
    "pope": _POPE,
    "synthetic_pope": _POPE,
}


# -- dataset samples, by task (in-training evaluation) ------------------------------------------------------
def _task_row(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    return {"sample_id": t["sample_id"], "task": t["task"], "prediction": prediction, "answer": t["answer"]}


def hallucinated(question_type: str, truth: str, prediction: str) -> Optional[bool]:
    """Whether an answer about something the picture lacks treats it as there; None for other questions.

    An ``absent`` question ("what color is the circle?" with no circle) is answered as if the thing were
    there unless the answer is a refusal (``there is no ...``); an ``exist`` question whose truth is
    ``no`` is, when the answer is ``yes``.
    """
    if question_type == "absent":
        return not is_refusal(prediction)
    if question_type == "exist" and M.normalize_answer(truth) == "no":
        return M.normalize_answer(prediction) == "yes"
    return None


def _score_vqa_sample(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    row = {**_task_row(record, prediction), "score": M.vqa_accuracy(prediction, t.get("answers") or [t["answer"]])}
    if "question_type" in t:
        row["question_type"] = t["question_type"]
        flag = hallucinated(t["question_type"], t["answer"], prediction)
        if flag is not None:
            row["hallucinated"] = flag
    return row


def _aggregate_vqa_samples(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    out = {"vqa_accuracy": mean(r["score"] for r in rows)}
    by_type: Dict[Any, List[float]] = {}
    for r in rows:
        if "question_type" in r:
            by_type.setdefault(r["question_type"], []).append(r["score"])
    for qt, scores in sorted(by_type.items()):
        out[f"vqa_accuracy_{qt}"] = mean(scores)
    flags = [r["hallucinated"] for r in rows if "hallucinated" in r]
    if flags:  # the share of questions about absent things answered as if they were there
        out["hallucination_rate"] = mean(float(f) for f in flags)
    return out


def _score_refer_sample(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    w, h = t["image_size"]
    box = M.parse_box(prediction)
    iou = M.iou(M.grid_to_pixels(box, w, h), t["gt_box"]) if box else 0.0
    return {**_task_row(record, prediction), "iou": iou, "score": float(iou >= 0.5)}


def _aggregate_refer_samples(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    return {"grounding_acc@0.5": mean(r["score"] for r in rows), "grounding_mean_iou": mean(r["iou"] for r in rows)}


def _score_caption_sample(record: EvalRecord, prediction: str) -> Row:
    t = record.target
    references = list(t["captions"]) if "captions" in t else [t["answer"]]
    hit = M.normalize_answer(prediction) in {M.normalize_answer(r) for r in references}
    return {**_task_row(record, prediction), "references": references, "score": float(hit)}


def _aggregate_caption_samples(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    return {
        "caption_exact": mean(r["score"] for r in rows),
        # NLTK's smoothed corpus BLEU-4, not the COCO caption evaluation's Bleu_4 (pycocoevalcap, eval_caption.py)
        "caption_bleu4_nltk": M.corpus_bleu4([r["prediction"] for r in rows], [r["references"] for r in rows]),
    }


def _score_exact_sample(record: EvalRecord, prediction: str) -> Row:
    hit = M.normalize_answer(prediction) == M.normalize_answer(record.target["answer"])
    return {**_task_row(record, prediction), "score": float(hit)}


def _aggregate_exact_samples(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    return {f"{rows[0]['task']}_accuracy": mean(r["score"] for r in rows)}


def _score_scienceqa_sample(record: EvalRecord, prediction: str) -> Row:
    truth = record.target["scienceqa"]
    score = M.scienceqa_accuracy(clean_answer(prediction), truth["answer"], truth["choices"])
    return {**_task_row(record, prediction), "score": score}


def _aggregate_scienceqa_samples(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    # the grouping keys travel in the sample's target; the benchmark keeps them in meta
    as_meta = [EvalRecord(r.id, None, r.prompt, r.target, dict(r.target["scienceqa"])) for r in records]
    return {f"scienceqa_{k}": v for k, v in aggregate_scienceqa(as_meta, rows).items()}


def _score_creation_sample(record: EvalRecord, prediction: str) -> Row:
    # the prediction is the drawing judge's verdict on the drawn image, "colour|quadrant" (tasks/dream_task.py)
    colour, _, quadrant = prediction.partition("|")
    truth = record.target["drawing"]
    row = {**_task_row(record, prediction), "colour_ok": float(colour == truth["colour"]),
           "quadrant_ok": float(quadrant == truth["quadrant"]), "drawn": float(colour != NOT_DRAWN)}
    row["score"] = row["colour_ok"] * row["quadrant_ok"]
    return row


def _aggregate_creation_samples(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    return {"creation_colour_accuracy": mean(r["colour_ok"] for r in rows),
            "creation_quadrant_accuracy": mean(r["quadrant_ok"] for r in rows),
            "creation_both_accuracy": mean(r["score"] for r in rows),
            "creation_drawn_rate": mean(r["drawn"] for r in rows)}


TASK_SCORERS: Dict[str, Scorer] = {
    "creation": Scorer(_score_creation_sample, _aggregate_creation_samples),
    "scienceqa": Scorer(_score_scienceqa_sample, _aggregate_scienceqa_samples),
    "vqa": Scorer(_score_vqa_sample, _aggregate_vqa_samples),
    "refer": Scorer(_score_refer_sample, _aggregate_refer_samples),
    "caption": Scorer(_score_caption_sample, _aggregate_caption_samples),
}
EXACT_MATCH = Scorer(_score_exact_sample, _aggregate_exact_samples)  # every other task (identify, ...)


def task_scorer(task: str) -> Scorer:
    """The scorer of dataset samples whose ``task`` is ``task``: :data:`TASK_SCORERS`, else exact match."""
    return TASK_SCORERS.get(task, EXACT_MATCH)


def _score_by_task(record: EvalRecord, prediction: str) -> Row:
    return task_scorer(record.target["task"]).score(record, prediction)


def _aggregate_by_task(records: List[EvalRecord], rows: List[Row]) -> Dict[str, float]:
    groups: Dict[str, List[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["task"], []).append(i)
    out: Dict[str, float] = {}
    for task, idx in groups.items():
        out.update(task_scorer(task).aggregate([records[i] for i in idx], [rows[i] for i in idx]))
    return {k: round(v, 4) for k, v in out.items()}


SAMPLES_SCORER = Scorer(_score_by_task, _aggregate_by_task)
"""Dataset samples of any mix of tasks, each row scored by its task's scorer, figures per task (4 decimals)."""
