"""VQA readers: LAVIS's VQA JSON (VQAv2, OK-VQA), A-OKVQA, GQA and OCR-VQA.

Every reader fills the same records and shares one ``__getitem__``
(:class:`QuestionAnswerDataset`), so every VQA sample looks alike::

    {"image", "instruction_input": "<Img><ImageHere></Img> [vqa] {question}", "answer",
     "sample_id", "task": "vqa", "answers": [...], "question_id", ...}

The training answer is the most frequent of the annotators' answers (ties: the first listed).
MiniGPT-v2 instead draws one at random with weights proportional to those counts on every read;
taking the mode of that distribution keeps a sample the same every time it is read.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from minigpt.common.io import DatasetError, load_json
from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    most_frequent,
    pick,
    require_keys,
)


def _where(name: str, path: str, entry: Any) -> str:
    return f"dataset {name!r}: entry {entry} of {path}"


def answer_list(value: Any, name: str, path: str, entry: Any, field: str = "answer") -> List[str]:
    """``value`` as a non-empty list of answer strings (a lone string becomes a list of one).

    ``entry`` names the record in the error (its index, or its key in a JSON object).
    """
    answers = [value] if isinstance(value, str) else value
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise DatasetError(
            f"{_where(name, path, entry)}: {field!r} must be an answer string or a non-empty list of "
            f"them, got {value!r:.200}"
        )
    return list(answers)


def _text(value: Any, name: str, path: str, entry: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(
            f"{_where(name, path, entry)}: {field!r} must be a non-empty string, got {value!r:.200}"
        )
    return value


class QuestionAnswerDataset(BaseDataset):
    """What every VQA reader shares: records of one question each, and the sample they become.

    Subclasses parse their file format entry by entry through ``add_records`` (so a malformed
    entry is logged, counted and left out rather than stopping the run; a file with no good
    entry is an error) and build each record with :meth:`question`. Instruction: the image
    placeholder, the task tag, then the question through the text processor (with a prompt
    file: a template drawn per sample, ``{}`` standing for the question). Samples also carry
    ``"answers"`` (every annotator answer, for VQA accuracy) and ``"question_id"``, plus the
    reader's own evaluation keys.
    """

    task = "vqa"

    @staticmethod
    def question(key: Any, image: str, question: str, answers: Sequence[str], **extra: Any) -> Dict[str, Any]:
        """The record of one question about ``image`` (relative to the image root).

        ``key`` becomes the ``question_id`` and the tail of the ``sample_id``; ``extra`` keys
        are copied into the sample.
        """
        return {"key": key, "image": image, "question": question, "answers": list(answers), "extra": extra}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        question = self.text(record["question"])
        if self.prompts:
            question = pick(self.prompts, index).format(question)
        sample = {
            "image": self.load_image(record["image"], sample_id),
            "instruction_input": self.instruction(question),
            "answer": " ".join(most_frequent(record["answers"]).split()),
            "sample_id": sample_id,
            "task": self.task,
            "answers": list(record["answers"]),
            "question_id": record["key"],
        }
        sample.update(record["extra"])
        return sample


class VQADataset(QuestionAnswerDataset):
    """LAVIS's VQA JSON: a list of ``{"question_id", "question", "answer": [...], "image"}``.

    The format of LAVIS's ``vqa_train.json`` (VQAv2) and ``okvqa_train.json`` /
    ``okvqa_val_eval.json`` (OK-VQA); ``image`` is relative to the image root
    (``train2014/COCO_train2014_000000xxxxxx.jpg``). A sample also carries ``"question_type"``
    when the entry has it.
    """

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        self.add_json_lists(ann_paths)

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        name = self.name
        require_keys(entry, ("question_id", "question", "answer", "image"), name, path, i)
        where = f"{i} (question_id {entry['question_id']})"
        extra = {"question_type": entry["question_type"]} if "question_type" in entry else {}
        return self.question(
            entry["question_id"],
            _text(entry["image"], name, path, where, "image"),
            _text(entry["question"], name, path, where, "question"),
            answer_list(entry["answer"], name, path, where),
            **extra,
        )


class AOKVQADataset(QuestionAnswerDataset):
    """A-OKVQA: a list of ``{"question_id", "question", "direct_answers": [10], "choices", ...}``.

    The answer comes from ``direct_answers`` (as MiniGPT-v2 trains it); ``choices`` and
    ``correct_choice_idx`` ride along in the sample for multiple-choice evaluation.
    The image is the entry's ``image`` when it has one (LAVIS's copy,
    ``train2014/COCO_train2014_000000xxxxxx.jpg``), else the official release's ``image_id``
    and ``split`` name the COCO 2017 file: ``{split}2017/{image_id:012d}.jpg``.
    """

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        self.add_json_lists(ann_paths)

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        name = self.name
        require_keys(entry, ("question_id", "question", "direct_answers"), name, path, i)
        where = f"{i} (question_id {entry['question_id']!r})"
        extra = {k: entry[k] for k in ("choices", "correct_choice_idx") if k in entry}
        return self.question(
            entry["question_id"],
            self._image(entry, path, i, where),
            _text(entry["question"], name, path, where, "question"),
            answer_list(entry["direct_answers"], name, path, where, "direct_answers"),
            **extra,
        )

    def _image(self, entry: Dict[str, Any], path: str, index: int, where: str) -> str:
        if "image" in entry:
            return _text(entry["image"], self.name, path, where, "image")
        require_keys(entry, ("image_id", "split"), self.name, path, index)
        try:
            image_id = int(entry["image_id"])
        except (TypeError, ValueError):
            raise DatasetError(
                f"{_where(self.name, path, where)}: 'image_id' must be a COCO image number, "
                f"got {entry['image_id']!r}"
            ) from None
        return f"{entry['split']}2017/{image_id:012d}.jpg"


class GQADataset(QuestionAnswerDataset):
    """GQA questions, in LAVIS's list or in the official release's object keyed by question id.

    * LAVIS (``train_balanced_questions.json`` from its bucket, what MiniGPT-v2 reads): a list of
      ``{"question_id", "question", "answer": str, "image": "n161313.jpg"}``; ``question_id`` is
      optional (the entry's index stands in).
    * Official (``questions1.2/train_balanced_questions.json``):
      ``{"<question id>": {"imageId", "question", "answer", "fullAnswer", ...}}``; the image is
      ``{imageId}.jpg``. ``fullAnswer`` rides along in the sample as ``"full_answer"``.

    In either form, an entry's ``types.structural`` (``query``, ``verify``, ...) rides along as
    ``"structural"``: GQA's results are broken down by it.
    """

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(name, *args, **kwargs)
        for path in ann_paths:
            data = load_json(path, name)
            if isinstance(data, list):
                self.add_records(path, data, partial(self._parse_lavis, path))
            elif isinstance(data, dict):
                self.add_records(path, data.items(), partial(self._parse_official, path))
            else:
                raise DatasetError(
                    f"dataset {name!r}: {path} must hold a list (LAVIS) or an object keyed by question id "
                    f"(official GQA), got {type(data).__name__}"
                )

    def _parse_lavis(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        name = self.name
        require_keys(entry, ("question", "answer", "image"), name, path, i)
        key = entry.get("question_id", i)
        where = f"{i} (question_id {key!r})"
        return self.question(
            key,
            _text(entry["image"], name, path, where, "image"),
            _text(entry["question"], name, path, where, "question"),
            answer_list(entry["answer"], name, path, where),
            **_structural(entry),
        )

    def _parse_official(self, path: str, i: int, item: Tuple[str, Any]) -> Dict[str, Any]:
        name = self.name
        qid, entry = item
        where = f"{qid!r}"
        require_keys(entry, ("imageId", "question", "answer"), name, path, where)
        extra = {"full_answer": entry["fullAnswer"]} if "fullAnswer" in entry else {}
        extra.update(_structural(entry))
        return self.question(
            qid,
            f"{entry['imageId']}.jpg",
            _text(entry["question"], name, path, where, "question"),
            answer_list(entry["answer"], name, path, where),
            **extra,
        )


def _structural(entry: Dict[str, Any]) -> Dict[str, Any]:
    types = entry.get("types")
    return {"structural": types["structural"]} if isinstance(types, dict) and "structural" in types else {}


# OCR-VQA's dataset.json marks each image's split with a number.
OCRVQA_SPLIT_CODES = {1: "train", 2: "val", 3: "test"}


class OCRVQADataset(QuestionAnswerDataset):
    """OCR-VQA's ``dataset.json``: ``{"<image key>": {"imageURL", "questions", "answers", "split", ...}}``.

    One sample per (question, answer) pair of each image whose ``split`` code (1 train, 2 val,
    3 test) is in ``split_codes``. The image is ``{image key}{extension of imageURL}``, the name
    the dataset's own download script saves it under. Samples carry ``"title"`` and ``"genre"``
    when the entry has them; ``question_id`` is ``"{image key}#{n}"``. A malformed image entry
    is left out as a whole.
    """

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        *args: Any,
        split_codes: Iterable[int] = (1,),
        **kwargs: Any,
    ) -> None:
        super().__init__(name, *args, **kwargs)
        self.split_codes = sorted({int(c) for c in split_codes})
        for path in ann_paths:
            data = load_json(path, name)
            if not isinstance(data, dict):
                raise DatasetError(
                    f"dataset {name!r}: {path} must hold OCR-VQA's object keyed by image, got {type(data).__name__}"
                )
            self.add_records(path, data.items(), partial(self._parse, path))
        if not self.records:
            codes = ", ".join(f"{c} ({OCRVQA_SPLIT_CODES.get(c, '?')})" for c in self.split_codes)
            raise DatasetError(f"dataset {name!r}: no image in {', '.join(ann_paths)} has split code {codes}")

    def _parse(self, path: str, i: int, item: Tuple[str, Any]) -> List[Dict[str, Any]]:
        name = self.name
        key, entry = item
        where = f"{key!r}"
        require_keys(entry, ("imageURL", "questions", "answers", "split"), name, path, where)
        if entry["split"] not in self.split_codes:
            return []
        questions, answers = entry["questions"], entry["answers"]
        if not isinstance(questions, list) or not isinstance(answers, list) or len(questions) != len(answers):
            raise DatasetError(
                f"{_where(name, path, where)}: 'questions' and 'answers' must be lists of equal length, "
                f"got {len(questions) if isinstance(questions, list) else questions!r} questions and "
                f"{len(answers) if isinstance(answers, list) else answers!r} answers"
            )
        image = key + self._extension(entry["imageURL"])
        extra = {k: entry[k] for k in ("title", "genre") if k in entry}
        return [
            self.question(
                f"{key}#{n}",
                image,
                _text(question, name, path, f"{where} question {n}", "questions"),
                answer_list(answer, name, path, f"{where} question {n}", "answers"),
                **extra,
            )
            for n, (question, answer) in enumerate(zip(questions, answers))
        ]

    @staticmethod
    def _extension(url: Optional[str]) -> str:
        ext = os.path.splitext(urlparse(str(url or "")).path)[1]
        return ext or ".jpg"
