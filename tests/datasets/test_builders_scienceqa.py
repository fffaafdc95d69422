"""LaVIN's data: the ScienceQA (QCM -> ALE) and Alpaca builders, their synthetic copies, and how their samples are scored."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from minigpt.common.io import DatasetError
from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.base_dataset import IMAGE_PLACEHOLDER
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.tasks.evaluation.scorers import SAMPLES_SCORER
from minigpt.tasks.evaluation.sources import sample_record

NAMES = ["scienceqa", "alpaca", "synthetic_scienceqa", "synthetic_alpaca"]
SMALL = {"vis_processor": {"train": {"name": "image_eval", "image_size": 32},
                           "eval": {"name": "image_eval", "image_size": 32}}}


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _problem(**fields):
    base = {"question": "Which animal's feet are also adapted for grabbing prey?", "choices": ["bald eagle", "cat"],
            "answer": 0, "hint": "", "image": None, "lecture": "Feet help animals move.\nSome grab prey.",
            "solution": "Look at the picture.", "subject": "natural science", "grade": "grade4"}
    return {**base, **fields}


@pytest.fixture
def release(tmp_path) -> Path:
    """A small ScienceQA release: an image problem with a hint, a text-only one, a language one, a bad pid."""
    problems = {
        "1": _problem(image="image.png", hint="Eagles eat fish."),
        "2": _problem(question="Which word comes first?", choices=["dog", "cat", "emu"], answer=1, lecture="",
                      solution="", subject="language science", grade="grade9"),
        "3": _problem(subject="social science", grade="grade11", image="image.png"),
    }
    _json(tmp_path / "scienceqa" / "problems.json", problems)
    _json(tmp_path / "scienceqa" / "pid_splits.json", {"train": ["1", "2", "3"], "val": ["2", "404"], "test": []})
    for pid in ("1", "3"):
        path = tmp_path / "scienceqa" / "images" / "train" / pid / "image.png"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    _json(tmp_path / "scienceqa" / "captions.json", {"captions": {"1": "A bird on a branch."}})
    return tmp_path


def _build(name, root, cfg=None, splits=("train",)):
    cls = registry.get_builder_class(name)
    small = SMALL if "vis_processor" in cls.default_config() else {}
    return cls({**small, **(cfg or {})}, data_root=str(root)).build_datasets(splits)


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_a_documented_default_yaml_and_catalogue_entry(name, tmp_path):
    cls = registry.get_builder_class(name)
    assert issubclass(cls, BaseDatasetBuilder) and cls.name() == name
    text = Path(cls.default_config_path()).read_text()
    assert list(yaml.safe_load(text)["datasets"]) == [name]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped not in ("datasets:", f"{name}:"):
            assert "#" in stripped, f"{name}: undocumented line {line!r}"
    for attr in ("TASK", "FORMAT", "APPROX_SIZE"):
        assert isinstance(getattr(cls, attr), str) and getattr(cls, attr).strip()
    assert f"``{name}``" in inspect.getdoc(cls)
    assert "train" in cls(None, data_root=str(tmp_path)).splits()


def test_scienceqa_gives_lavin_qcm_ale_samples(release):
    ds = _build("scienceqa", release)["train"]
    assert len(ds) == 3
    image, text = ds[0], ds[1]
    assert image["instruction_input"] == (
        f"{IMAGE_PLACEHOLDER} Question: Which animal's feet are also adapted for grabbing prey?\n"
        "Context: Eagles eat fish.\nOptions: (A) bald eagle (B) cat\nResponse:"
    )
    # LaVIN writes newlines inside the lecture as the two characters \n
    assert image["answer"] == "The answer is A. BECAUSE: Feet help animals move.\\nSome grab prey. Look at the picture."
    assert isinstance(image["image"], torch.Tensor) and image["image"].shape == (3, 32, 32)
    assert image["task"] == "scienceqa" and image["sample_id"] == "scienceqa:1"
    assert image["scienceqa"] == {"answer": 0, "choices": ["bald eagle", "cat"], "subject": "natural science",
                                  "grade": "G1-6", "has_text": True, "has_image": True, "no_context": False}
    # text-only: no image, no placeholder, context N/A, and no empty BECAUSE
    assert text["image"] is None
    assert text["instruction_input"] == (
        "Question: Which word comes first?\nContext: N/A\nOptions: (A) dog (B) cat (C) emu\nResponse:"
    )
    assert text["answer"] == "The answer is B."
    assert text["scienceqa"]["no_context"] and text["scienceqa"]["grade"] == "G7-12"


def test_scienceqa_options_captions_image_only_answer_alone(release):
    cfg = {"build_info": {"captions_file": "scienceqa/captions.json"}, "output_format": "A", "image_only": True}
    ds = _build("scienceqa", release, cfg)["train"]
    assert [s["sample_id"] for s in ds] == ["scienceqa:1", "scienceqa:3"]
    assert "Context: Eagles eat fish. A bird on a branch.\n" in ds[0]["instruction_input"]
    assert ds[0]["answer"] == "The answer is A."
    text = _build("scienceqa", release, {"data_type": "text"})["train"]
    assert all(s["image"] is None and IMAGE_PLACEHOLDER not in s["instruction_input"] for s in text)



def test_scienceqa_solution_first_format_ends_with_the_answer_the_scorer_reads(release):
    ds = _build("scienceqa", release, {"output_format": "EA"})["train"]
    assert ds[0]["answer"] == "Look at the picture. The answer is A."  # the solution, then the answer sentence
    assert ds[1]["answer"] == "The answer is B."  # no solution: the answer sentence alone
    records = [sample_record(str(i), ds[i]) for i in range(2)]
    rows = [SAMPLES_SCORER.score(r, p) for r, p in zip(records, [ds[0]["answer"], "cat comes first. The answer is A."])]
    assert [r["score"] for r in rows] == [1.0, 0.0]
    with pytest.raises(ValueError, match="output_format must be one of ALE, A, EA"):
        _build("scienceqa", release, {"output_format": "AE"})

def test_scienceqa_bad_entries_are_skipped_and_counted_or_named(release):
    ds = _build("scienceqa", release, splits=("val",))["val"]
    assert len(ds) == 1 and len(ds.malformed_records) == 1
    assert "problem '404'" in ds.malformed_records[0]["error"] and "no such pid" in ds.malformed_records[0]["error"]
    root = release / "scienceqa"
    problems = json.loads((root / "problems.json").read_text())
    problems["2"]["answer"] = 3
    _json(root / "problems.json", problems)
    _json(root / "pid_splits.json", {"train": ["2"]})
    with pytest.raises(DatasetError, match=r"problem '2'.*'answer' must index the 3 choices, got 3"):
        _build("scienceqa", release)
    with pytest.raises(DatasetError, match=r"pid_splits.json has no split 'val' \(it has train\)"):
        _build("scienceqa", release, splits=("val",))
    with pytest.raises(ValueError, match="image_path.*may only use"):
        _build("scienceqa", release, {"build_info": {"image_path": "{split}/{problem}"}})


def test_alpaca_uses_lavin_wording_and_skips_bad_entries(tmp_path):
    rows = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "", "input": "x", "output": "y"},
    ]
    _json(tmp_path / "alpaca" / "alpaca_data.json", rows)
    ds = _build("alpaca", tmp_path)["train"]
    assert len(ds) == 2 and len(ds.malformed_records) == 1 and "entry 2" in ds.malformed_records[0]["error"]
    assert ds[0] == {"image": None, "instruction_input": "Instruction: Give three tips for staying healthy.\nResponse:",
                     "answer": "Eat well.", "sample_id": "alpaca:0", "task": "text_instruction"}
    assert ds[1]["instruction_input"] == "Instruction: Translate to French. Good morning\nResponse:"
    with pytest.raises(ValueError, match="data_type must be 'text'"):
        _build("alpaca", tmp_path, {"data_type": "images"})


def test_in_training_evaluation_scores_scienceqa_samples_with_the_table(release):
    ds = _build("scienceqa", release)["train"]
    records = [sample_record(str(i), ds[i]) for i in range(len(ds))]
    predictions = ["The answer is A. BECAUSE: eagles", "The answer is A.", "The answer is A."]  # right, wrong, right
    rows = [SAMPLES_SCORER.score(r, p) for r, p in zip(records, predictions)]
    got = SAMPLES_SCORER.aggregate(records, rows)
    assert got["scienceqa_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert got["scienceqa_accuracy_img"] == 1.0 and got["scienceqa_accuracy_text_only"] == 0.0
    assert got["scienceqa_accuracy_lan"] == 0.0 and got["scienceqa_accuracy_soc"] == 1.0
    assert got["scienceqa_accuracy_no"] == 0.0 and got["scienceqa_accuracy_txt"] == 1.0


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_synthetic_dataset(root / "synthetic", n_train=20, n_test=10, seed=0, shard_size=10, progress=False)
    return root


def test_synthetic_builders_read_the_generated_files(synthetic_root):
    sqa = _build("synthetic_scienceqa", synthetic_root, splits=None)
    assert {k: len(v) for k, v in sqa.items()} == {"train": 40, "val": 4, "test": 16}
    assert not any(ds.malformed_records for ds in sqa.values())
    train = [sqa["train"][i] for i in range(len(sqa["train"]))]
    with_image = [s for s in train if s["image"] is not None]
    assert len(with_image) == 20 and with_image[0]["image"].shape == (3, 32, 32)
    assert all(s["instruction_input"].startswith(IMAGE_PLACEHOLDER) for s in with_image)
    columns = {(s["scienceqa"]["has_text"], s["scienceqa"]["has_image"]) for s in train}
    assert columns == {(False, True), (True, False), (False, False)}  # IMG, TXT and NO problems
    assert {s["scienceqa"]["subject"] for s in train} == {"natural science", "social science", "language science"}
    assert all(s["answer"].startswith("The answer is ") and " BECAUSE: " in s["answer"] for s in train)
    alpaca = _build("synthetic_alpaca", synthetic_root, splits=None)
    assert {k: len(v) for k, v in alpaca.items()} == {"train": 5, "test": 2}
    assert alpaca["train"][0]["instruction_input"].startswith("Instruction: ")


def test_synthetic_text_problems_are_right_and_deterministic(synthetic_root):
    from minigpt.datasets.synthetic.lavin_files import alpaca_entry, text_problem
    from minigpt.datasets.synthetic.scenes import COLOURS

    assert text_problem(0, "train", 7) == text_problem(0, "train", 7) != text_problem(1, "train", 7)
    for i in range(50):
        p = text_problem(0, "test", i)
        right = p["choices"][p["answer"]]
        assert len(set(p["choices"])) == len(p["choices"]) >= 2
        if p["category"] == "compare":
            assert int(right) == max(map(int, p["choices"]))
        elif p["category"] == "count_words":
            assert int(right) == len(p["hint"][len("Sentence: "):-1].split())
        elif p["category"] == "alphabet":
            assert right == min(p["choices"])
        elif p["category"] == "colour_word":
            assert right in COLOURS and not set(p["choices"]) - {right} & set(COLOURS)
        elif p["category"] == "directions":
            a, b = p["question"][len("Is "):-1].split(" the opposite of ")
            assert (right == "yes") == ({a, b} in ({"left", "right"}, {"above", "below"}))
    kinds = {text_problem(0, "train", i)["category"] for i in range(200)}
    assert kinds == {"compare", "alphabet", "count_words", "colour_word", "directions"}
    entry = alpaca_entry(0, "train", 1)
    assert entry["output"] == ", ".join(map(str, sorted(int(n) for n in entry["input"].split(", "))))
    assert os.path.isfile(synthetic_root / "synthetic" / "sqa" / "problems.json")


def test_synthetic_image_problems_keep_yes_no_in_one_order_and_the_right_place_varies():
    from minigpt.datasets.synthetic.lavin_files import image_problem
    from minigpt.datasets.synthetic.scenes import iter_examples

    problems = [image_problem(ex) for ex in iter_examples(120, seed=0, split="train")]
    yes_no = [p for p in problems if p["category"] in ("exist", "position")]
    assert yes_no and all(p["choices"] == ["yes", "no"] for p in yes_no)
    assert {p["answer"] for p in yes_no} == {0, 1}  # yes and no both right, so both places are
    others = [p for p in problems if p["category"] not in ("exist", "position")]
    assert len({p["answer"] for p in others if len(p["choices"]) == 4}) == 4  # rotated: every place


def test_scienceqa_builder_reads_the_real_layout_with_its_defaults(real_layout_root):
    """The synthetic root laid out as the release (``--real-layout``): every split, PNG images per problem."""
    built = _build("scienceqa", real_layout_root, splits=None)
    assert set(built) == {"train", "val", "test"} and all(len(ds) for ds in built.values())
    assert not any(ds.malformed_records for ds in built.values())
    train = built["train"]
    samples = [train[i] for i in range(4)]  # image and text-only problems alternate
    assert [s["image"] is None for s in samples] == [False, True, False, True]
    assert samples[0]["image"].shape == (3, 32, 32)


def test_synthetic_text_problems_use_words_the_shipped_tokenizer_keeps_whole():
    """Each choice and counted word is one token, so a random tiny LLM can learn the problems (docs/lavin.md)."""
    from minigpt.datasets.synthetic.lavin_files import text_problem
    from minigpt.models.parts.llms.hf_causal_lm import load_tokenizer

    tok = load_tokenizer()
    space = tok(" ", add_special_tokens=False)["input_ids"]  # a digit follows a bare space token
    for i in range(100):
        p = text_problem(0, "train", i)
        words = p["choices"] + (p["hint"][len("Sentence: "):-1].split() if p["category"] == "count_words" else [])
        for w in words:
            ids = [t for t in tok(" " + w, add_special_tokens=False)["input_ids"] if t not in space]
            assert len(ids) == 1, (i, w)
