"""The synthetic shapes generator: determinism, scene validity, and every on-disk format."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minigpt.datasets.synthetic import (
    COLOURS,
    KINDS,
    box_to_grid,
    format_box,
    generate_synthetic_dataset,
    is_complete,
    iter_examples,
    iter_texts,
    load_scenes,
    make_example,
)
from minigpt.datasets.synthetic.__main__ import main
from minigpt.datasets.synthetic.scenes import (
    MIN_BACKGROUND_DISTANCE,
    render_background,
    side_range,
    stream_rng,
)

N_TRAIN, N_TEST, SHARD, SEED, SIZE = 80, 24, 32, 7, 64
GRID = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)


def _generate(root: Path, seed: int = SEED, workers: int = 1) -> dict:
    return generate_synthetic_dataset(
        root,
        n_train=N_TRAIN,
        n_test=N_TEST,
        seed=seed,
        image_size=SIZE,
        shard_size=SHARD,
        num_workers=workers,
        progress=False,
        absent=True,  # every text the generator can write: absent-shape questions and refused [refer] turns too
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shapes")
    _generate(path, workers=1)
    return path


@pytest.fixture(scope="module")
def scenes(root) -> dict:
    """image name ("train/000000.jpg") -> Scene, for both splits."""
    out = {}
    for split in ("train", "test"):
        out.update(dict(load_scenes(root / f"scenes_{split}.jsonl")))
    return out


def _load(root: Path, rel: str):
    with open(root / rel, encoding="utf-8") as f:
        return json.load(f)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _centre(box):
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _by_name(scene):
    return {f"{o['colour']} {o['kind']}": o for o in scene.objects}


# -- determinism ---------------------------------------------------------------------------------
def test_same_seed_is_byte_identical_for_any_worker_count(root, tmp_path):
    _generate(tmp_path / "two_workers", workers=2)
    a, b = _tree(root), _tree(tmp_path / "two_workers")
    assert sorted(a) == sorted(b)
    differing = [name for name in a if a[name] != b[name]]
    assert differing == []
    # Every format is there, and nothing half-written was left behind.
    assert len([n for n in a if n.startswith("images/train/")]) == N_TRAIN
    assert not [n for n in a if ".tmp" in n]


def test_different_seed_gives_different_data(root, tmp_path):
    _generate(tmp_path / "other", seed=SEED + 1)
    other = tmp_path / "other"
    assert (root / "scenes_train.jsonl").read_bytes() != (other / "scenes_train.jsonl").read_bytes()
    same_images = sum(
        (root / "images/train" / f"{i:06d}.jpg").read_bytes()
        == (other / "images/train" / f"{i:06d}.jpg").read_bytes()
        for i in range(N_TRAIN)
    )
    assert same_images == 0


def test_manifest_and_is_complete(root):
    m = _load(root, "manifest.json")
    assert m["generator"] == "minigpt.synthetic_shapes" and m["version"] == 5
    assert (m["seed"], m["image_size"], m["n_train"], m["n_test"]) == (SEED, SIZE, N_TRAIN, N_TEST)
    assert m["files"]["cc_sbu_train"] == [f"cc_sbu/train-{i:05d}.tar" for i in range(3)]  # 80 = 32 + 32 + 16
    for rel in m["files"].values():
        for p in rel if isinstance(rel, list) else [rel]:
            assert (root / p).exists(), p
    assert is_complete(root, N_TRAIN, N_TEST, SEED, SIZE, absent=True)
    assert not is_complete(root, N_TRAIN, N_TEST, SEED, SIZE)  # generated asking about absent shapes: not this one
    assert not is_complete(root, N_TRAIN, N_TEST, SEED + 1, SIZE)
    assert not is_complete(root, N_TRAIN + 1, N_TEST, SEED, SIZE)
    assert not is_complete(root, N_TRAIN, N_TEST, SEED, 32)
    assert not is_complete(root / "missing", N_TRAIN, N_TEST, SEED, SIZE)


def test_missing_image_makes_dataset_incomplete(tmp_path):
    generate_synthetic_dataset(tmp_path, n_train=5, n_test=2, seed=1, progress=False)
    assert is_complete(tmp_path, 5, 2, 1)
    (tmp_path / "images/train/000004.jpg").unlink()
    assert not is_complete(tmp_path, 5, 2, 1)


def test_regenerating_smaller_drops_stale_shards(tmp_path):
    generate_synthetic_dataset(tmp_path, n_train=6, n_test=1, seed=0, shard_size=2, progress=False)
    assert len(list((tmp_path / "cc_sbu").glob("train-*.tar"))) == 3
    generate_synthetic_dataset(tmp_path, n_train=2, n_test=1, seed=0, shard_size=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "cc_sbu").glob("train-*.tar")) == ["train-00000.tar"]


# -- scenes and pixels ---------------------------------------------------------------------------
def test_scenes_are_valid(scenes):
    lo, hi = side_range(SIZE)
    counts = defaultdict(int)
    for name, scene in scenes.items():
        assert (scene.width, scene.height) == (SIZE, SIZE)
        objs = scene.objects
        assert 1 <= len(objs) <= 3, name
        counts[len(objs)] += 1
        assert len({(o["colour"], o["kind"]) for o in objs}) == len(objs), name
        for o in objs:
            assert o["kind"] in KINDS and o["colour"] in COLOURS
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE, (name, o)
            assert lo <= x2 - x1 <= hi and lo <= y2 - y1 <= hi, (name, o)
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                gap_x = max(b["box"][0] - a["box"][2], a["box"][0] - b["box"][2])
                gap_y = max(b["box"][1] - a["box"][3], a["box"][1] - b["box"][3])
                assert max(gap_x, gap_y) >= 2, (name, a, b)
    assert set(counts) == {1, 2, 3}


def test_shapes_have_their_colour_at_the_box_centre(root, scenes):
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    names = list(COLOURS)
    for name, scene in scenes.items():
        pixels = np.asarray(Image.open(root / "images" / name).convert("RGB"), dtype=np.float32)
        assert pixels.shape == (SIZE, SIZE, 3)
        for o in scene.objects:
            cx, cy = (int(v) for v in _centre(o["box"]))
            rgb = pixels[cy, cx]
            dist = np.linalg.norm(palette - rgb, axis=1)
            assert names[int(dist.argmin())] == o["colour"], (name, o, rgb)
            assert dist.min() < 30, (name, o, rgb)
        # A pixel outside every box is background, far from any shape colour.
        free = np.ones((SIZE, SIZE), dtype=bool)
        for o in scene.objects:
            x1, y1, x2, y2 = o["box"]
            free[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1] = False
        ys, xs = np.nonzero(free)
        bg = pixels[ys, xs]
        assert np.linalg.norm(bg[:, None, :] - palette[None], axis=2).min() > 100, name


def test_background_is_light_and_far_from_shape_colours():
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    for i in range(40):
        bg = np.asarray(render_background(stream_rng(0, "train", i, "pixels"), 48, 40), dtype=np.float32)
        assert bg.shape == (40, 48, 3)
        flat = bg.reshape(-1, 3)
        assert np.linalg.norm(flat[:, None] - palette[None], axis=2).min() >= MIN_BACKGROUND_DISTANCE
        assert flat.std(axis=0).max() > 0.5  # noise and gradient: not a flat fill


def test_train_and_test_images_share_no_pixels(root):
    def pixel_hash(path):
        return hashlib.sha256(np.asarray(Image.open(path).convert("RGB")).tobytes()).hexdigest()

    train = {pixel_hash(p) for p in (root / "images/train").glob("*.jpg")}
    test = {pixel_hash(p) for p in (root / "images/test").glob("*.jpg")}
    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert not train & test


# -- texts ---------------------------------------------------------------------------------------
def _expected_answer(scene, question: str, qtype: str) -> str:
    """Answer a question from the scene alone, parsing it independently of the generator."""
    objs = scene.objects
    if qtype == "absent":  # worded as a color/shape question, about a kind or colour the scene lacks
        kind = re.fullmatch(r"what color is the (\w+)\?", question)
        if kind:
            assert all(o["kind"] != kind.group(1) for o in objs), question
            return f"there is no {kind.group(1)}"
        colour = re.fullmatch(r"what shape is the (\w+) object\?", question).group(1)
        assert all(o["colour"] != colour for o in objs), question
        return f"there is no {colour} object"
    if qtype == "color":
        kind = re.fullmatch(r"what color is the (\w+)\?", question).group(1)
        (hit,) = [o for o in objs if o["kind"] == kind]
        return hit["colour"]
    if qtype == "shape":
        colour = re.fullmatch(r"what shape is the (\w+) object\?", question).group(1)
        (hit,) = [o for o in objs if o["colour"] == colour]
        return hit["kind"]
    if qtype == "count":
        assert question == "how many shapes are there?"
        return str(len(objs))
    if qtype == "exist":
        colour, kind = re.fullmatch(r"is there an? (\w+) (\w+)\?", question).groups()
        return "yes" if any(o["colour"] == colour and o["kind"] == kind for o in objs) else "no"
    if qtype == "position":
        m = re.fullmatch(
            r"is the (\w+ \w+) (to the left of|to the right of|above|below) the (\w+ \w+)\?", question
        )
        a, rel, b = m.groups()
        (ax, ay), (bx, by) = _centre(_by_name(scene)[a]["box"]), _centre(_by_name(scene)[b]["box"])
        delta = {"to the left of": bx - ax, "to the right of": ax - bx, "above": by - ay, "below": ay - by}[
            rel
        ]
        assert abs(delta) >= 4, question  # ambiguous pairs are never asked
        return "yes" if delta > 0 else "no"
    raise AssertionError(f"unknown question_type {qtype!r}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_vqa_answers_follow_from_the_scene(root, scenes, split):
    rows = _load(root, f"vqa/vqa_{split}.json")
    per_image = defaultdict(list)
    assert len({r["question_id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"question_id", "question", "answer", "image", "dataset", "question_type"}
        assert r["dataset"] == "synthetic_vqa" and isinstance(r["question_id"], int)
        assert r["answer"] == [r["answer"][0]] * 10
        assert r["answer"][0] == _expected_answer(scenes[r["image"]], r["question"], r["question_type"]), r
        per_image[r["image"]].append(r["question_type"])
    n = N_TRAIN if split == "train" else N_TEST
    assert len(per_image) == n
    for image, types in per_image.items():
        assert len(types) == len(set(types)), image
        assert {"count", "exist", "absent"} <= set(types), image
        kinds = [o["kind"] for o in scenes[image].objects]
        colours = [o["colour"] for o in scenes[image].objects]
        assert ("color" in types) == any(kinds.count(k) == 1 for k in kinds), image
        assert ("shape" in types) == any(colours.count(c) == 1 for c in colours), image


def test_yes_no_balance_and_hard_negatives():
    answers = defaultdict(list)
    for ex in iter_examples(400, seed=3, render=False):
        present = {(o["colour"], o["kind"]) for o in ex.scene.objects}
        for q in ex.questions:
            if q["question_type"] in ("exist", "position"):
                answers[q["question_type"]].append(q["answer"])
                assert _expected_answer(ex.scene, q["question"], q["question_type"]) == q["answer"]
            if q["question_type"] == "exist" and q["answer"] == "no":
                colour, kind = q["question"].rstrip("?").split()[-2:]
                assert any(colour == c or kind == k for c, k in present), (q, present)
    assert len(answers["exist"]) == 400 and len(answers["position"]) > 150
    for qtype, got in answers.items():
        share = got.count("yes") / len(got)
        assert 0.4 <= share <= 0.6, (qtype, share)


def test_captions_list_shapes_left_to_right_with_grid_positions(root, scenes):
    rows = _load(root, "coco_caption/coco_karpathy_train.json")
    for r in rows:
        scene = scenes[r["image"]]
        objs = sorted(scene.objects, key=lambda o: _centre(o["box"]))
        parts = []
        for o in objs:
            cx, cy = _centre(o["box"])
            pos = GRID[min(2, int(cy * 3 / SIZE))][min(2, int(cx * 3 / SIZE))]
            art = "an" if o["colour"] == "orange" else "a"
            parts.append(f"{art} {o['colour']} {o['kind']} at the {pos}")
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        head = {1: "one shape", 2: "two shapes", 3: "three shapes"}[len(objs)]
        assert r["caption"] == f"{head}: {listed}.", r
        assert r["caption"] == r["caption"].lower()


def test_grid_box_helpers():
    assert box_to_grid([0, 16, 32, 64], 64, 64) == [0, 25, 50, 100]
    assert box_to_grid([10, 10, 21, 30], 100, 50) == [10, 20, 21, 60]
    assert format_box([12, 34, 56, 78]) == "{<12><34><56><78>}"
    with pytest.raises(ValueError):
        format_box([1, 2, 3])


def test_iter_texts_is_deterministic_and_lowercase():
    texts = list(iter_texts(30, seed=5))
    assert texts == list(iter_texts(30, seed=5))
    assert texts != list(iter_texts(30, seed=6))
    assert all(t == t.lower() and t for t in texts)
    assert "how many shapes are there?" in texts and "yes" in texts
    ex = next(iter_examples(1, seed=5))
    assert texts[0] == ex.caption
    assert {f"the {o['colour']} {o['kind']}" for o in ex.scene.objects} <= set(texts)


# -- on-disk formats -----------------------------------------------------------------------------
def test_webdataset_shards(root):
    captions = {r["image"]: r["caption"] for r in _load(root, "coco_caption/coco_karpathy_train.json")}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        shards = sorted((root / "cc_sbu").glob(f"{split}-*.tar"))
        assert len(shards) == -(-n // SHARD)
        index = 0
        for shard in shards:
            with tarfile.open(shard) as tar:
                members = tar.getmembers()
                assert len(members) == 3 * min(SHARD, n - index)
                for i in range(0, len(members), 3):
                    key = f"{index:09d}"
                    assert [m.name for m in members[i : i + 3]] == [f"{key}.jpg", f"{key}.txt", f"{key}.json"]
                    jpg, txt, meta = (tar.extractfile(m).read() for m in members[i : i + 3])
                    assert jpg == (root / "images" / split / f"{index:06d}.jpg").read_bytes()
                    meta = json.loads(meta)
                    assert meta == {"caption": txt.decode("utf-8"), "key": key, "width": SIZE, "height": SIZE}
                    if split == "train":
                        assert meta["caption"] == captions[f"train/{index:06d}.jpg"]
                    assert Image.open(io.BytesIO(jpg)).size == (SIZE, SIZE)
                    index += 1
        assert index == n


def test_caption_annotation_files(root):
    align = _load(root, "cc_sbu_align/filter_cap.json")
    assert len(align["annotations"]) == N_TRAIN
    for a in align["annotations"]:
        assert set(a) == {"image_id", "caption"}
        assert (root / "images" / f"{a['image_id']}.jpg").is_file(), a
    train = _load(root, "coco_caption/coco_karpathy_train.json")
    test = _load(root, "coco_caption/coco_karpathy_test.json")
    assert len(train) == N_TRAIN and len(test) == N_TEST
    assert train[3] == {
        "image": "train/000003.jpg",
        "caption": train[3]["caption"],
        "image_id": "synthetic_train_000003",
    }
    assert isinstance(train[3]["caption"], str)
    assert test[2]["image"] == "test/000002.jpg" and isinstance(test[2]["caption"], list)
    assert test[2]["image_id"] == "synthetic_test_000002"
    assert [a["caption"] for a in align["annotations"]] == [r["caption"] for r in train]


def test_refcoco_pickle_and_instances(root, scenes):
    with open(root / "refcoco" / "refs(unc).p", "rb") as f:
        refs = pickle.load(f)
    instances = _load(root, "refcoco/instances.json")
    assert {c["name"] for c in instances["categories"]} == set(KINDS)
    cat_name = {c["id"]: c["name"] for c in instances["categories"]}
    images = {im["id"]: im for im in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    assert len(images) == N_TRAIN + N_TEST
    assert len(refs) == len(anns) == sum(len(s.objects) for s in scenes.values())
    for ref in refs:
        assert isinstance(ref["image_id"], int)
        image = images[ref["image_id"]]
        assert image["file_name"] == ref["file_name"] and (image["width"], image["height"]) == (SIZE, SIZE)
        assert ref["split"] == ("train" if image["file_name"].startswith("train/") else "val")
        ann = anns[ref["ann_id"]]
        assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]
        assert ann["iscrowd"] == 0 and ann["area"] > 0
        (sent,) = ref["sentences"]
        assert ref["sent_ids"] == [sent["sent_id"]]
        assert sent["tokens"] == sent["sent"].split() and sent["raw"] == sent["sent"]
        obj = _by_name(scenes[image["file_name"]])[sent["sent"][len("the ") :]]
        assert cat_name[ann["category_id"]] == obj["kind"]
        x1, y1, x2, y2 = obj["box"]
        assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    assert {r["split"] for r in refs} == {"train", "val"}


def test_llava_conversations_hold_the_vqa_questions_then_a_refer_turn(root, scenes):
    refers_present = refers_absent = 0
    for split in ("train", "test"):
        convs = _load(root, f"llava/conversation_{split}.json")
        vqa = defaultdict(set)
        for r in _load(root, f"vqa/vqa_{split}.json"):
            vqa[r["image"]].add((r["question"], r["answer"][0]))
        assert len(convs) == len(vqa)
        for c in convs:
            turns = c["conversations"]
            assert isinstance(c["id"], str) and len(turns) % 2 == 0
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
            assert turns[0]["value"].startswith("<image>\n")
            assert not any("<image>" in t["value"] for t in turns[1:])
            pairs = [
                (turns[i]["value"].replace("<image>\n", ""), turns[i + 1]["value"])
                for i in range(0, len(turns), 2)
            ]
            assert set(pairs[:-1]) == vqa[c["image"]], c["id"]
            refer, answer = pairs[-1]  # the last turn asks for a shape: there (a box) or not (a refusal)
            name = re.fullmatch(r"\[refer\] give me the location of the (\w+ \w+)", refer).group(1)
            there = {f"{o['colour']} {o['kind']}": o for o in scenes[c["image"]].objects}
            if name in there:
                o = there[name]
                assert answer == format_box(box_to_grid(o["box"], SIZE, SIZE)), c["id"]
                refers_present += 1
            else:
                assert answer == f"there is no {name}", c["id"]
                refers_absent += 1
    assert refers_present == refers_absent  # balanced over each pair of images


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "--out",
        str(out),
        "--n-train",
        "6",
        "--n-test",
        "2",
        "--seed",
        "4",
        "--shard-size",
        "4",
        "--num-workers",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert "6 train / 2 test" in line and "vqa" in line and " s" in line
    assert is_complete(out, 6, 2, 4, 64)
    assert main(args + ["--skip-if-complete"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_absent_questions_are_refused_and_follow_the_scene():
    forms = Counter()
    for ex in iter_examples(300, seed=5, render=False, absent=True):
        (q,) = [q for q in ex.questions if q["question_type"] == "absent"]
        assert q["answer"] == _expected_answer(ex.scene, q["question"], "absent")
        forms[q["question"].split()[1]] += 1  # "color" (a missing kind) or "shape" (a missing colour)
        expression, refused = ex.absent_ref
        colour, kind = expression.split()[1:]
        present = {(o["colour"], o["kind"]) for o in ex.scene.objects}
        assert (colour, kind) not in present and refused == f"there is no {colour} {kind}"
        assert any(colour == c or kind == k for c, k in present)  # near the picture: a hard negative
    assert min(forms.values()) > 60, forms  # both wordings are asked


def test_by_default_nothing_absent_is_asked():
    for ex in iter_examples(50, seed=5, render=False):
        assert "absent" not in {q["question_type"] for q in ex.questions}
        assert ex.absent_ref is None and not ex.refer_absent
    plain, asked = make_example(5, "train", 7, render=False), make_example(5, "train", 7, render=False, absent=True)
    assert [q for q in asked.questions if q["question_type"] != "absent"] == plain.questions  # the rest unchanged



def test_identify_question_box_holds_the_named_shape_in_the_processed_image(root, scenes):
    """[identify] end to end: the box written in the question, read back from the text and mapped onto
    the tensor the model receives, is the named shape's box in the scene (x before y, on the 0-100 grid)
    and is centred on that shape's colour in the processed image, for every sample of both splits."""
    from minigpt.common.grounding import grid_to_pixels, parse_box
    from minigpt.common.registry import registry

    info = {"annotation_dir": f"{root.name}/refcoco", "images": f"{root.name}/images"}
    builder = registry.get_builder_class("synthetic_invrefcoco")({"build_info": info}, data_root=str(root.parent))
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)[:, None, None]  # CLIP's, the default
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)[:, None, None]
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    n_samples = 0
    for data in builder.build_datasets().values():
        for i in range(len(data)):
            sample = data[i]
            box = parse_box(sample["instruction_input"])
            assert box is not None and sample["instruction_input"].count("{") == 1, sample["instruction_input"]
            obj = _by_name(scenes[data.records[i]["image"]])[sample["answer"][len("the "):]]
            assert box == box_to_grid(obj["box"], SIZE, SIZE)
            pixels = (sample["image"].numpy() * std + mean) * 255.0  # [3, H, W], as the encoder sees it
            h, w = pixels.shape[1:]
            x1, y1, x2, y2 = grid_to_pixels(box, w, h)
            rgb = pixels[:, int((y1 + y2) / 2), int((x1 + x2) / 2)]
            assert list(COLOURS)[int(np.linalg.norm(palette - rgb, axis=1).argmin())] == obj["colour"], (sample, rgb)
            n_samples += 1
    assert n_samples == sum(len(s.objects) for s in scenes.values())
