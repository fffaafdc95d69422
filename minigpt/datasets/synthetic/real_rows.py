"""The synthetic scenes as the rows of the further real formats MiniGPT-v2's / TinyGPT-V's mixtures read.

Each function takes the examples of one split (:class:`Example`, texts only) and returns the JSON
object of one annotation file in that dataset's published layout (see ``dataset/*.md`` and the
readers under ``minigpt/datasets/datasets/``). Every row derives from the same scene as the
generator's caption, VQA and RefCOCO rows: GQA and A-OKVQA ask the VQA questions, TextCaps and
LLaVA's descriptions use the caption, Flickr30k's phrases and Visual Genome's regions are the
referring expressions with their boxes. Images are named ``<split>/<index>.jpg`` (``.jpg``
dropped where the format names an image by id), relative to each dataset's image root.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence

from minigpt.datasets.synthetic.files import ANN_IDS_PER_IMAGE, QUESTION_IDS_PER_IMAGE, VQA_ANSWER_REPEATS
from minigpt.datasets.synthetic.scenes import (
    COLOURS,
    KINDS,
    QUESTION_TYPES,
    Example,
    make_grounded_caption,
    referring_expression,
)

OCRVQA_SPLIT_CODE = {"train": 1, "test": 3}
SYNTHETIC_URL = "http://synthetic.invalid/"  # image URLs whose last two parts name the image file

# Candidate answers of each question type, for A-OKVQA's multiple choice.
_CHOICES: Dict[str, List[str]] = {
    "color": list(COLOURS),
    "shape": list(KINDS),
    "count": ["1", "2", "3", "4"],
    "exist": ["yes", "no"],
    "position": ["yes", "no"],
}


def _choices(q: Dict[str, str]) -> List[str]:
    """The candidate answers of question ``q``; an ``absent`` question's refusal stands among the answers its
    present-shape twin would have (colours for "what color ...", shapes for "what shape ...")."""
    if q["question_type"] == "absent":
        return list(KINDS) if q["question"].startswith("what shape") else list(COLOURS)
    return _CHOICES[q["question_type"]]
N_CHOICES = 4
_GROUNDED_PHRASE = re.compile(r"<p>[^<]*</p> \{[^}]*\}")

DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "Give an elaborate explanation of the image you see.",
    "What do you see in this picture? Describe every shape.",
)


def image_stem(ex: Example) -> str:
    """``train/000012``: the image name without ``.jpg``, for formats that add the extension."""
    return ex.image_name[: -len(".jpg")]


def question_id(ex: Example, q: Dict[str, str]) -> int:
    return ex.index * QUESTION_IDS_PER_IMAGE + QUESTION_TYPES.index(q["question_type"])


def coco_image_id(ex: Example, n_train: int) -> int:
    """The RefCOCO image id of ``ex``: train images first, then test."""
    return ex.index if ex.split == "train" else n_train + ex.index


def _conversation(turns: Sequence[Sequence[str]]) -> List[Dict[str, str]]:
    out = []
    for n, (question, answer) in enumerate(turns):
        out.append({"from": "human", "value": ("<image>\n" if n == 0 else "") + question})
        out.append({"from": "gpt", "value": answer})
    return out


def _asked(ex: Example) -> List[Dict[str, str]]:
    """The questions in the example's conversation order."""
    return [ex.questions[i] for i in ex.conversation_order]


def multiple_choice(ex: Example, q: Dict[str, str]) -> List[str]:
    """Up to four choices for question ``q``, the right one among them; its place varies with the image."""
    others = [c for c in _choices(q) if c != q["answer"]]
    choices = [q["answer"]] + others[: N_CHOICES - 1]
    shift = ex.index % len(choices)  # the right answer's place: every one of them, image by image
    return choices[-shift:] + choices[:-shift] if shift else choices


# -- VQA formats ---------------------------------------------------------------------------------
def aokvqa_rows(examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """A-OKVQA: the VQA questions with up to four choices; the right one's place varies with the image."""
    rows = []
    for ex in examples:
        for q in ex.questions:
            qid = question_id(ex, q)
            choices = multiple_choice(ex, q)
            rows.append(
                {
                    "question_id": str(qid),
                    "question": q["question"],
                    "choices": choices,
                    "correct_choice_idx": choices.index(q["answer"]),
                    "direct_answers": [q["answer"]] * VQA_ANSWER_REPEATS,
                    "image": ex.image_name,
                }
            )
    return rows


def gqa_rows(examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """GQA in LAVIS's list, with GQA's structural type (yes/no questions ``verify``, others ``query``)."""
    return [
        {
            "question_id": str(question_id(ex, q)),
            "question": q["question"],
            "answer": q["answer"],
            "image": ex.image_name,
            "types": {"structural": "verify" if q["answer"] in ("yes", "no") else "query"},
        }
        for ex in examples
        for q in ex.questions
    ]


def ocrvqa_entries(examples: Sequence[Example]) -> Dict[str, Dict[str, Any]]:
    """OCR-VQA's ``dataset.json`` entries (keyed by image) of one split.

    The shapes carry no text to read, so each image's questions are its VQA questions; its
    ``title`` is the caption (OCR-VQA's book title), its ``genre`` a constant.
    """
    return {
        image_stem(ex): {
            "imageURL": SYNTHETIC_URL + ex.image_name,
            "questions": [q["question"] for q in ex.questions],
            "answers": [q["answer"] for q in ex.questions],
            "title": ex.caption,
            "genre": "Synthetic Shapes",
            "split": OCRVQA_SPLIT_CODE[ex.split],
        }
        for ex in examples
    }


# -- captions and instructions -------------------------------------------------------------------
def textcaps_file(examples: Sequence[Example]) -> Dict[str, Any]:
    """TextCaps' ``{"data": [...]}``: one caption per image, also its only reference."""
    return {
        "dataset_type": "synthetic",
        "data": [
            {
                "image_id": image_stem(ex),
                "caption_id": ex.index,
                "caption_str": ex.caption,
                "reference_strs": [ex.caption],
                "image_width": ex.scene.width,
                "image_height": ex.scene.height,
            }
            for ex in examples
        ],
    }


def llava_detail_rows(examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """LLaVA's ``detail_23k.json``: a description request answered by the caption."""
    return [
        {
            "id": image_stem(ex),
            "image": ex.image_name,
            "conversations": _conversation([(DETAIL_PROMPTS[ex.index % len(DETAIL_PROMPTS)], ex.caption)]),
        }
        for ex in examples
    ]


def llava_reason_rows(examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """LLaVA's ``complex_reasoning_77k.json``: one question, answered with the caption as the reason."""
    rows = []
    for ex in examples:
        q = _asked(ex)[0]
        answer = f"{q['answer'].capitalize()}. The image shows {ex.caption}"
        rows.append(
            {
                "id": image_stem(ex),
                "image": ex.image_name,
                "conversations": _conversation([(q["question"], answer)]),
            }
        )
    return rows


def multitask_conversation_rows(examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """MiniGPT-v2's multi-task conversations: caption, the VQA questions, then ``[refer]`` turns (one
    answered with a box, one refused: a shape the picture lacks).

    MiniGPT-v2's file names the image by COCO id alone; these rows also give ``image``, which
    :class:`~minigpt.datasets.datasets.multitask_datasets.MultiTaskConversationDataset` prefers.
    """
    rows = []
    for ex in examples:
        turns = [("Briefly describe this image.", ex.caption)]
        turns += [(q["question"], q["answer"]) for q in _asked(ex)]
        ref = ex.refs()[0]
        turns.append((f"[refer] where is {ref['expression']}?", ref["box_text"]))
        if ex.absent_ref is not None:  # and one for a shape the picture lacks
            turns.append((f"[refer] where is {ex.absent_ref[0]}?", ex.absent_ref[1]))
        rows.append({"id": image_stem(ex), "image": ex.image_name, "conversations": _conversation(turns)})
    return rows


def unnatural_instruction_rows(examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """Unnatural Instructions, text only: a question answered from the caption given in the instruction."""
    rows = []
    for ex in examples:
        q = _asked(ex)[0]
        instruction = (
            f"Answer the question from the description.\nDescription: {ex.caption}\nQuestion: {q['question']}"
        )
        rows.append(
            {
                "instruction": "Answer the question from the description.",
                "instances": [
                    {
                        "instruction_with_input": instruction,
                        "input": ex.caption,
                        "constraints": None,
                        "output": q["answer"],
                    }
                ],
            }
        )
    return rows


# -- grounding -----------------------------------------------------------------------------------
def flickr_files(examples: Sequence[Example]) -> Dict[str, List[Dict[str, Any]]]:
    """MiniGPT-v2's three filtered Flickr30k files, keyed by file name."""
    grounded, caption_to_phrase, phrase_to_box = [], [], []
    for ex in examples:
        stem = image_stem(ex)
        caption = make_grounded_caption(ex.scene)
        grounded.append({"image_id": stem, "grounded_caption": caption})
        # the caption's own phrases with their boxes, in the caption's order
        phrases = _GROUNDED_PHRASE.findall(caption)
        caption_to_phrase.append({"image_id": stem, "caption": ex.caption, "output": " ".join(phrases)})
        phrase_to_box += [
            {"image_id": stem, "phrase": ref["expression"], "bbox": ref["box_text"]} for ref in ex.refs()
        ]
    return {
        "groundedcaption.json": grounded,
        "captiontobbox.json": caption_to_phrase,
        "phrasetobbox.json": phrase_to_box,
    }


def visual_genome_files(examples: Sequence[Example], n_train: int) -> Dict[str, List[Dict[str, Any]]]:
    """Visual Genome's ``region_descriptions.json`` and ``image_data.json``: one region per shape."""
    regions, image_data = [], []
    for ex in examples:
        image_id = coco_image_id(ex, n_train)
        image_data.append(
            {
                "image_id": image_id,
                "url": SYNTHETIC_URL + ex.image_name,
                "width": ex.scene.width,
                "height": ex.scene.height,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        rows = []
        for k, obj in enumerate(ex.scene.objects):
            x1, y1, x2, y2 = obj["box"]
            rows.append(
                {
                    "region_id": image_id * ANN_IDS_PER_IMAGE + k,
                    "image_id": image_id,
                    "phrase": referring_expression(obj),
                    "x": x1,
                    "y": y1,
                    "width": x2 - x1,
                    "height": y2 - y1,
                }
            )
        regions.append({"id": image_id, "regions": rows})
    return {"region_descriptions.json": regions, "image_data.json": image_data}
