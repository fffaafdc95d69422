"""ScienceQA image questions, as LaVIN evaluates them.

Reads the release's ``problems.json`` (``{pid: {question, choices, answer (index), hint, image,
subject, grade, ...}}``) and ``pid_splits.json`` (``{split: [pid, ...]}``); the image of problem
``pid`` is ``images/<split>/<pid>/image.png``. Only problems with an image are kept (the
"IMG" column of the ScienceQA table). The prompt is LaVIN's ``QCM`` input (``util/base_prompt.py``:
question, context = the hint or ``N/A``, options as ``(A) ... (B) ...``, then ``Response:``); the
model answers ``The answer is X.``, which ``scienceqa_accuracy`` reads.
"""

from __future__ import annotations

import os
from typing import List, Sequence

from minigpt.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    EvalRecord,
    Paths,
    field_of,
    find_image,
    load_json,
)

OPTION_LETTERS = "ABCDE"
SCIENCEQA_PROMPT = "Question: {question}\nContext: {context}\nOptions: {options}\nResponse:"


def scienceqa_prompt(question: str, hint: str, choices: Sequence[str]) -> str:
    """LaVIN's QCM prompt for one problem (captions off, as its evaluation runs by default)."""
    if len(choices) > len(OPTION_LETTERS):
        raise BenchmarkDataError(f"ScienceQA problem with {len(choices)} choices; at most {len(OPTION_LETTERS)}")
    options = " ".join(f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(choices))
    text = SCIENCEQA_PROMPT.format(question=question, context=(hint or "").strip() or "N/A", options=options)
    return text.replace("  ", " ").strip()


def read_scienceqa(paths: Paths, split: str) -> List[EvalRecord]:
    ppath, spath = paths["problems"], paths["pid_splits"]
    problems = load_json(ppath, "scienceqa problems")
    splits = load_json(spath, "scienceqa pid splits")
    if split not in splits:
        raise BenchmarkDataError(f"{spath}: no split {split!r}; it has {', '.join(sorted(splits))}")
    records = []
    for pid in splits[split]:
        pid = str(pid)
        if pid not in problems:
            raise BenchmarkDataError(f"{spath}: pid {pid} of split {split!r} is not in {ppath}")
        p = problems[pid]
        if not p.get("image"):
            continue
        choices = [str(c) for c in field_of(p, "choices", ppath, pid)]
        answer = int(field_of(p, "answer", ppath, pid))
        grade = str(p.get("grade", ""))
        grade_n = int(grade[5:]) if grade.startswith("grade") and grade[5:].isdigit() else None
        records.append(
            EvalRecord(
                id=pid,
                image=find_image(os.path.join(paths["images"], split, pid), [str(p["image"])], f"scienceqa {pid}"),
                prompt=scienceqa_prompt(field_of(p, "question", ppath, pid), p.get("hint", ""), choices),
                target={"answer": answer, "choices": choices},
                meta={
                    "subject": p.get("subject"),
                    "grade": None if grade_n is None else ("1_6" if grade_n <= 6 else "7_12"),
                    "has_text": bool((p.get("hint") or "").strip()),
                },
            )
        )
    if not records:
        raise BenchmarkDataError(f"{ppath}: split {split!r} has no problem with an image")
    return records


BENCHMARKS = [
    Benchmark(
        "scienceqa", "scienceqa", ["test", "val", "minival", "train"], "test",
        {"problems": "scienceqa/problems.json", "pid_splits": "scienceqa/pid_splits.json", "images": "scienceqa/images"},
        SCIENCEQA_PROMPT, read_scienceqa,
        "ScienceQA questions with an image (IMG), accuracy",
    ),
]
