"""Bad data: unreadable samples are replaced deterministically, counted, logged, and stop a run past a rate."""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from shared_helpers import stage_at_root
from torch.utils.data import DataLoader, Dataset

from minigpt.common.config import Config
from minigpt.common.io import DatasetError, SkipRateExceeded
from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.datasets.base_dataset import (
    READ_STATS_KEY,
    BaseDataset,
    SkippingDataset,
    SkipTracker,
    replacement_index,
    skip_bad_samples,
)
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.runners.stage import run_stage

N_TRAIN = 20  # synthetic images; one coco caption each, four shards of five


# -- fixtures ---------------------------------------------------------------------------------------
def _synthetic(root: Path) -> Path:
    generate_synthetic_dataset(root / "synthetic", n_train=N_TRAIN, n_test=4, seed=0, shard_size=5, progress=False)
    return root


def _corrupt_image(root: Path, index: int) -> Path:
    path = root / "synthetic" / "images" / "train" / f"{index:06d}.jpg"
    path.write_bytes(b"\xff\xd8 this jpeg stops here")
    return path


def _rewrite_shard(path: Path, corrupt_keys=()) -> None:
    """Rewrite a tar shard, replacing the image bytes of ``corrupt_keys`` with garbage."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            if member.name.endswith(".jpg") and member.name[: -len(".jpg")] in corrupt_keys:
                data = b"not a jpeg at all"
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _truncate_shard(path: Path) -> None:
    """Cut a shard in the middle of its second sample's image (as an interrupted download leaves it)."""
    with tarfile.open(path) as tar:
        jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
    cut = jpgs[1].offset_data + jpgs[1].size // 2
    data = path.read_bytes()
    path.write_bytes(data[:cut])


def _shard(root: Path, i: int) -> Path:
    return root / "synthetic" / "cc_sbu" / f"train-{i:05d}.tar"


def _shard_keys(path: Path) -> List[str]:
    with tarfile.open(path) as tar:
        return sorted({m.name.split(".")[0] for m in tar.getmembers()})


def _coco(root: Path):
    return registry.get_builder_class("synthetic_coco_caption")(None, data_root=str(root)).build_datasets(["train"])[
        "train"
    ]


def _wds(root: Path, **build_info):
    cfg = {"build_info": {"shuffle_buffer": 1, **build_info}}
    return registry.get_builder_class("synthetic_caption_wds")(cfg, data_root=str(root)).build_datasets(["train"])[
        "train"
    ]


# -- the replacement rule ---------------------------------------------------------------------------
def test_replacement_is_seeded_and_never_the_bad_index():
    for size in (2, 7, 100):
        for index in range(size):
            picks = [replacement_index(3, index, attempt, size) for attempt in range(5)]
            assert picks == [replacement_index(3, index, attempt, size) for attempt in range(5)]
            assert all(0 <= j < size and j != index for j in picks)
    # different seeds or attempts move the choice around the dataset
    assert len({replacement_index(s, 5, 0, 100) for s in range(50)}) > 20
    assert len({replacement_index(0, 5, a, 100) for a in range(50)}) > 20


# -- map-style datasets -----------------------------------------------------------------------------
def test_corrupt_and_missing_images_are_replaced_the_same_way_every_time(tmp_path):
    root = _synthetic(tmp_path)
    corrupt = _corrupt_image(root, 3)
    missing = root / "synthetic" / "images" / "train" / "000005.jpg"
    missing.unlink()
    raw = _coco(root)
    with pytest.raises(DatasetError):  # the reader itself still raises: skipping is the wrapper's job
        raw[3]

    ds = skip_bad_samples(raw, "coco", seed=11)
    assert isinstance(ds, SkippingDataset) and len(ds) == len(raw) == N_TRAIN
    samples = [ds[i] for i in range(len(ds))]
    assert all(isinstance(s["image"], torch.Tensor) and s["image"].shape == (3, 64, 64) for s in samples)
    errors = {i: [r["error"] for r in s[READ_STATS_KEY]["skipped"]] for i, s in enumerate(samples)}
    assert str(corrupt) in errors[3][0] and "synthetic_coco_caption" in errors[3][0]
    assert str(missing) in errors[5][0] and "not found" in errors[5][0]
    assert all(not errs for i, errs in errors.items() if i not in (3, 5))
    assert all(s[READ_STATS_KEY]["dataset"] == "coco" for s in samples)
    # a good sample stands in for the bad one, and the same one on every read and in every copy
    assert samples[3]["sample_id"] != raw.sample_id("synthetic_train_000003#3")
    again = skip_bad_samples(_coco(root), "coco", seed=11)
    assert [again[i]["sample_id"] for i in (3, 5)] == [samples[i]["sample_id"] for i in (3, 5)]
    assert ds[3]["sample_id"] == samples[3]["sample_id"]


def test_a_reader_returning_none_is_an_error_not_a_sample():
    class Sloppy(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return None

    with pytest.raises(TypeError, match="must raise DatasetError"):
        SkippingDataset(Sloppy(), "sloppy")[0]


def test_a_wholly_unreadable_dataset_raises_after_max_attempts(tmp_path):
    root = _synthetic(tmp_path)
    raw = _coco(root)
    raw.images_root = str(tmp_path / "wrong")
    with pytest.raises(DatasetError, match=r"'coco'.*4 replacements in a row.*unreadable as a whole"):
        SkippingDataset(raw, "coco", max_attempts=4)[0]


class _Lines(BaseDataset):
    def __init__(self, entries):
        super().__init__("lines", None, None, None)

        def parse(index, entry):
            if not isinstance(entry, dict) or "text" not in entry:
                raise DatasetError(f"dataset 'lines': entry {index} of lines.json has no 'text': {entry!r}")
            return {"text": entry["text"]}

        self.add_records("lines.json", entries, parse)

    def __getitem__(self, index):
        return {"image": None, "instruction_input": self.records[index]["text"], "answer": "-"}


def test_malformed_records_are_left_out_counted_and_logged(caplog):
    ds = _Lines([{"text": "a"}, {"txt": "b"}, "c", {"text": "d"}])
    assert [r["text"] for r in ds.records] == ["a", "d"]
    assert [(m["path"], m["index"]) for m in ds.malformed_records] == [("lines.json", 1), ("lines.json", 2)]
    assert "entry 1 of lines.json" in caplog.text
    with pytest.raises(DatasetError, match="entry 0 of lines.json"):  # every entry bad: a wrong file, not bad data
        _Lines([{"txt": 1}, {"txt": 2}])

    tracker = SkipTracker(max_rate=0.3, min_reads=4)
    tracker.set_records("lines", len(ds), SkippingDataset(ds).malformed_records)
    with pytest.raises(SkipRateExceeded, match=r"'lines': 2 of 4 annotation records are malformed.*0\.3"):
        tracker.check()
    assert tracker.summary()["lines"]["malformed_records"] == 2


def test_counts_reach_the_main_process_from_dataloader_workers(tmp_path):
    root = _synthetic(tmp_path)
    for i in (2, 9):
        _corrupt_image(root, i)
    ds = skip_bad_samples(_coco(root), "coco", seed=5)
    expected = sum(len(ds[i][READ_STATS_KEY]["skipped"]) for i in range(len(ds)))
    assert expected >= 2

    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_samples)
    skipped = samples = 0
    errors: List[str] = []
    for batch in loader:
        assert READ_STATS_KEY not in batch and batch["image"].shape[0] == 4
        stats = batch["data_stats"]
        samples += stats["counts"]["coco"][0]
        skipped += stats["counts"]["coco"][1]
        errors += [r["error"] for r in stats["skipped"]]
    assert (samples, skipped) == (N_TRAIN, expected)
    assert any("000002.jpg" in e for e in errors) and any("000009.jpg" in e for e in errors)


# -- webdataset streams -----------------------------------------------------------------------------
def test_stream_skips_a_corrupt_member_a_truncated_shard_and_a_missing_one(tmp_path):
    root = _synthetic(tmp_path)
    bad_key = _shard_keys(_shard(root, 0))[2]
    _rewrite_shard(_shard(root, 0), corrupt_keys={bad_key})
    _truncate_shard(_shard(root, 2))
    ds = _wds(root).with_skipping("wds")
    _shard(root, 3).unlink()  # gone after the build checked it: a shard lost mid-run

    first_pass: List[Dict] = []
    errors: List[str] = []
    for sample in ds:
        # a skip is reported with the next sample yielded, which for the last shard is epoch 1's first
        errors += [r["error"] for r in sample[READ_STATS_KEY]["skipped"]]
        if sample[READ_STATS_KEY]["stream"][1] > 0:  # epoch 1 began
            break
        first_pass.append(sample)
    ids = [s["sample_id"] for s in first_pass]
    assert f"synthetic_caption_wds:{bad_key}" not in ids and len(ids) == len(set(ids))
    assert any(f"synthetic_caption_wds:{bad_key}" in e and "corrupt image" in e for e in errors)
    assert any(str(_shard(root, 2)) in e and "truncated" in e for e in errors)
    assert any(str(_shard(root, 3)) in e and "not found" in e for e in errors)
    # nothing else was skipped (a shard missing at the end of one pass and the start of the next counts twice)
    assert len(set(errors)) == 3, "\n".join(errors)
    # shards 0 and 1 are read whole (less the bad member), shard 2 up to where it was cut
    assert {i.split(":")[1] for i in ids} >= set(_shard_keys(_shard(root, 1)))
    assert all(isinstance(s["image"], torch.Tensor) for s in first_pass)
    positions = [s[READ_STATS_KEY]["stream"][2] for s in first_pass]
    assert positions == sorted(positions)


def test_stream_without_skipping_names_the_truncated_shard(tmp_path):
    root = _synthetic(tmp_path)
    _truncate_shard(_shard(root, 2))
    ds = _wds(root, shards={"train": "synthetic/cc_sbu/train-00002.tar"})
    with pytest.raises(DatasetError, match=r"synthetic_caption_wds.*train-00002\.tar is truncated"):
        list(itertools.islice(ds, 10))


# -- the threshold ----------------------------------------------------------------------------------
def test_skip_tracker_applies_the_rate_after_the_minimum_reads():
    tracker = SkipTracker(max_rate=0.1, min_reads=20, names=["a", "b"])
    tracker.add("a", samples=10, skipped=5, last_error="dataset 'a': corrupt image x.jpg")
    tracker.check()  # 15 reads: too few to judge
    tracker.add("b", samples=30, skipped=3)
    tracker.check()  # b: 3 of 33, under 10%
    tracker.add("a", samples=10, skipped=0)
    with pytest.raises(SkipRateExceeded) as info:
        tracker.check()
    message = str(info.value)
    assert "'a'" in message and "5 of 25" in message and "run.max_skip_rate=0.1" in message
    assert "x.jpg" in message and "python -m minigpt.datasets check a" in message
    assert tracker.total_skipped() == 8
    SkipTracker(max_rate=None, min_reads=1).check()
    with pytest.raises(ValueError, match="max_skip_rate"):
        SkipTracker(max_rate=1.5)
    restored = SkipTracker(max_rate=None)
    restored.load_state_dict(tracker.state_dict())
    assert restored.summary() == tracker.summary()


# -- through the runner ---------------------------------------------------------------------------
def _stage(tmp_path: Path, root: Path, max_iters: int, *extra: str) -> Config:
    text = (
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets:\n"
        "  synthetic_caption_wds: {sample_ratio: 0.5, build_info: {shuffle_buffer: 1}}\n"
        "  synthetic_coco_caption: {sample_ratio: 0.5}\n"
        "run: {stage_name: bad_data, warmup_steps: 0}\n"
    )
    return stage_at_root(tmp_path / "bad_data.yaml", text, root, tmp_path / "out", max_iters, *extra)


def _rows(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_five_percent_corrupt_and_a_truncated_shard_train_to_the_end(tmp_path, caplog):
    caplog.set_level("WARNING")
    root = _synthetic(tmp_path / "data")
    corrupt = _corrupt_image(root, 7)  # 1 of 20 coco images
    bad_key = _shard_keys(_shard(root, 1))[3]  # 1 of 20 shard samples
    _rewrite_shard(_shard(root, 1), corrupt_keys={bad_key})
    _truncate_shard(_shard(root, 3))

    # one DataLoader worker per dataset: the counts come back from the worker processes with the batches
    summary = run_stage(_stage(tmp_path, root, 16, "run.num_workers=1"))
    assert summary["steps"] == 16 and summary["checkpoint"].endswith("step_000016")
    data = summary["data"]
    assert set(data) == {"synthetic_caption_wds", "synthetic_coco_caption"}
    assert data["synthetic_caption_wds"]["skipped"] >= 2  # the bad member and the truncated shard
    assert data["synthetic_coco_caption"]["skipped"] >= 1
    assert summary["skipped_samples"] == sum(d["skipped"] for d in data.values())
    for d in data.values():
        assert d["samples"] >= 4 and d["skip_rate"] == round(d["skipped"] / (d["samples"] + d["skipped"]), 4)
    # every skip was logged with its path
    assert str(corrupt) in caplog.text and str(_shard(root, 3)) in caplog.text
    assert f"synthetic_caption_wds:{bad_key}" in caplog.text

    rows = _rows(tmp_path / "out" / "metrics.jsonl")
    steps = [r for r in rows if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 17))
    counts = [r["skipped_samples"] for r in steps]
    assert counts == sorted(counts) and counts[-1] == summary["skipped_samples"]
    assert rows[-1]["event"] == "train_end" and rows[-1]["data"] == data


def test_fifty_percent_corrupt_stops_with_the_dataset_and_threshold(tmp_path):
    root = _synthetic(tmp_path / "data")
    for i in range(0, N_TRAIN, 2):
        _corrupt_image(root, i)
    cfg = _stage(tmp_path, root, 40, "run.skip_rate_min_reads=24")
    with pytest.raises(SkipRateExceeded) as info:
        run_stage(cfg)
    message = str(info.value)
    assert "'synthetic_coco_caption'" in message and "run.max_skip_rate=0.1" in message
    assert "corrupt image" in message
    rows = _rows(tmp_path / "out" / "metrics.jsonl")
    assert rows[-1]["event"] == "stopped" and rows[-1]["step"] < 40
    assert rows[-1]["data"]["synthetic_coco_caption"]["skip_rate"] > 0.1
    assert not os.path.exists(tmp_path / "out" / "checkpoints")  # nothing to resume from a stopped run
