"""Every kind of corrupt sample is refused with its kind, counted by kind in training, and stops a run past the rate."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image
from shared_helpers import stage_at_root

from minigpt.common.config import Config
from minigpt.common.io import (
    SKIP_KINDS,
    DatasetError,
    ReadLimits,
    SkipRateExceeded,
    contained_path,
    default_read_limits,
    open_image,
)
from minigpt.common.registry import registry
from minigpt.datasets.datasets.base_dataset import READ_STATS_KEY, BaseDataset, skip_bad_samples
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.runners.stage import run_stage

N_TRAIN = 20


# -- corrupt files ----------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def broken_chunk_png() -> bytes:
    """A PNG whose pixel data continues in a chunk with a broken type: PIL raises SyntaxError in load()."""
    data = _png()
    i = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[i - 4 : i])
    idat = data[i + 4 : i + 4 + length]
    return data[: i - 4] + _chunk(b"IDAT", idat[:10]) + _chunk(b"ID!T", idat[10:]) + _chunk(b"IEND", b"")


def huge_png_header(width: int = 10_000, height: int = 10_000) -> bytes:
    """The header of a 100-megapixel PNG (and a few bytes of data): a decompression bomb's signature."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(
        b"IEND", b""
    )


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, "JPEG")
    return buf.getvalue()[:200]


def write_bad_images(folder: Path) -> Dict[str, str]:
    """``{file name: the kind it must be refused as}``, written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken_chunk.png").write_bytes(broken_chunk_png())
    (folder / "truncated.jpg").write_bytes(truncated_jpeg())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "a_directory.jpg").mkdir(exist_ok=True)
    (folder / "pixel.png").write_bytes(_png((1, 1)))
    (folder / "huge_header.png").write_bytes(huge_png_header())
    with open(folder / "sparse_100mb.jpg", "wb") as f:  # 100 MB on paper, no blocks on disk
        f.truncate(100 * 2**20)
    if not (folder / "zero.jpg").is_symlink():
        os.symlink("/dev/zero", folder / "zero.jpg")  # inside the root by name, a device by nature
    return {
        "broken_chunk.png": "decode_error",
        "truncated.jpg": "decode_error",
        "empty.jpg": "empty_file",
        "a_directory.jpg": "not_a_file",
        "pixel.png": "bad_size",
        "huge_header.png": "too_large",
        "sparse_100mb.jpg": "too_large",
        "zero.jpg": "not_a_file",
        "missing.jpg": "missing_file",
    }


# -- one file at a time -----------------------------------------------------------------------------
def test_each_bad_image_is_refused_with_its_kind_and_path(tmp_path):
    for name, kind in write_bad_images(tmp_path / "bad").items():
        path = str(tmp_path / "bad" / name)
        with pytest.raises(DatasetError) as info:
            open_image(path, "ds", "ds:7")
        err = info.value
        assert (err.kind, err.path, err.sample_id) == (kind, path, "ds:7"), (name, str(err))
        assert path in str(err) and "'ds'" in str(err)
    assert set(SKIP_KINDS) >= set(write_bad_images(tmp_path / "bad").values())


def test_limits_come_from_the_yaml_and_a_dataset_block_overrides_them(tmp_path):
    limits = default_read_limits()
    assert limits.max_image_bytes == 64 * 2**20 and limits.max_image_pixels == 50_000_000
    assert limits.min_image_side == 2 and limits.allow_outside_root is False
    (tmp_path / "big.png").write_bytes(_png((40, 40)))
    with pytest.raises(DatasetError) as info:
        open_image(str(tmp_path / "big.png"), "ds", limits=ReadLimits(None, 1000, 2, False))
    assert info.value.kind == "too_large" and "max_image_pixels=1000" in str(info.value)
    with pytest.raises(DatasetError) as info:
        open_image(str(tmp_path / "big.png"), "ds", limits=ReadLimits(100, None, 2, False))
    assert info.value.kind == "too_large" and "max_image_bytes=100" in str(info.value)
    assert open_image(str(tmp_path / "big.png"), "ds").size == (40, 40)

    cls = registry.get_builder_class("synthetic_coco_caption")
    assert cls.default_config().read_limits.max_image_pixels == 50_000_000
    builder = cls({"read_limits": {"max_image_pixels": 123}}, data_root=str(tmp_path))
    assert builder.read_limits == ReadLimits(64 * 2**20, 123, 2, False, 4 * 2**30, 4096 * 4096)
    with pytest.raises(KeyError, match=r"read_limits: unknown key 'max_pixels'.*max_image_pixels"):
        cls({"read_limits": {"max_pixels": 1}}, data_root=str(tmp_path))


def test_paths_must_stay_in_the_image_root_unless_the_config_allows(tmp_path):
    root = tmp_path / "images"
    strict, loose = default_read_limits(), ReadLimits(None, None, 2, True)
    for bad in ("/etc/hostname", "../secret.jpg", "train/../../secret.jpg", "~/x.jpg", "s3://bucket/x.jpg"):
        with pytest.raises(DatasetError) as info:
            contained_path(str(root), bad, strict, "ds", "ds:1")
        assert info.value.kind == "outside_data_root" and "allow_outside_root" in str(info.value), bad
    assert contained_path(str(root), "/etc/hostname", loose, "ds", "ds:1") == "/etc/hostname"
    assert contained_path(str(root), "train/../train/x.jpg", strict, "ds", "ds:1") == str(root / "train/../train/x.jpg")
    # a symlink inside the root is followed (the data root's owner put it there)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(_png())
    root.mkdir()
    os.symlink(tmp_path / "elsewhere", root / "linked")
    assert open_image(contained_path(str(root), "linked/x.png", strict, "ds", None), "ds").size == (16, 16)


def test_a_parser_rejecting_fields_records_wrong_type_unless_it_names_a_kind():
    def parse(index, entry):
        if entry == "no kind":
            raise DatasetError("entry has a list where text belongs")
        if entry == "bad box":
            raise DatasetError("box inverted", kind="bad_box")
        return {"text": entry["text"].strip()}  # TypeError / KeyError / AttributeError on other shapes

    ds = BaseDataset("lines", None, None, None)
    ds.add_records("lines.json", [{"text": " a "}, "no kind", "bad box", {"text": 5}, {"txt": "b"}, 7], parse)
    assert [r["text"] for r in ds.records] == ["a"]
    assert [m["kind"] for m in ds.malformed_records] == ["wrong_type", "bad_box", "wrong_type", "wrong_type", "wrong_type"]
    assert "AttributeError" in ds.malformed_records[2]["error"] and "entry 3 of lines.json" in ds.malformed_records[2]["error"]


# -- a synthetic data root with every corruption -------------------------------------------------------
def _corrupt_root(root: Path) -> Dict[str, Dict[str, int]]:
    """Synthetic data with bad samples in three datasets; returns the kinds each must report (and how many records)."""
    syn = root / "synthetic"
    generate_synthetic_dataset(syn, n_train=N_TRAIN, n_test=4, seed=0, shard_size=5, progress=False)
    bad_images = write_bad_images(syn / "images" / "bad")

    # COCO captions: one entry per bad file, outside paths, a placeholder, and wrong JSON types
    ann = syn / "coco_caption" / "coco_karpathy_train.json"
    entries = json.loads(ann.read_text())
    entries += [{"image": f"bad/{name}", "caption": "a bad file", "image_id": name} for name in bad_images]
    entries += [
        {"image": "/etc/hostname", "caption": "absolute", "image_id": "abs"},
        {"image": "../../outside.jpg", "caption": "climbs out", "image_id": "dotdot"},
        {"image": "train/000001.jpg", "caption": "look at <ImageHere> here", "image_id": "placeholder"},
        {"image": 5, "caption": "image is a number", "image_id": "t1"},
        {"image": "train/000002.jpg", "caption": 7, "image_id": "t2"},
        {"image": "train/000003.jpg", "caption": {"text": "nested"}, "image_id": "t3"},
        "not an object",
    ]
    ann.write_text(json.dumps(entries))

    # webdataset shard 0: a non-UTF-8 .txt caption (its .json dropped), a PNG with a broken chunk, a placeholder caption
    shard = syn / "cc_sbu" / "train-00000.tar"
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = sorted({name.split(".")[0] for name, _ in members})
    out = []
    for name, data in members:
        key, ext = name.split(".", 1)
        if key == keys[0] and ext == "json":
            continue  # the .txt caption is the one read
        if key == keys[0] and ext == "txt":
            data = b"caf\xe9 au lait \xff"
        elif key == keys[1] and ext == "jpg":
            data = broken_chunk_png()
        elif key == keys[2] and ext == "json":
            data = json.dumps({"caption": "a <Img><ImageHere></Img> inside"}).encode()
        out.append((name, data))
    with tarfile.open(shard, "w") as tar:
        for name, data in out:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    # RefCOCO: an image of width 0, a negative box, a box past the image, a box of strings
    inst_path = syn / "refcoco" / "instances.json"
    instances = json.loads(inst_path.read_text())
    with open(syn / "refcoco" / "refs(unc).p", "rb") as f:
        refs = [r for r in pickle.load(f) if r["split"] == "train"]
    by_image: Dict[int, List[dict]] = {}
    for ref in refs:
        by_image.setdefault(ref["image_id"], []).append(ref)
    zero_image = min(by_image, key=lambda i: len(by_image[i]))
    next(img for img in instances["images"] if img["id"] == zero_image)["width"] = 0
    others = [r["ann_id"] for r in refs if r["image_id"] != zero_image][:3]
    anns = {a["id"]: a for a in instances["annotations"]}
    anns[others[0]]["bbox"] = [-20, 5, 10, 10]
    anns[others[1]]["bbox"] = [50, 50, 40, 40]  # past the 64x64 image
    anns[others[2]]["bbox"] = ["1", "2", "3", "4"]
    inst_path.write_text(json.dumps(instances))
    n_bad_refs = len(by_image[zero_image]) + sum(1 for r in refs if r["ann_id"] in others)

    return {
        "synthetic_coco_caption": {
            "skipped": {*bad_images.values(), "outside_data_root", "placeholder_in_text"},
            "malformed": {"wrong_type": 4},
        },
        "synthetic_caption_wds": {"skipped": {"bad_text_encoding", "decode_error", "placeholder_in_text"}},
        "synthetic_refcoco": {"malformed": {"bad_size": len(by_image[zero_image]), "bad_box": n_bad_refs - len(
            by_image[zero_image])}},
    }


def test_every_kind_is_skipped_with_its_sample_and_path(tmp_path):
    expected = _corrupt_root(tmp_path)
    raw = registry.get_builder_class("synthetic_coco_caption")(None, data_root=str(tmp_path)).build_datasets(
        ["train"]
    )["train"]
    assert sorted(m["kind"] for m in raw.malformed_records) == ["wrong_type"] * 4
    ds = skip_bad_samples(raw, "coco", seed=3)
    records = [r for i in range(len(ds)) for r in ds[i][READ_STATS_KEY]["skipped"]]
    assert {r["kind"] for r in records} == expected["synthetic_coco_caption"]["skipped"]
    for r in records:
        assert r["dataset"] == "coco" and r["sample_id"].startswith("synthetic_coco_caption:")
        assert r["kind"] in ("placeholder_in_text",) or r["path"], r
    assert any(r["path"] == "/etc/hostname" and r["kind"] == "outside_data_root" for r in records)
    assert any(r["path"].endswith("bad/zero.jpg") and r["kind"] == "not_a_file" for r in records)


# -- through the runner ---------------------------------------------------------------------------------
def _stage(tmp_path: Path, root: Path, max_iters: int, *extra: str) -> Config:
    text = (
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets:\n"
        "  synthetic_coco_caption: {sample_ratio: 0.6}\n"
        "  synthetic_caption_wds: {sample_ratio: 0.3, build_info: {shuffle_buffer: 1}}\n"
        "  synthetic_refcoco: {sample_ratio: 0.1}\n"
        "run: {stage_name: corrupt, warmup_steps: 0}\n"
    )
    return stage_at_root(tmp_path / "corrupt.yaml", text, root, tmp_path / "out", max_iters, *extra)


def test_training_over_every_corruption_runs_to_the_end_counting_each_kind(tmp_path, caplog):
    caplog.set_level("WARNING")
    expected = _corrupt_root(tmp_path / "data")
    summary = run_stage(_stage(tmp_path, tmp_path / "data", 40, "run.max_skip_rate=0.7", "run.num_workers=0"))
    assert summary["steps"] == 40
    data = summary["data"]
    for name, want in expected.items():
        if "skipped" in want:
            assert set(data[name]["skipped_by_kind"]) == want["skipped"], name
            assert sum(data[name]["skipped_by_kind"].values()) == data[name]["skipped"]
        if "malformed" in want:
            assert data[name]["malformed_by_kind"] == want["malformed"], name
    assert "skipped and replaced (bad_text_encoding)" in caplog.text
    assert "skipped and replaced (too_large)" in caplog.text and "huge_header.png" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines() if line]
    assert rows[-1]["event"] == "train_end" and rows[-1]["data"] == data


def test_past_the_skip_rate_the_run_stops_naming_the_dataset_and_kinds(tmp_path):
    _corrupt_root(tmp_path / "data")
    cfg = _stage(tmp_path, tmp_path / "data", 40, "run.max_skip_rate=0.2", "run.skip_rate_min_reads=16")
    with pytest.raises(SkipRateExceeded) as info:
        run_stage(cfg)
    message = str(info.value)
    assert "'synthetic_coco_caption'" in message and "run.max_skip_rate=0.2" in message
    assert "decode_error" in message and "outside_data_root" in message
