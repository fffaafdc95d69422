"""Image-generation readers on files in the released layouts: PhotoChat, MMC4, (caption, image) pairs."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from minigpt.common.constants import TARGET_IMAGE_KEY
from minigpt.common.io import DatasetError
from minigpt.common.registry import registry
from minigpt.common.t2i import image_spans
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.datasets.synthetic.caption_drawing import parse_caption

NAMES = ["photochat", "mmc4", "t2i_pairs", "synthetic_photochat", "synthetic_mmc4", "synthetic_t2i_pairs"]
SMALL_VIS = {"vis_processor": {"train": {"name": "image_eval", "image_size": 32},
                               "eval": {"name": "image_eval", "image_size": 32}}}


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _build(name, root, cfg=None, splits=("train",)):
    return registry.get_builder_class(name)(cfg or {}, data_root=str(root)).build_datasets(splits)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("easygen")
    generate_synthetic_dataset(root / "synthetic", n_train=8, n_test=4, seed=0, shard_size=8, progress=False, easygen=True)
    return root


# -- PhotoChat ---------------------------------------------------------------------------------------
def _turn(user, message="", share=False):
    return {"user_id": user, "message": message, "share_photo": share}


PHOTOCHAT = [
    {  # as released: the sharer (user 1) speaks first, shares mid-dialogue, both go on after
        "photo_url": "https://farm4.staticflickr.com/3129/2720431290_5fbd2c8aa5_o.jpg",
        "photo_description": "The photo has your brother Kannon. Objects in the photo: Man",
        "dialogue_id": 500,
        "dialogue": [
            _turn(1, "Hi, how are you?"), _turn(0, "Good, and you?"), _turn(0, "What have you been up to?"),
            _turn(1, "I went hiking with Kannon."), _turn(1, share=True), _turn(0, "He looks happy!"),
            _turn(1, "He was."), _turn(0, "bye"),
        ],
    },
    {"photo_url": "x.jpg", "photo_description": "a cat", "dialogue_id": 501,
     "dialogue": [_turn(0, "hi"), _turn(1, "look"), _turn(1, share=True), _turn(1, share=True)]},  # two photos
    {"photo_url": "y.jpg", "photo_description": "", "dialogue_id": 502,
     "dialogue": [_turn(0, "hi"), _turn(1, share=True)]},  # empty description
    {"photo_url": "z.jpg", "photo_description": "a dog", "dialogue_id": 503,
     "dialogue": [_turn(1, share=True), _turn(0, "nice")]},  # shared before anything was asked
    {"photo_url": "w.jpg", "photo_description": "a dog", "dialogue_id": 504,
     "dialogue": [_turn(0, "hi"), {"user_id": 1, "message": "", "share_photo": "yes"}]},  # not a bool
    {"photo_url": "v.jpg", "photo_description": "a <Img>dog</Img>", "dialogue_id": 506,
     "dialogue": [_turn(0, "hi"), _turn(1, share=True)]},  # the tags themselves in the description
]


def test_photochat_release_becomes_a_conversation_with_the_photo_as_its_description(tmp_path):
    again = {**PHOTOCHAT[0], "dialogue_id": 505}
    _json(tmp_path / "photochat" / "train" / "train_0.json", PHOTOCHAT[:3])
    _json(tmp_path / "photochat" / "train" / "train_1.json", PHOTOCHAT[3:] + [again])  # a split: a folder of files
    ds = _build("photochat", tmp_path)["train"]
    assert len(ds) == 2 and [r["kind"] for r in ds.malformed_records] == ["wrong_type"] * 5
    errors = " | ".join(r["error"] for r in ds.malformed_records)
    for needle in ("exactly one turn with share_photo true, has 2", "'photo_description' must be non-empty",
                   "shared before the other user says anything", "turn 1 must be", "holds an image tag itself"):
        assert needle in errors
    assert "dialogue 501 (entry 1) of" in errors and "train_0.json" in errors
    s = ds[0]
    assert s["image"] is None
    # the sharer's greeting before the other user spoke and the other user's last word are left out
    assert s["instruction_input"] == ["Good, and you? What have you been up to?", "He looks happy!"]
    assert s["answer"][0] == "I went hiking with Kannon. <Img>The photo has your brother Kannon. Objects in the photo: Man</Img>"
    assert s["answer"][1] == "He was."
    assert s["photo_url"].endswith("_o.jpg") and s["sample_id"] == "photochat:500"


def test_a_photochat_file_of_nothing_readable_is_an_error_naming_it(tmp_path):
    _json(tmp_path / "bad.json", PHOTOCHAT[2:4])
    with pytest.raises(DatasetError, match="bad.json"):
        _build("photochat", tmp_path, {"build_info": {"annotations": {"train": ["bad.json"]}}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no .json file"):
        _build("photochat", tmp_path, {"build_info": {"annotations": {"train": ["empty"]}}})


def test_synthetic_dialogues_answer_each_drawing_request_with_its_caption(synthetic_root):
    ds = _build("synthetic_photochat", synthetic_root, splits=("train", "test"))
    assert (len(ds["train"]), len(ds["test"])) == (8, 4)
    captions = [json.loads(line)["objects"] for line in (synthetic_root / "synthetic" / "scenes_train.jsonl").open()]
    for i in range(8):
        s = ds["train"][i]
        (span,) = [sp for a in s["answer"] for sp in image_spans(a)]
        assert span.description == s["photo_description"]
        scene = parse_caption(span.description)
        assert sorted((o["colour"], o["kind"]) for o in scene.objects) == sorted(
            (o["colour"], o["kind"]) for o in captions[i]
        )
        request = s["instruction_input"][-1]
        assert all(f"{o['colour']} {o['kind']}" in request for o in scene.objects)


# -- MMC4 --------------------------------------------------------------------------------------------
def _mmc4_release(root: Path) -> None:
    for name, colour in (("a1b2.jpg", (250, 0, 0)), ("c3d4.png", (0, 0, 250))):
        path = root / "mmc4" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), colour).save(path)
    docs = [
        {"url": "https://blog.example/post", "text_list": ["First.", "Second sentence.", "Third."],
         "image_info": [
             {"image_name": "c3d4.png", "raw_url": "https://x/c.png", "matched_text_index": 2, "matched_sim": 0.31},
             {"image_name": "a1b2.jpg", "raw_url": "https://x/a.jpg", "matched_text_index": 0, "matched_sim": 0.27},
             {"image_name": "a1b2.jpg", "raw_url": "https://x/a.jpg", "matched_text_index": 1, "matched_sim": 0.18},
         ],
         "similarity_matrix": [[0.1, 0.2, 0.31], [0.27, 0.1, 0.1], [0.1, 0.18, 0.1]]},
        {"url": "https://bad", "text_list": ["only"], "image_info": [{"image_name": "a1b2.jpg", "matched_text_index": 3}]},
    ]
    path = root / "mmc4" / "docs" / "docs_shard_0_v2.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def test_mmc4_places_each_image_before_its_matched_sentence(tmp_path):
    _mmc4_release(tmp_path)
    ds = _build("mmc4", tmp_path, SMALL_VIS)["train"]
    assert len(ds) == 1 and "matched_text_index" in ds.malformed_records[0]["error"]
    s = ds[0]
    slot = "<Img><ImageHere></Img>"
    assert s["answer"] == f"{slot} First. {slot} Second sentence. {slot} Third."
    assert s["instruction_input"] == "" and s["task"] == "interleaved"
    assert len(s["image"]) == 3 and s["image"][0].shape == (3, 32, 32)
    red, blue = s["image"][0].mean((1, 2)), s["image"][2].mean((1, 2))
    assert red[0] > red[2] and blue[2] > blue[0]  # a1b2 (red) first, c3d4 (blue) last: text order
    kept = _build("mmc4", tmp_path, {**SMALL_VIS, "min_similarity": 0.2, "max_images": 1})["train"][0]
    assert kept["answer"] == f"{slot} First. Second sentence. Third." and len(kept["image"]) == 1
    text = _build("mmc4", tmp_path, {"data_type": "text"})["train"][0]
    assert text["image"] is None and text["answer"] == "First. Second sentence. Third."


def test_mmc4_samples_train_a_tiny_model_with_several_images(synthetic_root):
    from minigpt.models import load_model

    ds = _build("synthetic_mmc4", synthetic_root)["train"]
    assert len(ds) == 4
    model = load_model("tinygptv", "tiny", is_eval=True)
    s = ds[0]
    assert len(s["image"]) == 2 and s["answer"].count("<ImageHere>") == 2
    out = model({"image": [s["image"]], "instruction_input": [s["instruction_input"]], "answer": [s["answer"]]})
    assert torch.isfinite(out["loss"])


# -- creation pairs ----------------------------------------------------------------------------------
def test_pairs_give_a_request_the_described_answer_and_the_target_image(synthetic_root):
    ds = _build("synthetic_t2i_pairs", synthetic_root, splits=("train", "test"))
    s = ds["train"][0]
    assert s["image"] is None and s[TARGET_IMAGE_KEY].shape == (3, 64, 64)
    assert s["answer"] == f"<Img>{s['caption']}</Img>" and s["caption"] in s["instruction_input"]
    assert s["instruction_input"] != s["caption"]  # a prompt of prompts/draw.txt around it
    again = _build("synthetic_t2i_pairs", synthetic_root)["train"][0]
    assert again["instruction_input"] == s["instruction_input"]  # the same prompt for the same sample
    plain = _build("synthetic_t2i_pairs", synthetic_root, {"prompt_file": None, "answer_template": "{} <dream>"})
    assert plain["train"][0]["instruction_input"] == s["caption"]
    assert plain["train"][0]["answer"] == f"{s['caption']} <dream>"
    with pytest.raises(ValueError, match="answer_template must hold exactly one"):
        _build("synthetic_t2i_pairs", synthetic_root, {"answer_template": "no slot"})


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


def test_the_easygen_files_are_written_only_with_the_flag_and_listed_in_the_manifest(synthetic_root, tmp_path):
    from minigpt.datasets.synthetic import is_complete
    from minigpt.datasets.synthetic.__main__ import main

    manifest = json.loads((synthetic_root / "synthetic" / "manifest.json").read_text())
    assert manifest["easygen"] is True
    assert manifest["files"]["photochat_train"] == "photochat/train/dialogues.json"
    assert manifest["counts"]["mmc4_test"] == 2 and manifest["counts"]["photochat_test"] == 4
    assert main(["--out", str(tmp_path / "plain"), "--n-train", "2", "--n-test", "1", "--num-workers", "0",
                 "--no-progress"]) == 0
    assert not (tmp_path / "plain" / "photochat").exists() and not (tmp_path / "plain" / "mmc4").exists()
    assert not is_complete(tmp_path / "plain", 2, 1, 0, easygen=True)
    assert is_complete(synthetic_root / "synthetic", 8, 4, 0)  # a root with the extra files serves a plain request
    assert main(["--out", str(tmp_path / "plain"), "--n-train", "2", "--n-test", "1", "--num-workers", "0",
                 "--no-progress", "--easygen"]) == 0
    again = json.loads((tmp_path / "plain" / "photochat" / "train" / "dialogues.json").read_text())
    assert again == json.loads((synthetic_root / "synthetic" / "photochat" / "train" / "dialogues.json").read_text())[:2]


def test_training_reads_the_readers_own_image_tags_and_still_skips_smuggled_slots(synthetic_root, tmp_path):
    from minigpt.datasets.datasets.base_dataset import READ_STATS_KEY, skip_bad_samples

    for name, cfg in (("synthetic_photochat", {}), ("synthetic_mmc4", SMALL_VIS), ("synthetic_t2i_pairs", SMALL_VIS)):
        wrapped = skip_bad_samples(_build(name, synthetic_root, cfg)["train"], name)
        assert all(wrapped[i][READ_STATS_KEY]["skipped"] == [] for i in range(4)), name
    # a message or a sentence carrying a slot of its own is still refused
    bad = [{**PHOTOCHAT[0], "dialogue_id": 9, "dialogue": [_turn(0, "hi <Img><ImageHere></Img>"), _turn(1, share=True)]},
           PHOTOCHAT[0]]
    _json(tmp_path / "photochat" / "test" / "x.json", bad)
    wrapped = skip_bad_samples(_build("photochat", tmp_path, splits=("test",))["test"], "photochat")
    (record,) = wrapped[0][READ_STATS_KEY]["skipped"]
    assert record["kind"] == "placeholder_in_text" and record["sample_id"] == "photochat:9"
    _mmc4_release(tmp_path)
    doc = {"url": "u", "text_list": ["a <ImageHere> b", "c"],
           "image_info": [{"image_name": "a1b2.jpg", "matched_text_index": 1}]}
    path = tmp_path / "mmc4" / "docs" / "docs_shard_0_v2.jsonl"
    path.write_text(json.dumps(doc) + "\n" + path.read_text())
    wrapped = skip_bad_samples(_build("mmc4", tmp_path, SMALL_VIS)["train"], "mmc4")
    assert wrapped[0][READ_STATS_KEY]["skipped"][0]["kind"] == "placeholder_in_text"
