"""Builders on tiny fixtures written in the real on-disk formats."""

import io
import itertools
import json
import os
import pickle
import tarfile

import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from minigpt.common.registry import registry
from minigpt.datasets.builders import BaseDatasetBuilder
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.datasets import DatasetError, MissingDataError, load_prompts

PH = "<Img><ImageHere></Img>"
SMALL = {
    "vis_processor": {
        "train": {"name": "image_eval", "image_size": 16},
        "eval": {"name": "image_eval", "image_size": 16},
    }
}

ALL_BUILDERS = [
    "cc_sbu",
    "laion",
    "cc_sbu_align",
    "coco_caption",
    "coco_vqa",
    "refcoco",
    "invrefcoco",
    "llava_conversation",
    "synthetic_caption_wds",
    "synthetic_cc_sbu_align",
    "synthetic_coco_caption",
    "synthetic_vqa",
    "synthetic_refcoco",
    "synthetic_invrefcoco",
    "synthetic_llava",
]


def _image(path, size=(24, 20), color=(255, 0, 0)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _jpeg_bytes(color, size=(20, 20)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _build(name, root, cfg, splits=None):
    builder = registry.get_builder_class(name)({**SMALL, **cfg}, data_root=str(root))
    return builder.build_datasets(splits)


def _prompt_file(tmp_path, lines, name="prompts.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- default configs ---------------------------------------------------------------------------


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize("name", ALL_BUILDERS)
def test_default_yaml_loads_is_relative_and_builds_builder(name, tmp_path):
    cls = registry.get_builder_class(name)
    assert issubclass(cls, BaseDatasetBuilder)
    path = cls.default_config_path()
    assert os.path.isabs(path) and os.path.isfile(path)
    with open(path) as f:
        raw = yaml.safe_load(f)
    assert list(raw["datasets"]) == [name]
    for value in _strings(raw):
        assert not os.path.isabs(value) and not value.startswith("~"), value
    cfg = cls.default_config()
    if cfg.get("prompt_file") is not None:
        assert load_prompts(cfg.prompt_file, slot=name.endswith("refcoco"))
    builder = cls(None, data_root=str(tmp_path))
    assert builder.splits() and "train" in builder.splits()
    if name.startswith("synthetic_"):
        for split in ("train", "eval"):
            assert cfg.vis_processor[split].name == "image_eval"
            assert cfg.vis_processor[split].image_size == 64
        assert all(
            v.startswith("synthetic/")
            for v in _strings(dict(raw["datasets"][name]["build_info"]))
            if "/" in v
        )


def test_every_default_key_has_a_comment():
    for name in ALL_BUILDERS:
        with open(registry.get_builder_class(name).default_config_path()) as f:
            for line in f:
                stripped = line.strip()
                if not stripped or stripped.startswith("#") or stripped in ("datasets:", f"{name}:"):
                    continue
                assert "#" in stripped, f"{name}: undocumented line {line!r}"


def test_unknown_config_key_is_rejected_with_suggestion(tmp_path):
    cls = registry.get_builder_class("coco_vqa")
    with pytest.raises(KeyError, match=r"anotations.*did you mean annotations"):
        cls({"build_info": {"anotations": {"train": ["x.json"]}}}, data_root=str(tmp_path))
    with pytest.raises(KeyError, match="sample_ration"):
        cls({"sample_ration": 2}, data_root=str(tmp_path))


def test_user_split_mapping_replaces_default_and_missing_splits_are_skipped(tmp_path):
    _vqa_fixture(tmp_path)
    builder = registry.get_builder_class("coco_vqa")(
        {"build_info": {"annotations": {"train": ["coco/annotations/vqa.json"]}}}, data_root=str(tmp_path)
    )
    assert builder.splits() == ["train"]
    assert builder.build_datasets(["test"]) == {}
    assert list(builder.build_datasets(["train", "test"])) == ["train"]


def test_type_key_from_the_config_system_is_accepted(tmp_path):
    builder = registry.get_builder_class("coco_vqa")({"type": "default", "sample_ratio": 0.5}, str(tmp_path))
    assert builder.sample_ratio == 0.5 and builder.config.type == "default"
    with pytest.raises(KeyError, match="no config type 'evl'"):
        registry.get_builder_class("coco_vqa")({"type": "evl"}, str(tmp_path))


# -- coco caption ---------------------------------------------------------------------------------


def _coco_caption_fixture(root):
    _image(root / "imgs/train/000000.jpg")
    _image(root / "imgs/train/000001.jpg", color=(0, 0, 255))
    _image(root / "imgs/test/000000.jpg", size=(30, 10))
    _json(
        root / "cap/train.json",
        [
            {"image": "train/000000.jpg", "caption": "A  red\nsquare.", "image_id": "0"},
            {"image": "train/000001.jpg", "caption": "A blue square.", "image_id": "1"},
            {"image": "train/000001.jpg", "caption": "Blue!", "image_id": "1"},
        ],
    )
    _json(
        root / "cap/test.json",
        [{"image": "test/000000.jpg", "caption": ["First ref.", "Second ref."], "image_id": "t0"}],
    )


def test_coco_caption_train_and_eval_samples(tmp_path):
    _coco_caption_fixture(tmp_path)
    prompts = ["Describe it.", "What is this?", "Caption it."]
    cfg = {
        "prompt_file": _prompt_file(tmp_path, prompts),
        "build_info": {
            "annotations": {"train": ["cap/train.json"], "test": ["cap/test.json"]},
            "images": "imgs",
        },
    }
    data = _build("coco_caption", tmp_path, cfg)
    train, test = data["train"], data["test"]
    assert len(train) == 3 and len(test) == 1
    s = train[0]
    assert s["image"].shape == (3, 16, 16)
    assert s["answer"] == "A red square."  # whitespace normalised, case and punctuation kept
    assert s["task"] == "caption" and s["sample_id"].startswith("coco_caption:0")
    prefix = f"{PH} [caption] "
    assert s["instruction_input"].startswith(prefix)
    assert s["instruction_input"][len(prefix) :] in prompts
    t = test[0]
    assert t["answer"] == "First ref."
    assert t["captions"] == ["First ref.", "Second ref."]
    assert t["image_id"] == "t0"
    assert "captions" not in s
    assert train.sample_ratio == 1 and train.split == "train"


def test_prompt_choice_is_deterministic_per_index_and_varies(tmp_path):
    _coco_caption_fixture(tmp_path)
    prompts = [f"prompt number {i}" for i in range(10)]
    cfg = {
        "prompt_file": _prompt_file(tmp_path, prompts),
        "build_info": {"annotations": {"train": ["cap/train.json"] * 4}, "images": "imgs"},
    }
    first = _build("coco_caption", tmp_path, cfg)["train"]
    second = _build("coco_caption", tmp_path, cfg)["train"]
    a = [first[i]["instruction_input"] for i in range(len(first))]
    b = [second[i]["instruction_input"] for i in range(len(second))]
    assert a == b
    assert [first[i]["instruction_input"] for i in range(len(first))] == a  # re-reading is stable too
    assert len(set(a)) > 1  # 12 samples over 10 prompts: a constant choice would be a bug


def test_prompt_file_must_not_hold_the_image_placeholder(tmp_path):
    _coco_caption_fixture(tmp_path)
    cfg = {
        "prompt_file": _prompt_file(tmp_path, [f"{PH} Describe."]),
        "build_info": {"annotations": {"train": ["cap/train.json"]}, "images": "imgs"},
    }
    with pytest.raises(DatasetError, match="placeholder"):
        _build("coco_caption", tmp_path, cfg)


# -- cc_sbu_align ---------------------------------------------------------------------------------


def test_cc_sbu_align_reads_image_id_paths(tmp_path):
    _image(tmp_path / "synthetic/images/train/000000.jpg")
    _image(tmp_path / "synthetic/images/train/000001.jpg")
    _json(
        tmp_path / "synthetic/cc_sbu_align/filter_cap.json",
        {
            "annotations": [
                {"image_id": "train/000000", "caption": "A red square in the middle."},
                {"image_id": "train/000001", "caption": "Another one."},
            ]
        },
    )
    data = _build("synthetic_cc_sbu_align", tmp_path, {})
    assert list(data) == ["train"]
    s = data["train"][0]
    assert s["sample_id"] == "synthetic_cc_sbu_align:train/000000"
    assert s["answer"] == "A red square in the middle."
    prompts = load_prompts("prompts/alignment.txt")
    assert s["instruction_input"].startswith(PH + " ")
    assert s["instruction_input"][len(PH) + 1 :] in prompts  # no task tag for alignment


# -- vqa ----------------------------------------------------------------------------------------


def _vqa_fixture(root, missing_image=False):
    _image(root / "coco/images/val/1.jpg")
    entries = [
        {
            "question_id": 11,
            "question": "What color is the circle?",
            "answer": ["blue", "red", "red", "blue"],
            "image": "val/1.jpg",
            "question_type": "what color",
        },
        {"question_id": 12, "question": "How many?", "answer": ["2", "3", "3"], "image": "val/1.jpg"},
    ]
    if missing_image:
        entries.append({"question_id": 13, "question": "Where?", "answer": ["left"], "image": "val/nope.jpg"})
    _json(root / "coco/annotations/vqa.json", entries)


def test_vqa_samples_tag_answers_and_eval_keys(tmp_path):
    _vqa_fixture(tmp_path)
    cfg = {"build_info": {"annotations": {"train": ["coco/annotations/vqa.json"]}}}
    ds = _build("coco_vqa", tmp_path, cfg)["train"]
    s0, s1 = ds[0], ds[1]
    assert s0["instruction_input"] == f"{PH} [vqa] What color is the circle?"
    assert s0["answer"] == "blue"  # tie between blue and red: the first listed wins
    assert s1["answer"] == "3"  # the most frequent
    assert s0["answers"] == ["blue", "red", "red", "blue"]
    assert s0["question_id"] == 11 and s0["question_type"] == "what color"
    assert "question_type" not in s1
    assert s0["task"] == "vqa" and s0["sample_id"] == "coco_vqa:11"
    batch = collate_samples([s0, s1])
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["question_type"] == ["what color", None]


def test_vqa_prompt_templates_and_text_only_data_type(tmp_path):
    _vqa_fixture(tmp_path, missing_image=True)
    cfg = {
        "prompt_file": _prompt_file(tmp_path, ["Answer briefly: {}"]),
        "build_info": {"annotations": {"train": ["coco/annotations/vqa.json"]}},
    }
    s = _build("coco_vqa", tmp_path, cfg)["train"][0]
    assert s["instruction_input"] == f"{PH} [vqa] Answer briefly: What color is the circle?"

    text_only = _build("coco_vqa", tmp_path, {**cfg, "data_type": "text", "prompt_file": None})["train"]
    s = text_only[2]  # its image file does not exist: a text dataset must not try to read it
    assert s["image"] is None and s["instruction_input"] == "[vqa] Where?"
    assert collate_samples([text_only[0], s])["image"] is None
    with pytest.raises(ValueError, match="data_type must be 'images' or 'text'"):
        _build("coco_vqa", tmp_path, {**cfg, "data_type": "video"})


def test_missing_image_error_names_path_and_sample(tmp_path):
    _vqa_fixture(tmp_path, missing_image=True)
    cfg = {"build_info": {"annotations": {"train": ["coco/annotations/vqa.json"]}}}
    ds = _build("coco_vqa", tmp_path, cfg)["train"]
    with pytest.raises(MissingDataError) as info:
        ds[2]
    message = str(info.value)
    assert "coco_vqa:13" in message
    assert os.path.join(str(tmp_path), "coco/images", "val/nope.jpg") in message


def test_corrupt_image_error_names_path_and_sample(tmp_path):
    _vqa_fixture(tmp_path)
    (tmp_path / "coco/images/val/1.jpg").write_bytes(b"definitely not a jpeg")
    cfg = {"build_info": {"annotations": {"train": ["coco/annotations/vqa.json"]}}}
    ds = _build("coco_vqa", tmp_path, cfg)["train"]
    with pytest.raises(DatasetError, match=r"coco_vqa:11.*corrupt image .*val/1\.jpg"):
        ds[0]


def test_missing_annotation_file_names_dataset_and_path(tmp_path):
    cfg = {"build_info": {"annotations": {"train": ["coco/annotations/absent.json"]}}}
    with pytest.raises(MissingDataError, match=r"coco_vqa.*absent\.json"):
        _build("coco_vqa", tmp_path, cfg)


# -- refcoco ------------------------------------------------------------------------------------


def _refcoco_fixture(root):
    _image(root / "synthetic/images/train/000000.jpg", size=(240, 160))
    _image(root / "synthetic/images/test/000000.jpg", size=(100, 50))
    refs = [
        {
            "ref_id": 7,
            "ann_id": 70,
            "image_id": 1,
            "split": "train",
            "category_id": 1,
            "sentences": [
                {"sent": "the red circle", "sent_id": 100, "raw": "The red circle", "tokens": []},
                {"sent": "circle on the left", "sent_id": 101, "raw": "Circle on the left", "tokens": []},
            ],
        },
        {
            "ref_id": 8,
            "ann_id": 80,
            "image_id": 2,
            "split": "val",
            "category_id": 1,
            "sentences": [{"sent": "blue square", "sent_id": 102}],
        },
    ]
    os.makedirs(root / "synthetic/refcoco", exist_ok=True)
    with open(root / "synthetic/refcoco/refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    _json(
        root / "synthetic/refcoco/instances.json",
        {
            "images": [
                {"id": 1, "file_name": "train/000000.jpg", "width": 240, "height": 160},
                {"id": 2, "file_name": "test/000000.jpg", "width": 100, "height": 50},
            ],
            "annotations": [
                {"id": 70, "image_id": 1, "bbox": [33, 17, 101, 46], "category_id": 1},
                {"id": 80, "image_id": 2, "bbox": [0, 0, 100, 50], "category_id": 1},
            ],
        },
    )


def test_refcoco_refer_boxes_on_the_grid(tmp_path):
    _refcoco_fixture(tmp_path)
    cfg = {"prompt_file": _prompt_file(tmp_path, ["give me the location of {}"])}
    data = _build("synthetic_refcoco", tmp_path, cfg)
    train, test = data["train"], data["test"]
    assert len(train) == 2 and len(test) == 1  # one sample per sentence, split by the refs' split names
    s = train[0]
    assert s["instruction_input"] == f"{PH} [refer] give me the location of the red circle"
    # x1 = 33/240*100 = 13.75 -> 14, y1 = 17/160*100 = 10.6 -> 11,
    # x2 = 134/240*100 = 55.8 -> 56, y2 = 63/160*100 = 39.4 -> 39
    assert s["answer"] == "{<14><11><56><39>}"
    assert s["gt_box"] == [33, 17, 134, 63] and s["image_size"] == [240, 160]
    assert s["task"] == "refer" and s["sample_id"] == "synthetic_refcoco:7:100"
    assert train[1]["instruction_input"].endswith("circle on the left")
    assert test[0]["answer"] == "{<0><0><100><100>}"


def test_refcoco_default_templates(tmp_path):
    _refcoco_fixture(tmp_path)
    s = _build("synthetic_refcoco", tmp_path, {})["train"][0]
    templates = load_prompts("prompts/refer.txt", slot=True)
    body = s["instruction_input"][len(f"{PH} [refer] ") :]
    assert body in [t.format("the red circle") for t in templates]


def test_invrefcoco_identify(tmp_path):
    _refcoco_fixture(tmp_path)
    cfg = {"prompt_file": _prompt_file(tmp_path, ["what is this {}"])}
    s = _build("synthetic_invrefcoco", tmp_path, cfg)["train"][1]
    assert s["instruction_input"] == f"{PH} [identify] what is this {{<14><11><56><39>}}"
    assert s["answer"] == "circle on the left"
    assert s["task"] == "identify" and s["gt_box"] == [33, 17, 134, 63]


def test_refcoco_split_option_and_file_names(tmp_path):
    _refcoco_fixture(tmp_path)
    os.rename(tmp_path / "synthetic/refcoco/refs(unc).p", tmp_path / "synthetic/refcoco/refs(umd).p")
    cfg = {"build_info": {"refs_file": "refs(umd).p", "splits": {"train": ["train", "val"]}}}
    data = _build("synthetic_refcoco", tmp_path, cfg)
    assert list(data) == ["train"] and len(data["train"]) == 3
    with pytest.raises(DatasetError, match=r"testA.*has \['train', 'val'\]"):
        _build(
            "synthetic_refcoco",
            tmp_path,
            {"build_info": {"refs_file": "refs(umd).p", "splits": {"test": ["testA"]}}},
        )


def test_refcoco_template_without_slot_is_rejected(tmp_path):
    _refcoco_fixture(tmp_path)
    with pytest.raises(DatasetError, match="exactly one"):
        _build("synthetic_refcoco", tmp_path, {"prompt_file": _prompt_file(tmp_path, ["where is it"])})


# -- llava --------------------------------------------------------------------------------------


def test_llava_multi_turn_lists(tmp_path):
    _image(tmp_path / "coco/images/train2017/000000033471.jpg")
    _json(
        tmp_path / "llava/conv.json",
        [
            {
                "id": "000000033471",
                "image": "000000033471.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat shape is shown?"},
                    {"from": "gpt", "value": "A circle.\nIt is red."},
                    {"from": "human", "value": "Is it large?"},
                    {"from": "gpt", "value": "No, it is small."},
                ],
            },
            {
                "id": "x2",
                "image": "000000033471.jpg",
                "conversations": [
                    {"from": "human", "value": "Describe the picture.\n<image>"},
                    {"from": "gpt", "value": "A red circle."},
                ],
            },
            {
                "id": "text-only",
                "conversations": [
                    {"from": "human", "value": "Say hi."},
                    {"from": "gpt", "value": "Hi."},
                ],
            },
        ],
    )
    ds = _build(
        "llava_conversation", tmp_path, {"build_info": {"annotations": {"train": ["llava/conv.json"]}}}
    )["train"]
    s = ds[0]
    assert s["instruction_input"] == [f"{PH} What shape is shown?", "Is it large?"]
    assert s["answer"] == ["A circle.\nIt is red.", "No, it is small."]
    assert s["task"] == "conversation" and s["sample_id"] == "llava_conversation:000000033471"
    assert s["image"].shape == (3, 16, 16)
    assert ds[1]["instruction_input"] == [f"{PH} Describe the picture."]
    text_only = ds[2]
    assert text_only["image"] is None and text_only["instruction_input"] == ["Say hi."]

    tagged = _build(
        "llava_conversation",
        tmp_path,
        {"task_tag": "[vqa]", "build_info": {"annotations": {"train": ["llava/conv.json"]}}},
    )["train"][0]
    assert tagged["instruction_input"] == [f"{PH} [vqa] What shape is shown?", "Is it large?"]


def test_llava_turn_order_is_checked(tmp_path):
    _json(
        tmp_path / "llava/bad.json",
        [
            {
                "id": "b1",
                "image": "x.jpg",
                "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "?"}],
            }
        ],
    )
    with pytest.raises(DatasetError, match=r"id 'b1'.*turn 0 must be"):
        _build("llava_conversation", tmp_path, {"build_info": {"annotations": {"train": ["llava/bad.json"]}}})


# -- webdataset shards --------------------------------------------------------------------------


def _write_shards(root, n_shards=2, per_shard=3, prefix="train"):
    keys = []
    os.makedirs(root / "cc", exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(root / f"cc/{prefix}-{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                keys.append(key)
                members = {
                    f"{key}.jpg": _jpeg_bytes((40 * i, 10 * s, 200)),
                    f"{key}.json": json.dumps({"caption": f"shape {key}  here", "key": key}).encode(),
                    f"{key}.txt": f"shape {key} here".encode(),
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return keys


def _wds_cfg(train="cc/train-{00000..00001}.tar", test="cc/train-*.tar", **extra):
    return {"build_info": {"shards": {"train": train, "test": test}, "shuffle_buffer": 4, **extra}}


def test_webdataset_train_repeats_and_test_reads_once(tmp_path):
    keys = _write_shards(tmp_path)
    data = _build("cc_sbu", tmp_path, _wds_cfg())
    train = list(itertools.islice(iter(data["train"]), 15))
    assert len(train) == 15  # more than the 6 samples on disk: the train stream repeats
    assert {s["sample_id"] for s in train} == {f"cc_sbu:{k}" for k in keys}
    s = train[0]
    key = s["sample_id"].split(":", 1)[1]
    assert s["answer"] == f"shape {key} here"
    assert s["image"].shape == (3, 16, 16) and s["task"] == "caption"
    assert s["instruction_input"][len(PH) + 1 :] in load_prompts("prompts/alignment.txt")

    test = list(data["test"])
    assert [t["sample_id"] for t in test] == [f"cc_sbu:{k}" for k in keys]  # in order, once
    assert test[0]["captions"] == [f"shape {keys[0]}  here"]
    # the prompt is a function of the sample: the same key gets the same instruction every time
    again = {t["sample_id"]: t["instruction_input"] for t in data["test"]}
    assert all(again[t["sample_id"]] == t["instruction_input"] for t in train)


def test_webdataset_split_by_node(tmp_path, monkeypatch):
    keys = _write_shards(tmp_path)
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append({s["sample_id"] for s in _build("cc_sbu", tmp_path, _wds_cfg())["test"]})
    assert len(seen[0]) == len(seen[1]) == 3 and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"cc_sbu:{k}" for k in keys}
    monkeypatch.setenv("WORLD_SIZE", "3")  # 3 ranks, 2 shards: rank 2 would starve in training
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(DatasetError, match="cannot feed rank 2/3"):
        next(iter(_build("cc_sbu", tmp_path, _wds_cfg())["train"]))


def test_webdataset_split_by_worker_in_dataloader(tmp_path):
    keys = _write_shards(tmp_path)
    ds = _build("laion", tmp_path, _wds_cfg())["test"]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_samples)
    batches = list(loader)
    ids = [sid for batch in batches for sid in batch["sample_id"]]
    assert sorted(ids) == sorted(f"laion:{k}" for k in keys)  # each shard read by exactly one worker
    assert all(batch["image"].shape[1:] == (3, 16, 16) for batch in batches)


def test_webdataset_missing_shard_and_corrupt_image(tmp_path):
    _write_shards(tmp_path)
    with pytest.raises(MissingDataError, match=r"cc_sbu.*train-00002\.tar"):
        _build("cc_sbu", tmp_path, _wds_cfg(train="cc/train-{00000..00002}.tar"))
    with pytest.raises(MissingDataError, match="matches no file"):
        _build("cc_sbu", tmp_path, _wds_cfg(test="cc/val-*.tar"))

    with tarfile.open(tmp_path / "cc/bad-00000.tar", "w") as tar:
        for name, data in {"k1.jpg": b"garbage", "k1.json": b'{"caption": "x"}'}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = _build("cc_sbu", tmp_path, _wds_cfg(test="cc/bad-00000.tar"))["test"]
    with pytest.raises(DatasetError, match=r"cc_sbu:k1.*bad-00000\.tar"):
        next(iter(ds))


def test_synthetic_caption_wds_defaults_find_glob_shards(tmp_path):
    os.makedirs(tmp_path / "synthetic", exist_ok=True)
    train_keys = _write_shards(tmp_path, n_shards=3)
    test_keys = _write_shards(tmp_path, n_shards=1, prefix="test")
    os.rename(tmp_path / "cc", tmp_path / "synthetic/cc_sbu")
    data = _build("synthetic_caption_wds", tmp_path, {})
    assert [s["sample_id"] for s in data["test"]] == [f"synthetic_caption_wds:{k}" for k in test_keys]
    first = list(itertools.islice(iter(data["train"]), len(train_keys)))
    assert {s["sample_id"].split(":", 1)[1] for s in first} <= set(train_keys)
    assert isinstance(first[0]["image"], torch.Tensor)
