"""The synthetic held-out scenes as the benchmark files ``eval_scripts/`` read, in their released formats.

Part of the real layout (:mod:`minigpt.datasets.synthetic.real_layout`): besides the training
builders' files, the test split is written as OK-VQA, VizWiz, IconQA, VSR, Hateful Memes and
ScienceQA at the paths ``eval_scripts/EVAL_README.md`` lists under the data root. GQA test-dev,
RefCOCO/+/g (split ``val``) and COCO Karpathy test are the training builders' test files, already
there. So ``eval_scripts/eval_*.py --data-root <root>`` evaluates every benchmark offline.

Questions and statements come from the same scenes as the other rows: OK-VQA asks every VQA
question of an image, VizWiz and IconQA one (the latter with the A-OKVQA choices), ScienceQA is the
synthetic ScienceQA-format split (:mod:`~minigpt.datasets.synthetic.lavin_files`: train, val and test,
image and text-only problems) in the release's layout,
VSR states the position question (or the existence question, for a single shape) as a claim, and
Hateful Memes labels the caption by the existence question's answer. Images are links to the
generated JPEGs under the names each benchmark uses; the formats that ship PNGs (IconQA, Hateful
Memes, ScienceQA) get the image re-encoded as PNG.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from PIL import Image

from minigpt.datasets.synthetic.files import FILES, VQA_ANSWER_REPEATS, atomic_write_bytes, atomic_write_json
from minigpt.datasets.synthetic.lavin_files import SCIENCEQA_FILES as SQA_FILES
from minigpt.datasets.synthetic.pope import POPE_SPLITS, pope_rows
from minigpt.datasets.synthetic.real_rows import coco_image_id, multiple_choice, question_id
from minigpt.datasets.synthetic.scenes import Example

if TYPE_CHECKING:
    from minigpt.datasets.synthetic.real_layout import _Layout

# Each benchmark's default paths under the data root (minigpt/evaluation/benchmarks, eval_scripts/EVAL_README.md;
# tests/datasets/test_synthetic_real_layout.py reads every benchmark through its reader at its defaults).
OKVQA_QUESTIONS = "okvqa/OpenEnded_mscoco_val2014_questions.json"
OKVQA_ANNOTATIONS = "okvqa/mscoco_val2014_annotations.json"
OKVQA_IMAGES = "coco/images/val2014"
VIZWIZ = "vizwiz/val.json"
VIZWIZ_IMAGES = "vizwiz/val"
ICONQA = "iconvqa/choose_text_val.json"
ICONQA_IMAGES = "iconvqa/iconvqa_images"
VSR = "vsr/test.jsonl"
VSR_IMAGES = "vsr/images"
HM = "hateful_meme/dev.jsonl"
HM_FOLDER = "hateful_meme"
SCIENCEQA_PROBLEMS = "scienceqa/problems.json"
SCIENCEQA_SPLITS = "scienceqa/pid_splits.json"
SCIENCEQA_IMAGES = "scienceqa/images"
POPE = "pope/coco/coco_pope_{split}.json"
GENERATED_IMAGES = FILES["images_train"].rsplit("/", 1)[0]  # images/, holding train/ and test/


def _first_question(ex: Example) -> Dict[str, str]:
    return ex.questions[ex.conversation_order[0]]


def _by_type(ex: Example, kind: str) -> Dict[str, str] | None:
    return next((q for q in ex.questions if q["question_type"] == kind), None)


def _statement(question: str, answer: str) -> str:
    """``is the red circle above the blue square?`` -> ``The red circle is above the blue square.``;
    ``is there a red circle?`` -> ``There is a red circle.``"""
    body = question.rstrip("?")
    if body.startswith("is there "):
        return f"There is {body[len('is there '):]}."
    subject_and_rest = body[len("is "):]
    for relation in ("to the left of", "to the right of", "above", "below"):
        marker = f" {relation} "
        if marker in subject_and_rest:
            subject, obj = subject_and_rest.split(marker, 1)
            return f"{subject[0].upper()}{subject[1:]} is {relation} {obj}."
    raise ValueError(f"no statement for the question {question!r}")


class _Writer:
    """Writes one benchmark file set under the layout's root from the test examples."""

    def __init__(self, layout: "_Layout", examples: Sequence[Example], n_train: int) -> None:
        self.layout, self.examples, self.n_train = layout, examples, n_train

    def source(self, ex: Example) -> str:
        return f"{FILES['images_' + ex.split]}/{ex.image_name.split('/', 1)[1]}"

    def link_image(self, ex: Example, rel: str) -> None:
        self.layout.link(self.source(ex), rel)
        self.layout.made.append(rel)

    def png_image(self, ex: Example, rel: str) -> None:
        self.png_file(self.source(ex), rel)

    def png_file(self, source: str, rel: str) -> None:
        buf = io.BytesIO()
        with Image.open(self.layout.root / source) as im:
            im.convert("RGB").save(buf, format="PNG")
        atomic_write_bytes(self.layout.root / rel, buf.getvalue())
        self.layout.made.append(rel)

    def json(self, rel: str, obj: Any, count_key: str, count: int) -> None:
        atomic_write_json(self.layout.root / rel, obj)
        self.layout.made.append(rel)
        self.layout.counts[count_key] = count

    def jsonl(self, rel: str, rows: List[Dict[str, Any]], count_key: str) -> None:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write_bytes(self.layout.root / rel, text.encode("utf-8"))
        self.layout.made.append(rel)
        self.layout.counts[count_key] = len(rows)

    # -- one method a benchmark ------------------------------------------------------------------
    def okvqa(self) -> None:
        questions, annotations = [], []
        for ex in self.examples:
            image_id = coco_image_id(ex, self.n_train)
            self.link_image(ex, f"{OKVQA_IMAGES}/COCO_val2014_{image_id:012d}.jpg")
            for q in ex.questions:
                qid = question_id(ex, q)
                questions.append({"image_id": image_id, "question": q["question"], "question_id": qid})
                answers = [
                    {"answer": q["answer"], "raw_answer": q["answer"], "answer_confidence": "yes", "answer_id": k + 1}
                    for k in range(VQA_ANSWER_REPEATS)
                ]
                annotations.append(
                    {
                        "image_id": image_id,
                        "question_id": qid,
                        "question_type": q["question_type"],
                        "answer_type": "other",
                        "answers": answers,
                    }
                )
        self.json(OKVQA_QUESTIONS, {"task_type": "Open-Ended", "data_subtype": "val2014", "questions": questions},
                  "okvqa_questions", len(questions))
        self.json(OKVQA_ANNOTATIONS, {"data_subtype": "val2014", "annotations": annotations}, "okvqa_annotations",
                  len(annotations))

    def vizwiz(self) -> None:
        rows = []
        for ex in self.examples:
            name = f"VizWiz_val_{ex.index:08d}.jpg"
            self.link_image(ex, f"{VIZWIZ_IMAGES}/{name}")
            q = _first_question(ex)
            answers = [{"answer": q["answer"], "answer_confidence": "yes"}] * VQA_ANSWER_REPEATS
            answer_type = "yes/no" if q["answer"] in ("yes", "no") else "other"
            rows.append({"image": name, "question": q["question"], "answers": answers,
                         "answer_type": answer_type, "answerable": 1})
        self.json(VIZWIZ, rows, "vizwiz", len(rows))

    def iconqa(self) -> None:
        rows = []
        for ex in self.examples:
            image_id = str(ex.index)
            self.png_image(ex, f"{ICONQA_IMAGES}/{image_id}/image.png")
            q = _first_question(ex)
            choices = multiple_choice(ex, q)
            rows.append({"image_id": image_id, "question": q["question"], "choices": choices,
                         "answer": choices.index(q["answer"])})
        self.json(ICONQA, rows, "iconvqa", len(rows))

    def vsr(self) -> None:
        rows = []
        for ex in self.examples:
            name = f"{coco_image_id(ex, self.n_train):012d}.jpg"
            self.link_image(ex, f"{VSR_IMAGES}/{name}")
            q = _by_type(ex, "position") or _by_type(ex, "exist")
            relation = next(
                (r for r in ("to the left of", "to the right of", "above", "below") if f" {r} " in q["question"]),
                "has",
            )
            rows.append({"image": name, "caption": _statement(q["question"], q["answer"]),
                         "label": int(q["answer"] == "yes"), "relation": relation})
        self.jsonl(VSR, rows, "vsr")

    def hm(self) -> None:
        rows = []
        for ex in self.examples:
            meme_id = 10000 + ex.index
            rel = f"img/{meme_id:05d}.png"
            self.png_image(ex, f"{HM_FOLDER}/{rel}")
            exist = _by_type(ex, "exist")
            rows.append({"id": meme_id, "img": rel, "label": int(exist is not None and exist["answer"] == "yes"),
                         "text": ex.caption})
        self.jsonl(HM, rows, "hm")

    def scienceqa(self) -> None:
        """ScienceQA's release from the synthetic ScienceQA-format split (``sqa/``, every split, image and
        text-only problems): the same problems, each image a PNG at ``images/<split>/<pid>/image.png``."""
        root = self.layout.root
        problems = json.loads((root / SQA_FILES["problems"]).read_text(encoding="utf-8"))
        splits = json.loads((root / SQA_FILES["pid_splits"]).read_text(encoding="utf-8"))
        released: Dict[str, Dict[str, Any]] = {}
        for split, pids in splits.items():
            for pid in pids:
                problem = dict(problems[pid])
                if problem["image"]:
                    # the synthetic problem names its image under the generated images' folder
                    self.png_file(f"{GENERATED_IMAGES}/{problem['image']}", f"{SCIENCEQA_IMAGES}/{split}/{pid}/image.png")
                    problem["image"] = "image.png"
                released[pid] = problem
        self.json(SCIENCEQA_PROBLEMS, released, "scienceqa_problems", len(released))
        self.json(SCIENCEQA_SPLITS, {**splits, "minival": []}, "scienceqa_test", len(splits["test"]))

    def pope(self, seed: int) -> None:
        """POPE's ``coco_pope_<split>.json`` files (one question a line) over COCO val2014 file names."""
        names = {}
        for ex in self.examples:
            names[ex.image_name] = f"COCO_val2014_{coco_image_id(ex, self.n_train):012d}.jpg"
            self.link_image(ex, f"{OKVQA_IMAGES}/{names[ex.image_name]}")
        for split in POPE_SPLITS:
            rows = [{**r, "image": names[r["image"]]} for r in pope_rows(self.examples, split, seed)]
            self.jsonl(POPE.format(split=split), rows, f"pope_{split}")


def write_benchmark_files(layout: "_Layout", n_train: int, seed: int) -> None:
    """Every benchmark file set the real builders' layout does not already hold, from the test split."""
    examples = layout.examples["test"]
    if not examples:
        return
    writer = _Writer(layout, examples, n_train)
    for write in (writer.okvqa, writer.vizwiz, writer.iconqa, writer.vsr, writer.hm, writer.scienceqa):
        write()
    writer.pope(seed)
