"""RefCOCO+/RefCOCOg (and inverse) and the Flickr30k Entities builders on fixtures in their real formats."""

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from minigpt.common.registry import registry
from minigpt.datasets.builders import BaseDatasetBuilder
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.datasets import DatasetError, MissingDataError, load_prompts
from minigpt.datasets.synthetic import make_example

REPO = Path(__file__).resolve().parents[2]
PH = "<Img><ImageHere></Img>"
SMALL = {
    "vis_processor": {
        "train": {"name": "image_eval", "image_size": 16},
        "eval": {"name": "image_eval", "image_size": 16},
    }
}
REFER = ["refcoco", "invrefcoco", "refcocop", "invrefcocop", "refcocog", "invrefcocog"]
FLICKR = ["flickr_grounded_caption", "flickr_caption_to_phrase", "flickr_object_to_phrase"]
# name -> (refer folder, refs file, the refer toolkit's splits of that file)
REFER_LAYOUT = {
    "refcoco": ("refcoco", "refs(unc).p", ["train", "val", "testA", "testB"]),
    "refcocop": ("refcoco+", "refs(unc).p", ["train", "val", "testA", "testB"]),
    "refcocog": ("refcocog", "refs(umd).p", ["train", "val", "test"]),
}


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _build(name, root, cfg=None, splits=None):
    builder = registry.get_builder_class(name)({**SMALL, **(cfg or {})}, data_root=str(root))
    return builder.build_datasets(splits)


def _grid(v, size):
    return round(v / size * 100)  # MiniGPT-v2's grid, with this library's rounding


# -- metadata and default YAMLs ------------------------------------------------------------------


@pytest.mark.parametrize("name", REFER + FLICKR)
def test_default_yaml_is_documented_relative_and_builder_has_catalogue_metadata(name, tmp_path):
    cls = registry.get_builder_class(name)
    assert issubclass(cls, BaseDatasetBuilder)
    with open(cls.default_config_path()) as f:
        text = f.read()
    raw = yaml.safe_load(text)
    assert list(raw["datasets"]) == [name]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped not in ("datasets:", f"{name}:"):
            assert "#" in stripped, f"undocumented line {line!r}"

    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node

    assert not any(os.path.isabs(s) or s.startswith("~") for s in strings(raw))
    for attr in ("TASK", "FORMAT", "APPROX_SIZE"):
        assert isinstance(getattr(cls, attr, None), str) and getattr(cls, attr), attr
    assert (cls.__doc__ or "").strip().splitlines()[0]
    assert cls.__doc__.count(f"``{name}``") >= 1  # the docstring names the registry name
    builder = cls(None, data_root=str(tmp_path))
    assert "train" in builder.splits()
    prompt_file = builder.config.get("prompt_file")
    if prompt_file is not None:
        assert load_prompts(prompt_file, slot=name != "flickr_grounded_caption")


def test_task_metadata_matches_the_task_tag_of_each_family():
    expected = {
        "refcoco": ("refer", "[refer]"),
        "refcocop": ("refer", "[refer]"),
        "refcocog": ("refer", "[refer]"),
        "invrefcoco": ("identify", "[identify]"),
        "invrefcocop": ("identify", "[identify]"),
        "invrefcocog": ("identify", "[identify]"),
        "flickr_grounded_caption": ("grounded_caption", "[grounding]"),
        "flickr_caption_to_phrase": ("detection", "[detection]"),
        "flickr_object_to_phrase": ("detection", "[detection]"),
    }
    for name, (task, tag) in expected.items():
        cls = registry.get_builder_class(name)
        assert cls.TASK == task, name
        assert cls.default_config().task_tag == tag, name
    assert "refs(umd).p" in registry.get_builder_class("refcocog").FORMAT
    assert "refs(unc).p" in registry.get_builder_class("refcocop").FORMAT


# -- the refer family ------------------------------------------------------------------------------


def _refer_fixture(root, folder, refs_file, ref_splits, raw=True):
    """The refer toolkit's layout under the default data-root paths: one synthetic image per split.

    Each image holds 1-3 shapes; every shape is one ref with two sentences (``sent`` lower-case,
    ``raw`` as typed). Returns ``{split: [(ref, scene object), ...]}`` and the image size.
    """
    refs, images, anns, truth = [], [], [], {}
    ref_id = ann_id = sent_id = 0
    for image_id, split in enumerate(ref_splits, start=1):
        ex = make_example(seed=3, split="train", index=image_id, image_size=64)
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        path = root / "coco/images/train2014" / file_name
        os.makedirs(path.parent, exist_ok=True)
        ex.image.save(path)
        images.append({"id": image_id, "file_name": file_name, "width": 64, "height": 64})
        for obj in ex.scene.objects:
            ref_id, ann_id = ref_id + 1, ann_id + 1
            x1, y1, x2, y2 = obj["box"]
            anns.append(
                {"id": ann_id, "image_id": image_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1}
            )
            words = f"The {obj['colour']} {obj['kind']}"
            sentences = []
            for phrase in (words, f"{words} in the picture"):
                sent_id += 1
                sentence = {"sent": phrase.lower(), "sent_id": sent_id, "tokens": phrase.lower().split()}
                if raw:
                    sentence["raw"] = phrase
                sentences.append(sentence)
            ref = {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": image_id,
                "split": split,
                "category_id": 1,
                "sentences": sentences,
                "sent_ids": [s["sent_id"] for s in sentences],
            }
            refs.append(ref)
            truth.setdefault(split, []).append((ref, obj))
    ann_dir = root / "refcoco" / folder
    os.makedirs(ann_dir, exist_ok=True)
    with open(ann_dir / refs_file, "wb") as f:
        pickle.dump(refs, f, protocol=2)  # the released pickles are Python 2 protocol-2 files
    _json(ann_dir / "instances.json", {"images": images, "annotations": anns, "categories": [{"id": 1}]})
    return truth


@pytest.mark.parametrize("name", REFER)
def test_refer_family_reads_its_default_layout_with_tags_and_grid_boxes(name, tmp_path):
    base = name[3:] if name.startswith("inv") else name
    folder, refs_file, ref_splits = REFER_LAYOUT[base]
    truth = _refer_fixture(tmp_path, folder, refs_file, ref_splits)
    data = _build(name, tmp_path)  # the default YAML: train <- train, test <- val
    assert sorted(data) == ["test", "train"]
    assert len(data["train"]) == 2 * len(truth["train"]) and len(data["test"]) == 2 * len(truth["val"])
    templates = load_prompts(
        "prompts/identify.txt" if name.startswith("inv") else "prompts/refer.txt", slot=True
    )
    for i, sample in enumerate(data["train"]):
        ref, obj = truth["train"][i // 2]
        x1, y1, x2, y2 = obj["box"]
        box_text = f"{{<{_grid(x1, 64)}><{_grid(y1, 64)}><{_grid(x2, 64)}><{_grid(y2, 64)}>}}"
        expression = ref["sentences"][i % 2]["raw"]  # MiniGPT-v2 trains on the raw text: case kept
        assert sample["image"].shape == (3, 16, 16)
        assert sample["sample_id"] == f"{name}:{ref['ref_id']}:{ref['sentences'][i % 2]['sent_id']}"
        assert sample["gt_box"] == [x1, y1, x2, y2] and sample["image_size"] == [64, 64]
        if name.startswith("inv"):
            assert sample["task"] == "identify" and sample["answer"] == expression
            head = f"{PH} [identify] "
            assert sample["instruction_input"][len(head) :] in [t.format(box_text) for t in templates]
        else:
            assert sample["task"] == "refer" and sample["answer"] == box_text
            head = f"{PH} [refer] "
            assert sample["instruction_input"][len(head) :] in [t.format(expression) for t in templates]
        assert sample["instruction_input"].startswith(head)
    assert collate_samples([data["train"][0], data["test"][0]])["image"].shape == (2, 3, 16, 16)



@pytest.mark.parametrize("name", ["refcoco", "invrefcoco", "synthetic_invrefcoco"])
def test_image_last_puts_the_question_before_the_image(name, tmp_path):
    """``image_last``: "[tag] question <Img><ImageHere></Img>", same question and answer as image-first."""
    if name.startswith("synthetic"):
        from minigpt.datasets.synthetic import generate_synthetic_dataset

        generate_synthetic_dataset(tmp_path / "synthetic", n_train=4, n_test=2, seed=3, progress=False)
    else:
        _refer_fixture(tmp_path, "refcoco", "refs(unc).p", ["train", "val", "testA", "testB"])
    first = _build(name, tmp_path, splits=["train"])["train"]
    last = _build(name, tmp_path, {"image_last": True}, splits=["train"])["train"]
    tag = "[identify]" if "inv" in name else "[refer]"
    assert len(first) == len(last) > 0
    for a, b in zip(first, last):
        question = a["instruction_input"][len(f"{PH} {tag} "):]
        assert a["instruction_input"] == f"{PH} {tag} {question}"
        assert b["instruction_input"] == f"{tag} {question} {PH}"
        assert b["answer"] == a["answer"] and b["gt_box"] == a["gt_box"]
        assert (b["image"] == a["image"]).all()


def test_refcocop_reads_each_toolkit_split_it_is_given(tmp_path):
    truth = _refer_fixture(tmp_path, "refcoco+", "refs(unc).p", ["train", "val", "testA", "testB"])
    splits = {"train": ["train"], "val": ["val"], "testA": ["testA"], "testB": ["testB"]}
    data = _build("refcocop", tmp_path, {"build_info": {"splits": splits}})
    assert sorted(data) == sorted(splits)
    for split, ds in data.items():
        assert len(ds) == 2 * len(truth[split])
        ref_ids = {s["sample_id"].split(":")[1] for s in ds}
        assert ref_ids == {str(ref["ref_id"]) for ref, _ in truth[split]}
    # asking for only some splits (a run's train_splits + test_splits) builds only those
    assert list(_build("refcocop", tmp_path, {"build_info": {"splits": splits}}, ["testB"])) == ["testB"]


def test_refcocog_umd_has_a_test_split_and_google_file_reads_with_refs_file(tmp_path):
    truth = _refer_fixture(tmp_path, "refcocog", "refs(umd).p", ["train", "val", "test"])
    data = _build("refcocog", tmp_path, {"build_info": {"splits": {"test": ["test"]}}})
    assert list(data) == ["test"] and len(data["test"]) == 2 * len(truth["test"])
    # the Google split lives beside it as refs(google).p (train and val only)
    os.rename(tmp_path / "refcoco/refcocog/refs(umd).p", tmp_path / "refcoco/refcocog/refs(google).p")
    with pytest.raises(MissingDataError, match=r"refcocog.*refs\(umd\)\.p"):
        _build("refcocog", tmp_path)
    data = _build("invrefcocog", tmp_path, {"build_info": {"refs_file": "refs(google).p"}})
    assert len(data["train"]) == 2 * len(truth["train"])


def test_sentence_key_picks_raw_or_sent_and_a_missing_one_is_named(tmp_path):
    truth = _refer_fixture(tmp_path, "refcoco+", "refs(unc).p", ["train", "val"])
    ref, _ = truth["train"][0]
    one = {"prompt_file": str(tmp_path / "p.txt")}
    (tmp_path / "p.txt").write_text("locate {}\n")
    assert _build("refcocop", tmp_path, one)["train"][0]["instruction_input"].endswith(
        "locate " + ref["sentences"][0]["raw"]
    )
    sent = _build("refcocop", tmp_path, {**one, "sentence_key": "sent"})["train"][0]
    assert sent["instruction_input"].endswith("locate " + ref["sentences"][0]["sent"])
    assert ref["sentences"][0]["raw"] != ref["sentences"][0]["sent"]  # the two really differ
    with pytest.raises(ValueError, match="sentence_key must be 'sent' or 'raw'"):
        _build("refcocop", tmp_path, {"sentence_key": "tokens"})
    _refer_fixture(tmp_path, "refcoco+", "refs(unc).p", ["train", "val"], raw=False)
    with pytest.raises(DatasetError, match=r"refcocop.*ref 1 .*refs\(unc\)\.p.*lacks 'raw'"):
        _build("refcocop", tmp_path)


def test_a_malformed_ref_is_left_out_and_counted(tmp_path):
    truth = _refer_fixture(tmp_path, "refcocog", "refs(umd).p", ["train", "val", "test"])
    path = tmp_path / "refcoco/refcocog/refs(umd).p"
    with open(path, "rb") as f:
        refs = pickle.load(f)
    first_train = next(r for r in refs if r["split"] == "train")
    first_train["ann_id"] = 9999  # names an annotation instances.json does not hold
    refs.append({"ref_id": 77, "split": "train"})  # lacks its keys
    with open(path, "wb") as f:
        pickle.dump(refs, f)
    ds = _build("refcocog", tmp_path)["train"]
    assert len(ds) == 2 * (len(truth["train"]) - 1)
    assert first_train["ref_id"] not in {int(s["sample_id"].split(":")[1]) for s in ds}
    errors = [m["error"] for m in ds.malformed_records]
    assert len(errors) == 2
    assert re.search(
        r"ref \d+ in .*refs\(umd\)\.p names annotation 9999, which .*instances\.json does not hold", errors[0]
    )
    assert "lacks key(s) ann_id, image_id, sentences" in errors[1]


# -- Flickr30k Entities (MiniGPT-v2's preprocessed JSON) ------------------------------------------------


def _flickr_images(root, ids, size=(40, 20)):
    for n, image_id in enumerate(ids):
        path = root / "filtered_flickr/images" / f"{image_id}.jpg"
        os.makedirs(path.parent, exist_ok=True)
        Image.new("RGB", size, (40 * n, 100, 200)).save(path)


def _flickr_fixture(root):
    _flickr_images(root, ["1000092795", "10002456"])
    _json(
        root / "filtered_flickr/groundedcaption.json",
        [
            {
                "image_id": "1000092795",
                "grounded_caption": "<p>Two young guys</p> {<10><5><40><90>}<delim>{<45><8><70><95>} "
                "are  outside near\n<p>a bush</p> {<0><50><30><100>}.",
            },
            {"image_id": "10002456", "grounded_caption": "<p>Workers</p> {<1><2><99><98>} at work."},
        ],
    )
    _json(
        root / "filtered_flickr/captiontobbox.json",
        [
            {
                "image_id": "1000092795",
                "caption": "Two  young guys are outside near a bush.",
                "output": "<p>Two young guys</p> {<10><5><40><90>}<delim>{<45><8><70><95>} "
                "<p>a bush</p> {<0><50><30><100>}",
            }
        ],
    )
    _json(
        root / "filtered_flickr/phrasetobbox.json",
        [
            {
                "image_id": "1000092795",
                "phrase": "Two young guys",
                "bbox": "{<10><5><40><90>}<delim>{<45><8><70><95>}",
            },
            {"image_id": "10002456", "phrase": "Workers", "bbox": "{<1><2><99><98>}"},
        ],
    )


def test_flickr_grounded_caption_samples(tmp_path):
    _flickr_fixture(tmp_path)
    ds = _build("flickr_grounded_caption", tmp_path)["train"]
    assert len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (3, 16, 16)
    assert s["task"] == "grounded_caption" and s["image_id"] == "1000092795"
    assert s["sample_id"] == "flickr_grounded_caption:0:1000092795"
    assert s["answer"] == (
        "<p>Two young guys</p> {<10><5><40><90>}<delim>{<45><8><70><95>} are outside near "
        "<p>a bush</p> {<0><50><30><100>}."
    )
    head = f"{PH} [grounding] "
    assert s["instruction_input"].startswith(head)
    assert s["instruction_input"][len(head) :] in load_prompts("prompts/grounded_caption.txt")
    # a long caption is not cut at a word limit: that would cut its last box in half
    long_caption = " ".join(["word"] * 80) + " <p>a dog</p> {<1><1><2><2>}"
    _json(tmp_path / "long.json", [{"image_id": "10002456", "grounded_caption": long_caption}])
    long = _build(
        "flickr_grounded_caption", tmp_path, {"build_info": {"annotations": {"train": ["long.json"]}}}
    )
    assert long["train"][0]["answer"] == long_caption


def test_flickr_caption_to_phrase_samples_and_prompt_templates(tmp_path):
    _flickr_fixture(tmp_path)
    s = _build("flickr_caption_to_phrase", tmp_path)["train"][0]
    assert s["instruction_input"] == f"{PH} [detection] Two young guys are outside near a bush."
    assert s["answer"] == (
        "<p>Two young guys</p> {<10><5><40><90>}<delim>{<45><8><70><95>} <p>a bush</p> {<0><50><30><100>}"
    )
    assert s["task"] == "detection"
    (tmp_path / "p.txt").write_text("find every object of: {}\n")
    s = _build("flickr_caption_to_phrase", tmp_path, {"prompt_file": str(tmp_path / "p.txt")})["train"][0]
    assert (
        s["instruction_input"]
        == f"{PH} [detection] find every object of: Two young guys are outside near a bush."
    )


def test_flickr_object_to_phrase_samples(tmp_path):
    _flickr_fixture(tmp_path)
    ds = _build("flickr_object_to_phrase", tmp_path)["train"]
    s0, s1 = ds[0], ds[1]
    assert s0["instruction_input"] == f"{PH} [detection] Two young guys"
    assert s0["answer"] == "<p>Two young guys</p> {<10><5><40><90>}<delim>{<45><8><70><95>}"
    assert s0["grid_boxes"] == [[10, 5, 40, 90], [45, 8, 70, 95]]
    assert s1["answer"] == "<p>Workers</p> {<1><2><99><98>}" and s1["image_id"] == "10002456"
    assert s1["sample_id"] == "flickr_object_to_phrase:1:10002456"
    assert collate_samples([s0, s1])["image"].shape == (2, 3, 16, 16)


def test_flickr_malformed_entries_are_left_out_and_counted_naming_file_and_entry(tmp_path):
    _flickr_fixture(tmp_path)
    _json(
        tmp_path / "bad.json",
        [
            {"image_id": "10002456", "phrase": "Workers", "bbox": "{<1><2><99><98>}"},
            {"image_id": "10002456", "phrase": "Workers", "bbox": "{<1><2><99>}"},
            {"image_id": "10002456", "phrase": "Workers", "bbox": "{<1><2><199><98>}"},
            {"image_id": "1000092795", "phrase": "Two guys", "bbox": "{<10><5><40><90>}"},
        ],
    )
    cfg = {"build_info": {"annotations": {"train": ["bad.json"]}}}
    ds = _build("flickr_object_to_phrase", tmp_path, cfg)["train"]
    assert len(ds) == 2  # the good entries are read, the two bad ones left out
    assert [ds[i]["answer"] for i in range(2)] == [
        "<p>Workers</p> {<1><2><99><98>}",
        "<p>Two guys</p> {<10><5><40><90>}",
    ]
    assert [(m["index"], m["dataset"]) for m in ds.malformed_records] == [
        (1, "flickr_object_to_phrase"),
        (2, "flickr_object_to_phrase"),
    ]
    assert all(m["path"].endswith("bad.json") for m in ds.malformed_records)
    assert re.search(
        r"entry 1 of .*bad\.json.*'\{<1><2><99>\}' is not a box", ds.malformed_records[0]["error"]
    )
    assert "off the 0-100 grid" in ds.malformed_records[1]["error"]

    # a file holding no good entry is a wrong file, not bad data: an error naming its first entry
    _json(tmp_path / "nobox.json", [{"image_id": "10002456", "grounded_caption": "<p>Workers</p> at work."}])
    with pytest.raises(DatasetError, match=r"entry 0 of .*nobox\.json: no box"):
        _build(
            "flickr_grounded_caption", tmp_path, {"build_info": {"annotations": {"train": ["nobox.json"]}}}
        )
    _json(tmp_path / "unpaired.json", [{"image_id": "1", "caption": "c", "output": "<p>a {<1><1><2><2>}"}])
    with pytest.raises(DatasetError, match=r"unpaired\.json: expected <p>phrase</p> pairs"):
        _build(
            "flickr_caption_to_phrase",
            tmp_path,
            {"build_info": {"annotations": {"train": ["unpaired.json"]}}},
        )
    _json(tmp_path / "nokey.json", [{"image_id": "10002456", "caption": "Workers."}])
    with pytest.raises(DatasetError, match=r"entry 0 of .*nokey\.json lacks key\(s\) output"):
        _build(
            "flickr_caption_to_phrase", tmp_path, {"build_info": {"annotations": {"train": ["nokey.json"]}}}
        )


def test_flickr_missing_image_and_missing_prompt_file_are_named(tmp_path):
    _flickr_fixture(tmp_path)
    os.remove(tmp_path / "filtered_flickr/images/10002456.jpg")
    ds = _build("flickr_object_to_phrase", tmp_path)["train"]
    with pytest.raises(MissingDataError, match=r"flickr_object_to_phrase:1:10002456.*10002456\.jpg"):
        ds[1]
    with pytest.raises(DatasetError, match="flickr_grounded_caption.*prompt file is required"):
        _build("flickr_grounded_caption", tmp_path, {"prompt_file": None})


# -- the official Flickr30k Entities release -> MiniGPT-v2's JSON ---------------------------------


def _load_converter():
    spec = importlib.util.spec_from_file_location(
        "convert_flickr30k_entities", REPO / "scripts" / "convert_flickr30k_entities.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _xml_box(names, xmin, ymin, xmax, ymax):
    """An Annotations/*.xml <object>: one box of every entity in ``names``."""
    corners = f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
    return "<object>" + "".join(f"<name>{n}</name>" for n in names) + f"<bndbox>{corners}</bndbox></object>"


def _entities_fixture(root):
    """Two images of the official release: Sentences/<id>.txt, Annotations/<id>.xml, train.txt."""
    ent = root / "flickr30k_entities"
    (ent / "Sentences").mkdir(parents=True)
    (ent / "Annotations").mkdir()
    (ent / "Sentences/111.txt").write_text(
        "[/EN#1/people A man] in [/EN#2/clothing a red hat] walks [/EN#3/animals two dogs] "
        "in [/EN#4/scene a park] .\n"
        "[/EN#1/people The man] holds [/EN#0/notvisual his breath] near [/EN#5/other a bench] .\n"
    )
    # 200 x 100 image. Entity 1: one box shared with entity 6 (another <name>); entity 3: two boxes;
    # entity 4: a scene; entity 5: no box. Corners are 1-based inclusive.
    (ent / "Annotations/111.xml").write_text(
        "<annotation><filename>111.jpg</filename>"
        "<size><width>200</width><height>100</height><depth>3</depth></size>"
        + _xml_box(["1", "6"], 21, 11, 120, 60)
        + _xml_box(["2"], 41, 1, 80, 20)
        + _xml_box(["3"], 1, 51, 50, 100)
        + _xml_box(["3"], 151, 71, 200, 100)
        + "<object><name>4</name><scene>1</scene></object>"
        "<object><name>5</name><nobndbox>1</nobndbox></object>"
        "</annotation>"
    )
    (ent / "Sentences/222.txt").write_text("[/EN#9/scene A beach] at night .\n")
    (ent / "Annotations/222.xml").write_text(
        "<annotation><size><width>50</width><height>50</height></size>"
        "<object><name>9</name><scene>1</scene></object></annotation>"
    )
    (ent / "train.txt").write_text("111\n222\n")
    return ent


def test_converter_writes_minigptv2_json_that_the_builders_read(tmp_path):
    convert = _load_converter()
    ent = _entities_fixture(tmp_path)
    out = tmp_path / "data/filtered_flickr"
    counts = convert.convert(ent, out, split="train")
    # image 222 has no boxed phrase: it gives no entry; image 111's two sentences both ground something
    assert counts == {"groundedcaption.json": 2, "captiontobbox.json": 2, "phrasetobbox.json": 4}
    # man: [20, 10, 120, 60] px on 200 x 100 -> {<10><10><60><60>}; hat: [40, 0, 80, 20] -> {<20><0><40><20>};
    # dogs: [0, 50, 50, 100] -> {<0><50><25><100>} and [150, 70, 200, 100] -> {<75><70><100><100>}
    man, hat, dogs = (
        "{<10><10><60><60>}",
        "{<20><0><40><20>}",
        "{<0><50><25><100>}<delim>{<75><70><100><100>}",
    )
    grounded = json.loads((out / "groundedcaption.json").read_text())
    caption = f"<p>A man</p> {man} in <p>a red hat</p> {hat} walks <p>two dogs</p> {dogs} in a park."
    assert grounded[0] == {"image_id": "111", "grounded_caption": caption}
    assert grounded[1]["grounded_caption"] == f"<p>The man</p> {man} holds his breath near a bench."
    to_phrase = json.loads((out / "captiontobbox.json").read_text())
    assert to_phrase[0] == {
        "image_id": "111",
        "caption": "A man in a red hat walks two dogs in a park.",
        "output": f"<p>A man</p> {man} <p>a red hat</p> {hat} <p>two dogs</p> {dogs}",
    }
    phrases = json.loads((out / "phrasetobbox.json").read_text())
    assert [(p["phrase"], p["bbox"]) for p in phrases] == [
        ("A man", man),
        ("a red hat", hat),
        ("two dogs", dogs),
        ("The man", man),
    ]

    _flickr_images(tmp_path / "data", ["111"], size=(200, 100))
    s = _build("flickr_grounded_caption", tmp_path / "data")["train"][0]
    assert s["answer"] == grounded[0]["grounded_caption"] and s["image_id"] == "111"
    s = _build("flickr_caption_to_phrase", tmp_path / "data")["train"][0]
    assert s["instruction_input"] == f"{PH} [detection] A man in a red hat walks two dogs in a park."
    s = _build("flickr_object_to_phrase", tmp_path / "data")["train"][2]
    assert s["answer"] == f"<p>two dogs</p> {dogs}"
    assert s["grid_boxes"] == [[0, 50, 25, 100], [75, 70, 100, 100]]


def test_converter_parsing_details_and_errors(tmp_path):
    convert = _load_converter()
    segments = convert.parse_sentence("[/EN#7/people/bodyparts Her  hands] hold [/EN#8/other a cup] .")
    assert segments[0] == convert.Phrase("Her hands", "7", ("people", "bodyparts"))
    assert segments[1] == " hold " and segments[2].entity_id == "8" and segments[3] == " ."
    w, h, boxes = convert.parse_annotation(
        "<annotation><size><width>10</width><height>20</height></size>"
        + _xml_box(["1"], 1, 1, 10, 20)
        + "</annotation>"
    )
    assert (w, h, boxes) == (10, 20, {"1": [[0.0, 0.0, 10.0, 20.0]]})
    with pytest.raises(ValueError, match="no <size>"):
        convert.parse_annotation("<annotation></annotation>", "Annotations/1.xml")
    with pytest.raises(ValueError, match="Annotations/1.xml: not valid XML"):
        convert.parse_annotation("<annotation>", "Annotations/1.xml")
    # floor rounding is MiniGPT-v2's own: 27.5 -> 27 instead of 28
    size = "<size><width>200</width><height>100</height></size>"
    xml = f"<annotation>{size}{_xml_box(['1'], 56, 1, 200, 100)}</annotation>"
    assert (
        convert.convert_image("1", ["[/EN#1/people A man] ."], xml, "floor")[2][0]["bbox"]
        == "{<27><0><100><100>}"
    )
    assert (
        convert.convert_image("1", ["[/EN#1/people A man] ."], xml, "round")[2][0]["bbox"]
        == "{<28><0><100><100>}"
    )
    ent = _entities_fixture(tmp_path)
    os.remove(ent / "Annotations/222.xml")
    with pytest.raises(FileNotFoundError, match=r"Annotations/222\.xml"):
        convert.convert(ent, tmp_path / "out", split="train")


def test_converter_command_line(tmp_path):
    ent = _entities_fixture(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/convert_flickr30k_entities.py"),
            "--entities",
            str(ent),
            "--out",
            str(out),
            "--split",
            "all",
            "--limit",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "groundedcaption.json: 2 entries" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "captiontobbox.json",
        "groundedcaption.json",
        "phrasetobbox.json",
    ]
