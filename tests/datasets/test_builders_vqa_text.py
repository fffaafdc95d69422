"""VQA, TextCaps, LLaVA detail/reason and Unnatural Instructions builders on fixtures in their real formats.

Images come from the synthetic generator, so questions and answers are about what the pictures
really show; each annotation file is written in the layout its dataset ships in.
"""

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torch.utils.data import DataLoader

from minigpt.common.registry import registry
from minigpt.datasets.builders import BaseDatasetBuilder
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.datasets import DatasetError, load_prompts
from minigpt.datasets.synthetic.scenes import make_example

REPO = Path(__file__).resolve().parents[2]
PH = "<Img><ImageHere></Img>"
SIZE = 16
SMALL = {
    "vis_processor": {
        "train": {"name": "image_eval", "image_size": SIZE},
        "eval": {"name": "image_eval", "image_size": SIZE},
    }
}

NEW_BUILDERS = [
    "okvqa",
    "aokvqa",
    "gqa",
    "ocrvqa",
    "textcaps",
    "llava_detail",
    "llava_reason",
    "unnatural_instruction",
]
# every builder defined in the modules this test covers: all must carry catalogue metadata
CATALOGUED = NEW_BUILDERS + [
    "coco_vqa",
    "cc_sbu",
    "laion",
    "cc_sbu_align",
    "coco_caption",
    "llava_conversation",
    "synthetic_caption_wds",
    "synthetic_cc_sbu_align",
    "synthetic_coco_caption",
    "synthetic_vqa",
    "synthetic_refcoco",
    "synthetic_invrefcoco",
    "synthetic_llava",
]
VQA_TEMPLATES = load_prompts("prompts/vqa.txt", slot=True)
CAPTION_PROMPTS = load_prompts("prompts/caption.txt")


# -- fixture helpers ---------------------------------------------------------------------------


def _examples(n, split="train"):
    """Synthetic scenes with their images, questions and captions (seeded, 32 px)."""
    return [make_example(seed=0, split=split, index=i, image_size=32) for i in range(n)]


def _save(image, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _build(name, root, cfg=None, splits=("train",)):
    """The builder's datasets for ``splits`` (only train by default; ``None``: every split it lists)."""
    cls = registry.get_builder_class(name)
    small = SMALL if "vis_processor" in cls.default_config() else {}  # text-only sets have no image keys
    builder = cls({**small, **(cfg or {})}, data_root=str(root))
    return builder.build_datasets(splits)


def _split_tag_and_question(instruction, tag="[vqa]"):
    prefix = f"{PH} {tag} "
    assert instruction.startswith(prefix), instruction
    return instruction[len(prefix) :]


def _is_template_of(text, question):
    return any(text == t.format(question) for t in VQA_TEMPLATES)


# -- defaults, metadata, registration ----------------------------------------------------------


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("name", NEW_BUILDERS)
def test_default_yaml_is_relative_commented_and_builds(name, tmp_path):
    cls = registry.get_builder_class(name)
    assert issubclass(cls, BaseDatasetBuilder) and cls.name() == name
    path = cls.default_config_path()
    assert os.path.isfile(path) and path.endswith(os.path.join("datasets", name, "defaults.yaml"))
    with open(path) as f:
        text = f.read()
    raw = yaml.safe_load(text)
    assert list(raw["datasets"]) == [name]
    for value in _strings(raw):
        assert not os.path.isabs(value) and not value.startswith("~") and "://" not in value, value
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped not in ("datasets:", f"{name}:"):
            assert "#" in stripped, f"{name}: undocumented line {line!r}"
    cfg = cls.default_config()
    if cfg.get("prompt_file") is not None:
        assert load_prompts(cfg.prompt_file, slot=cls.TASK == "vqa")
    builder = cls(None, data_root=str(tmp_path))
    assert "train" in builder.splits()


@pytest.mark.parametrize("name", CATALOGUED)
def test_catalogue_metadata(name):
    cls = registry.get_builder_class(name)
    for attr in ("TASK", "FORMAT", "APPROX_SIZE"):
        value = getattr(cls, attr, None)
        assert isinstance(value, str) and value.strip(), f"{name}.{attr}"
    assert cls.TASK in {"vqa", "caption", "refer", "identify", "conversation", "text_instruction"}
    doc = inspect.getdoc(cls)
    assert doc and doc.splitlines()[0].strip(), f"{name}: no description line"
    assert f"``{name}``" in doc, f"{name}: the docstring does not give the registered name"
    if name.startswith("synthetic_"):  # a synthetic copy describes its own files, not the real dataset's
        parent = cls.__mro__[1]
        assert cls.FORMAT != parent.FORMAT and cls.APPROX_SIZE != parent.APPROX_SIZE
        assert cls.TASK == parent.TASK


# -- OK-VQA ------------------------------------------------------------------------------------


def _okvqa_fixture(root, n=3):
    rows = []
    for ex in _examples(n):
        _save(ex.image, root / f"coco/images/train2014/COCO_train2014_{ex.index:012d}.jpg")
        q = ex.questions[0]
        rows.append(
            {
                "question_id": 5000 + ex.index,
                # ten annotators: the right answer wins 6 to 4 although a wrong one is listed first
                "answer": ["something else"] * 2 + [q["answer"]] * 6 + ["something else"] * 2,
                "image": f"train2014/COCO_train2014_{ex.index:012d}.jpg",
                "question": q["question"],
                "question_type": q["question_type"],
                "dataset": "okvqa",
            }
        )
    _json(root / "okvqa/okvqa_train.json", rows)
    return rows


def test_okvqa_reads_lavis_json(tmp_path):
    rows = _okvqa_fixture(tmp_path)
    ds = _build("okvqa", tmp_path)["train"]
    assert len(ds) == 3
    for i, row in enumerate(rows):
        s = ds[i]
        assert _is_template_of(_split_tag_and_question(s["instruction_input"]), row["question"])
        assert s["answer"] == row["answer"][2]  # the most frequent, not the first listed
        assert s["answers"] == row["answer"]
        assert s["image"].shape == (3, SIZE, SIZE)
        assert s["sample_id"] == f"okvqa:{row['question_id']}" and s["question_id"] == row["question_id"]
        assert s["task"] == "vqa" and s["question_type"] == row["question_type"]
    # the default prompt list is drawn per sample, deterministically
    again = _build("okvqa", tmp_path)["train"]
    assert [again[i]["instruction_input"] for i in range(3)] == [ds[i]["instruction_input"] for i in range(3)]
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_samples)))
    assert batch["image"].shape == (3, 3, SIZE, SIZE) and batch["answer"] == [r["answer"][2] for r in rows]


def test_okvqa_without_prompt_file_is_plain_question(tmp_path):
    rows = _okvqa_fixture(tmp_path, n=1)
    s = _build("okvqa", tmp_path, {"prompt_file": None})["train"][0]
    assert s["instruction_input"] == f"{PH} [vqa] {rows[0]['question']}"


def test_okvqa_image_last_puts_the_question_before_the_image(tmp_path):
    """``image_last``: "[vqa] question <Img><ImageHere></Img>", the same question, answer and image."""
    _okvqa_fixture(tmp_path)
    first = _build("okvqa", tmp_path, {"prompt_file": None})["train"]
    last = _build("okvqa", tmp_path, {"prompt_file": None, "image_last": True})["train"]
    assert len(first) == len(last) == 3
    for a, b in zip(first, last):
        question = _split_tag_and_question(a["instruction_input"])
        assert b["instruction_input"] == f"[vqa] {question} {PH}"
        assert b["answer"] == a["answer"] and b["question_type"] == a["question_type"]
        assert (b["image"] == a["image"]).all()
    # a text-only set has no image to place: the instruction is the tag and the question
    text = _build("okvqa", tmp_path, {"prompt_file": None, "image_last": True, "data_type": "text"})["train"]
    assert text[0]["instruction_input"] == f"[vqa] {_split_tag_and_question(first[0]['instruction_input'])}"


# -- A-OKVQA -----------------------------------------------------------------------------------


def _aokvqa_rows(examples):
    rows = []
    for ex in examples:
        q = ex.questions[0]
        rows.append(
            {
                "split": "train",
                "image_id": ex.index + 1,
                "question_id": f"aok{ex.index}",
                "question": q["question"],
                "choices": [q["answer"], "nothing", "a dog", "blue sky"],
                "correct_choice_idx": 0,
                "direct_answers": ["nothing"] * 3 + [q["answer"]] * 7,
                "difficult_direct_answer": False,
                "rationales": ["The picture shows it.", "It is visible.", "Look at the shape."],
            }
        )
    return rows


def test_aokvqa_reads_lavis_and_official_image_naming(tmp_path):
    examples = _examples(2)
    rows = _aokvqa_rows(examples)
    # LAVIS's copy names COCO 2014 files in "image"; the official release gives image_id + split
    lavis = dict(rows[0], image=f"train2014/COCO_train2014_{rows[0]['image_id']:012d}.jpg")
    official = rows[1]
    _save(examples[0].image, tmp_path / "coco/images" / lavis["image"])
    _save(examples[1].image, tmp_path / f"coco/images/train2017/{official['image_id']:012d}.jpg")
    _json(tmp_path / "aokvqa/aokvqa_v1p0_train.json", [lavis, official])

    ds = _build("aokvqa", tmp_path)["train"]
    assert len(ds) == 2
    for i, row in enumerate(rows):
        s = ds[i]
        assert _is_template_of(_split_tag_and_question(s["instruction_input"]), row["question"])
        assert s["answer"] == examples[i].questions[0]["answer"]  # 7 of 10 direct answers
        assert s["answers"] == row["direct_answers"]
        assert s["choices"] == row["choices"] and s["correct_choice_idx"] == 0
        assert s["image"].shape == (3, SIZE, SIZE)
        assert s["sample_id"] == f"aokvqa:{row['question_id']}"
    assert "rationales" not in ds[0]


# -- GQA ---------------------------------------------------------------------------------------


def test_gqa_reads_lavis_list_and_official_object(tmp_path):
    examples = _examples(2)
    for ex in examples:
        _save(ex.image, tmp_path / f"gqa/images/n{ex.index}.jpg")
    lavis = [
        {
            "image": f"n{ex.index}.jpg",
            "question": ex.questions[0]["question"],
            "answer": ex.questions[0]["answer"],
            "question_id": str(2000 + ex.index),
        }
        for ex in examples
    ]
    official = {
        f"0{3000 + ex.index}": {
            "imageId": f"n{ex.index}",
            "question": ex.questions[-1]["question"],
            "answer": ex.questions[-1]["answer"],
            "fullAnswer": f"The answer is {ex.questions[-1]['answer']}.",
            "isBalanced": True,
        }
        for ex in examples
    }
    _json(tmp_path / "gqa/train_balanced_questions.json", lavis)
    _json(tmp_path / "gqa/testdev_balanced_questions.json", official)
    data = _build("gqa", tmp_path, {"prompt_file": None}, splits=None)
    train, test = data["train"], data["test"]
    assert len(train) == 2 and len(test) == 2
    s = train[1]
    assert s["instruction_input"] == f"{PH} [vqa] {examples[1].questions[0]['question']}"
    assert s["answer"] == examples[1].questions[0]["answer"] and s["answers"] == [s["answer"]]
    assert s["sample_id"] == "gqa:2001" and s["image"].shape == (3, SIZE, SIZE)
    t = test[0]
    assert t["instruction_input"] == f"{PH} [vqa] {examples[0].questions[-1]['question']}"
    assert t["answer"] == examples[0].questions[-1]["answer"]
    assert t["sample_id"] == "gqa:03000" and t["full_answer"].startswith("The answer is")
    # the same image read through both formats is the same tensor
    assert (train[0]["image"] == test[0]["image"]).all()


# -- OCR-VQA -----------------------------------------------------------------------------------


def _ocrvqa_fixture(root):
    examples = _examples(3)
    data = {}
    for ex, split, ext in zip(examples, (1, 1, 3), (".jpg", ".png", ".jpg")):
        key = f"00{ex.index}1234"
        _save(ex.image, root / f"ocrvqa/images/{key}{ext}")
        data[key] = {
            "imageURL": f"http://ecx.images-amazon.com/images/I/{key}{ext}",
            "questions": [q["question"] for q in ex.questions[:2]],
            "answers": [q["answer"] for q in ex.questions[:2]],
            "title": f"Book {ex.index}",
            "authorName": "A. Writer",
            "genre": "Shapes",
            "split": split,
        }
    _json(root / "ocrvqa/dataset.json", data)
    return examples, data


def test_ocrvqa_reads_dataset_json_by_split_code(tmp_path):
    examples, data = _ocrvqa_fixture(tmp_path)
    built = _build("ocrvqa", tmp_path, {"prompt_file": None}, splits=None)
    train, test = built["train"], built["test"]
    assert len(train) == 4 and len(test) == 2  # two questions per image; images 0, 1 train, 2 test
    keys = list(data)
    s = train[3]  # second question of the second image, stored as .png
    assert s["instruction_input"] == f"{PH} [vqa] {examples[1].questions[1]['question']}"
    assert s["answer"] == examples[1].questions[1]["answer"]
    assert s["sample_id"] == f"ocrvqa:{keys[1]}#1" and s["title"] == "Book 1" and s["genre"] == "Shapes"
    assert s["image"].shape == (3, SIZE, SIZE)
    assert test[0]["sample_id"] == f"ocrvqa:{keys[2]}#0"

    both = _build("ocrvqa", tmp_path, {"build_info": {"splits": {"train": [1, 3]}}}, splits=None)
    assert list(both) == ["train"] and len(both["train"]) == 6
    with pytest.raises(DatasetError, match=r"no image .*split code 2 \(val\)"):
        _build("ocrvqa", tmp_path, {"build_info": {"splits": {"train": [2]}}})
    with pytest.raises(DatasetError, match=r"splits\.train.*\[7\]"):
        _build("ocrvqa", tmp_path, {"build_info": {"splits": {"train": [7]}}})


def test_ocrvqa_unequal_questions_and_answers_drop_that_image(tmp_path):
    _, data = _ocrvqa_fixture(tmp_path)
    key = list(data)[0]
    data[key]["answers"] = data[key]["answers"][:1]
    _json(tmp_path / "ocrvqa/dataset.json", data)
    ds = _build("ocrvqa", tmp_path)["train"]
    assert [ds[i]["sample_id"] for i in range(len(ds))] == [f"ocrvqa:{list(data)[1]}#{n}" for n in (0, 1)]
    (bad,) = ds.malformed_records
    assert bad["path"] == str(tmp_path / "ocrvqa/dataset.json")
    assert re.search(rf"entry '{key}' of .*dataset\.json.*equal length", bad["error"]), bad["error"]


# -- TextCaps ----------------------------------------------------------------------------------


def _textcaps_entry(ex, caption_id, caption, references=None):
    image_id = f"{ex.index:04d}abcd"
    entry = {
        "image_id": image_id,
        "image_classes": ["Shape"],
        "flickr_original_url": "https://example.org/x.jpg",
        "image_width": 32,
        "image_height": 32,
        "set_name": "train",
        "image_name": image_id,
        "image_path": f"train/{image_id}.jpg",
        "caption_id": caption_id,
        "caption_str": caption,
        "caption_tokens": caption.lower().split(),
    }
    if references is not None:
        entry["reference_strs"] = references
    return entry


def test_textcaps_train_one_per_caption_and_eval_one_per_image(tmp_path):
    examples = _examples(2)
    for ex in examples:
        _save(ex.image, tmp_path / f"textcaps/train_images/{ex.index:04d}abcd.jpg")
    a, b = examples
    train = [
        _textcaps_entry(a, 10, a.caption),
        _textcaps_entry(a, 11, f"The  sign says {a.caption}"),
        _textcaps_entry(b, 12, b.caption),
    ]
    refs = [b.caption, "Another reference.", "A third one."]
    val = [_textcaps_entry(b, 20, b.caption, refs), _textcaps_entry(b, 21, "Another reference.", refs)]
    _json(tmp_path / "textcaps/TextCaps_0.1_train.json", {"dataset_type": "train", "data": train})
    _json(tmp_path / "textcaps/TextCaps_0.1_val.json", {"dataset_type": "val", "data": val})

    data = _build("textcaps", tmp_path, splits=None)
    ds, test = data["train"], data["test"]
    assert len(ds) == 3 and len(test) == 1
    s = ds[1]
    assert s["instruction_input"].startswith(f"{PH} [caption] ")
    assert s["instruction_input"][len(PH) + len(" [caption] ") :] in CAPTION_PROMPTS
    assert s["answer"] == f"The sign says {a.caption}"  # through the text processor: spaces collapsed
    assert s["sample_id"] == "textcaps:0000abcd#11" and s["task"] == "caption"
    assert s["image"].shape == (3, SIZE, SIZE)
    t = test[0]
    assert t["captions"] == refs and t["answer"] == b.caption and t["image_id"] == "0001abcd"


# -- LLaVA detail / reason ---------------------------------------------------------------------


def _llava_single_turn(examples, question_of):
    return [
        {
            "id": f"{ex.index:012d}",
            "image": f"{ex.index:012d}.jpg",
            "conversations": [
                {"from": "human", "value": question_of(ex)},
                {"from": "gpt", "value": f"{ex.caption}\nNothing else is in the picture."},
            ],
        }
        for ex in examples
    ]


@pytest.mark.parametrize(
    "name,file", [("llava_detail", "detail_23k.json"), ("llava_reason", "complex_reasoning_77k.json")]
)
def test_llava_single_turn_files_give_strings(name, file, tmp_path):
    examples = _examples(2)
    for ex in examples:
        _save(ex.image, tmp_path / f"coco/images/train2017/{ex.index:012d}.jpg")
    # LLaVA puts "<image>" before or after the first question
    rows = _llava_single_turn(
        examples, lambda ex: "<image>\nDescribe the image." if ex.index == 0 else "Why is it here?\n<image>"
    )
    _json(tmp_path / f"llava/{file}", rows)
    ds = _build(name, tmp_path)["train"]
    assert len(ds) == 2
    s0, s1 = ds[0], ds[1]
    assert s0["instruction_input"] == f"{PH} Describe the image."
    assert s1["instruction_input"] == f"{PH} Why is it here?"
    assert s0["answer"] == f"{examples[0].caption}\nNothing else is in the picture."  # newlines kept
    assert s0["sample_id"] == f"{name}:000000000000" and s0["task"] == "conversation"
    assert s0["image"].shape == (3, SIZE, SIZE)
    batch = collate_samples([s0, s1])
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and isinstance(batch["instruction_input"][0], str)

    # a multi-turn entry is malformed here (its later turns would be lost): left out, and named
    rows[1]["conversations"] += [{"from": "human", "value": "More?"}, {"from": "gpt", "value": "No."}]
    _json(tmp_path / f"llava/{file}", rows)
    ds = _build(name, tmp_path)["train"]
    assert len(ds) == 1 and ds[0]["sample_id"] == f"{name}:000000000000"
    (bad,) = ds.malformed_records
    assert re.search(rf"entry 1 \(id '000000000001'\) of .*{file}.*2 human/gpt pairs", bad["error"])
    _json(tmp_path / f"llava/{file}", rows[1:])  # a file of nothing but such entries is the wrong file
    with pytest.raises(DatasetError, match="llava_conversation"):
        _build(name, tmp_path)


def test_llava_conversation_still_gives_lists(tmp_path):
    examples = _examples(1)
    _save(examples[0].image, tmp_path / "coco/images/train2017/000000000000.jpg")
    _json(tmp_path / "llava/conversation_58k.json", _llava_single_turn(examples, lambda ex: "<image>\nWhat?"))
    s = _build("llava_conversation", tmp_path)["train"][0]
    assert s["instruction_input"] == [f"{PH} What?"] and isinstance(s["answer"], list)


# -- Unnatural Instructions --------------------------------------------------------------------


UNNATURAL = [
    {
        "instruction": "Sort the numbers.",
        "instances": [
            {
                "instruction_with_input": "Sort these numbers from smallest to largest: 3, 1, 2.",
                "input": "3, 1, 2",
                "constraints": "Answer with a comma-separated list.",
                "output": "1, 2, 3",
            }
        ],
        "reformulations": [],
    },
    {
        "instruction": "Write code.",
        "instances": [
            {
                "instruction_with_input": "Write a Python function that adds two numbers.",
                "input": "",
                "constraints": None,
                "output": "def add(a, b):\n    return a + b",
            },
            {
                "instruction_with_input": "Name a primary colour.",
                "input": "",
                "constraints": None,
                "output": "Red.",
            },
        ],
    },
]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_unnatural_instruction_text_only(fmt, tmp_path):
    path = tmp_path / f"unnatural_instructions/data.{fmt}"
    if fmt == "json":
        _json(path, UNNATURAL)
    else:
        os.makedirs(path.parent, exist_ok=True)
        path.write_text("\n".join(json.dumps(r) for r in UNNATURAL) + "\n\n")
    cfg = {"build_info": {"annotations": {"train": [f"unnatural_instructions/data.{fmt}"]}}}
    ds = _build("unnatural_instruction", tmp_path, cfg)["train"]
    assert len(ds) == 3  # one sample per instance
    s = ds[0]
    assert s["image"] is None and PH not in s["instruction_input"]
    assert s["instruction_input"] == (
        "Sort these numbers from smallest to largest: 3, 1, 2. Answer with a comma-separated list."
    )
    assert s["answer"] == "1, 2, 3" and s["task"] == "text_instruction"
    assert s["sample_id"] == "unnatural_instruction:0.0" and ds[2]["sample_id"] == "unnatural_instruction:1.1"
    assert ds[1]["instruction_input"] == "Write a Python function that adds two numbers."  # no "None"
    assert ds[1]["answer"] == "def add(a, b):\n    return a + b"  # code keeps its lines and indent
    batch = collate_samples([ds[0], ds[1]])
    assert batch["image"] is None and len(batch["answer"]) == 2

    with pytest.raises(ValueError, match="data_type must be 'text'"):
        _build("unnatural_instruction", tmp_path, {**cfg, "data_type": "images"})


def test_unnatural_instruction_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "u/core_data.jsonl"
    os.makedirs(path.parent)
    path.write_text(json.dumps(UNNATURAL[0]) + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"line 2 of .*core_data\.jsonl"):
        _build("unnatural_instruction", tmp_path, {"build_info": {"annotations": {"train": [str(path)]}}})


# -- malformed annotations: left out, counted, and named by file and record ------------------
# Each maker writes the malformed record first, then good ones (``only_bad``: the bad one alone),
# and returns (builder, pattern the error must match, samples the good records give).


def _malformed_okvqa(root, only_bad):
    rows = _okvqa_fixture(root)
    del rows[0]["answer"]
    _json(root / "okvqa/okvqa_train.json", rows[:1] if only_bad else rows)
    return "okvqa", r"entry 0 of .*okvqa_train\.json lacks key\(s\) answer", 2


def _malformed_aokvqa(root, only_bad):
    rows = _aokvqa_rows(_examples(2))
    for row in rows:
        row["image"] = "train2014/x.jpg"
    del rows[0]["direct_answers"]
    _json(root / "aokvqa/aokvqa_v1p0_train.json", rows[:1] if only_bad else rows)
    return "aokvqa", r"entry 0 of .*aokvqa_v1p0_train\.json lacks key\(s\) direct_answers", 1


def _malformed_aokvqa_image(root, only_bad):
    rows = _aokvqa_rows(_examples(2))
    del rows[0]["split"]  # neither "image" nor image_id + split: no way to find the picture
    _json(root / "aokvqa/aokvqa_v1p0_train.json", rows[:1] if only_bad else rows)
    return "aokvqa", r"entry 0 of .*aokvqa_v1p0_train\.json lacks key\(s\) split", 1


def _malformed_gqa_official(root, only_bad):
    data = {"07": {"imageId": "n1", "answer": "yes"}}
    if not only_bad:
        data["08"] = {"imageId": "n1", "question": "Is it red?", "answer": "yes"}
    _json(root / "gqa/train_balanced_questions.json", data)
    return "gqa", r"entry '07' of .*train_balanced_questions\.json lacks key\(s\) question", 1


def _malformed_gqa_lavis(root, only_bad):
    rows = [{"image": "n1.jpg", "question": "Is it?", "answer": 3}]
    if not only_bad:
        rows.append({"image": "n1.jpg", "question": "Is it red?", "answer": "yes"})
    _json(root / "gqa/train_balanced_questions.json", rows)
    return "gqa", r"entry 0 \(question_id 0\) of .*train_balanced_questions\.json.*'answer'", 1


def _malformed_ocrvqa(root, only_bad):
    _, data = _ocrvqa_fixture(root)
    key = list(data)[0]
    del data[key]["imageURL"]
    _json(root / "ocrvqa/dataset.json", {key: data[key]} if only_bad else data)
    return "ocrvqa", rf"entry '{key}' of .*dataset\.json lacks key\(s\) imageURL", 2


def _malformed_textcaps(root, only_bad):
    ex = _examples(1)[0]
    bad = _textcaps_entry(ex, 1, "caption")
    del bad["caption_str"]  # as in TextCaps' test file
    rows = [bad] if only_bad else [bad, _textcaps_entry(ex, 0, "ok")]
    _json(root / "textcaps/TextCaps_0.1_train.json", {"data": rows})
    return "textcaps", r"entry 0 of .*TextCaps_0\.1_train\.json lacks key\(s\) caption_str", 1


def _malformed_llava_detail(root, only_bad):
    rows = _llava_single_turn(_examples(2), lambda ex: "<image>\nDescribe.")
    del rows[0]["conversations"]
    _json(root / "llava/detail_23k.json", rows[:1] if only_bad else rows)
    return "llava_detail", r"entry 0 of .*detail_23k\.json lacks key\(s\) conversations", 1


def _malformed_unnatural(root, only_bad):
    rows = json.loads(json.dumps([UNNATURAL[1], UNNATURAL[0]]))
    del rows[0]["instances"][1]["output"]  # one bad instance drops its whole record
    _json(root / "unnatural_instructions/filtered_unnatural_instruction.json", rows[:1] if only_bad else rows)
    return (
        "unnatural_instruction",
        r"entry 0 instance 1 of .*filtered_unnatural_instruction\.json lacks key\(s\) output",
        1,
    )


MALFORMED = [
    _malformed_okvqa,
    _malformed_aokvqa,
    _malformed_aokvqa_image,
    _malformed_gqa_official,
    _malformed_gqa_lavis,
    _malformed_ocrvqa,
    _malformed_textcaps,
    _malformed_llava_detail,
    _malformed_unnatural,
]


@pytest.mark.parametrize("make", MALFORMED)
def test_malformed_record_is_left_out_and_named(make, tmp_path):
    name, pattern, good = make(tmp_path, only_bad=False)
    ds = _build(name, tmp_path)["train"]
    assert len(ds) == good
    (bad,) = ds.malformed_records
    assert bad["dataset"] == name and bad["index"] == 0
    assert bad["path"].startswith(str(tmp_path))  # the full path, not just the file name
    assert re.search(pattern, bad["error"]), bad["error"]
    assert f"dataset {name!r}" in bad["error"]


@pytest.mark.parametrize("make", MALFORMED)
def test_file_of_only_malformed_records_is_an_error(make, tmp_path):
    name, pattern, _ = make(tmp_path, only_bad=True)
    with pytest.raises(DatasetError, match=pattern) as info:
        _build(name, tmp_path)
    assert f"dataset {name!r}" in str(info.value) and str(tmp_path) in str(info.value)


# -- scripts/convert_vqa_to_lavis.py -----------------------------------------------------------


def _load_converter():
    spec = importlib.util.spec_from_file_location(
        "convert_vqa_to_lavis", REPO / "scripts" / "convert_vqa_to_lavis.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _official_okvqa(root, examples):
    questions = {
        "data_subtype": "train2014",
        "questions": [
            {"image_id": ex.index + 7, "question": ex.questions[0]["question"], "question_id": 70 + ex.index}
            for ex in examples
        ],
    }
    annotations = {
        "data_subtype": "train2014",
        "annotations": [
            {
                "image_id": ex.index + 7,
                "question_id": 70 + ex.index,
                "question_type": "eight",
                "answer_type": "other",
                "answers": [
                    {"answer": a, "raw_answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                    for k, a in enumerate([ex.questions[0]["answer"]] * 8 + ["unsure"] * 2)
                ],
            }
            for ex in reversed(examples)  # the annotation file's order need not match the questions'
        ],
    }
    _json(root / "raw/questions.json", questions)
    _json(root / "raw/annotations.json", annotations)


def test_convert_official_vqa_files_then_read_with_okvqa(tmp_path):
    examples = _examples(2)
    _official_okvqa(tmp_path, examples)
    for ex in examples:
        _save(ex.image, tmp_path / f"coco/images/train2014/COCO_train2014_{ex.index + 7:012d}.jpg")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "convert_vqa_to_lavis.py"),
            "--questions",
            str(tmp_path / "raw/questions.json"),
            "--annotations",
            str(tmp_path / "raw/annotations.json"),
            "--out",
            str(tmp_path / "okvqa/okvqa_train.json"),
            "--dataset",
            "okvqa",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 questions" in proc.stdout
    rows = json.loads((tmp_path / "okvqa/okvqa_train.json").read_text())
    assert rows[0]["image"] == "train2014/COCO_train2014_000000000007.jpg"
    assert rows[0]["dataset"] == "okvqa" and rows[0]["question_type"] == "eight"
    ds = _build("okvqa", tmp_path, {"prompt_file": None})["train"]
    for i, ex in enumerate(examples):
        s = ds[i]
        assert s["instruction_input"] == f"{PH} [vqa] {ex.questions[0]['question']}"
        assert s["answer"] == ex.questions[0]["answer"] and len(s["answers"]) == 10
        assert s["sample_id"] == f"okvqa:{70 + i}" and s["image"].shape == (3, SIZE, SIZE)


def test_converter_names_question_without_annotation(tmp_path):
    conv = _load_converter()
    examples = _examples(1)
    _official_okvqa(tmp_path, examples)
    questions = json.loads((tmp_path / "raw/questions.json").read_text())
    questions["questions"][0]["question_id"] = 999
    with pytest.raises(
        conv.ConversionError, match=r"no annotation for question_id 999 \(question 0 of q\.json\)"
    ):
        conv.convert(
            questions, json.loads((tmp_path / "raw/annotations.json").read_text()), "okvqa", "q.json"
        )
    assert conv.main(["--questions", str(tmp_path / "nope.json"), "--annotations", "x", "--out", "y"]) == 2
