"""Mixing datasets by sample_ratio: proportions, determinism, resumable position, rank and worker sharding."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from shared_helpers import record_train_batches
from torch.utils.data import Dataset

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.runners.checkpointing import (
    DATA_STATE,
    data_state_for_rank,
    gather_data_state,
    load_training_state,
    save_checkpoint,
)
from minigpt.runners.data import InfiniteLoader, MixedLoader
from minigpt.runners.stage import run_stage

RATIOS = {"a": 0.5, "b": 0.3, "c": 0.2}


class Toy(Dataset):
    """``n`` text-only samples named ``<name>:<index>``."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict:
        return {"image": None, "instruction_input": "q", "answer": "a", "sample_id": f"{self.name}:{index}"}


def _toy_mixer(seed: int, sizes=(11, 7, 5), batch_size: int = 1) -> MixedLoader:
    loaders = {
        name: InfiniteLoader(Toy(name, n), batch_size, 0, seed=seed + i, rank=0, world_size=1)
        for i, (name, n) in enumerate(zip(RATIOS, sizes))
    }
    return MixedLoader(loaders, RATIOS, seed)


def _draw(mixer: MixedLoader, n: int) -> List[str]:
    return [sid for _ in range(n) for sid in next(mixer)["sample_id"]]


def test_three_datasets_mix_at_their_ratios_and_the_seed_fixes_the_sequence():
    ids = _draw(_toy_mixer(seed=3), 10_000)
    counts = Counter(sid.split(":")[0] for sid in ids)
    for name, ratio in RATIOS.items():
        assert abs(counts[name] / 10_000 - ratio) <= 0.02, counts
    assert _draw(_toy_mixer(seed=3), 10_000) == ids
    assert _draw(_toy_mixer(seed=4), 200) != ids[:200]


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory) -> Path:
    """Four cc_sbu-format shards of three samples (synthetic_caption_wds reads them)."""
    root = tmp_path_factory.mktemp("mixing")
    generate_synthetic_dataset(root / "synthetic", n_train=12, n_test=2, seed=0, shard_size=3, progress=False)
    return root


def _wds(root: Path):
    builder = registry.get_builder_class("synthetic_caption_wds")({"build_info": {"shuffle_buffer": 4}}, str(root))
    return builder.build_datasets(["train"])["train"]


def _mixed_with_stream(root: Path, num_workers: int, seed: int = 9) -> MixedLoader:
    loaders = {
        "a": InfiniteLoader(Toy("a", 13), 2, num_workers, seed=seed, rank=0, world_size=1),
        "b": InfiniteLoader(_wds(root), 2, num_workers, seed=seed + 1, name="b"),
        "c": InfiniteLoader(Toy("c", 6), 2, num_workers, seed=seed + 2, rank=0, world_size=1),
    }
    return MixedLoader(loaders, RATIOS, seed)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_restored_position_continues_the_same_sequence(shard_root, tmp_path, num_workers):
    mixer = _mixed_with_stream(shard_root, num_workers)
    _draw(mixer, 23)  # mid-epoch in every dataset, several passes over the small ones
    while mixer.loaders["b"].offset % 2 == 0:
        # an odd number of stream batches: with two workers the next one is due from worker 1, so the
        # resumed DataLoader (which starts at its worker 0) must rotate the workers' roles
        _draw(mixer, 1)
    path = save_checkpoint(
        str(tmp_path), 23, torch.nn.Linear(2, 2), None, None, "run: {}\n",
        extra={DATA_STATE: gather_data_state(mixer.state_dict())},
    )
    expected = _draw(mixer, 30)
    assert {sid.split(":")[0] for sid in expected} == {"a", "synthetic_caption_wds", "c"}

    # a new process's loaders: weights_only load of the training state, then the position
    saved = load_training_state(path)[DATA_STATE]
    resumed = _mixed_with_stream(shard_root, num_workers)
    resumed.load_state_dict(data_state_for_rank(saved, rank=0, world_size=1))
    assert _draw(resumed, 30) == expected
    assert _draw(_mixed_with_stream(shard_root, num_workers), 30) != expected  # a fresh start differs


def test_map_style_datasets_are_split_across_ranks():
    seen = []
    for rank in (0, 1):
        loader = InfiniteLoader(Toy("a", 10), 1, 0, seed=5, rank=rank, world_size=2)
        seen.append({sid for _ in range(5) for sid in next(loader)["sample_id"]})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == {f"a:{i}" for i in range(10)}


def test_stream_shards_are_split_across_ranks_and_workers(shard_root, monkeypatch):
    all_keys = set()
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = InfiniteLoader(_wds(shard_root), 1, 2, seed=0, name="b")
        # one shard per (rank, worker): the first 6 samples of a rank are its two shards' first pass
        seen.append({sid for _ in range(6) for sid in next(loader)["sample_id"]})
        all_keys |= seen[-1]
        del loader
    assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]
    assert len(all_keys) == 12


def test_the_runner_resumes_the_same_sample_sequence(tmp_path, tiny_options, monkeypatch):
    cfg_path = tmp_path / "mix.yaml"
    cfg_path.write_text(
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets:\n"
        "  synthetic_caption_wds: {sample_ratio: 0.6}\n"
        "  synthetic_vqa: {sample_ratio: 0.4}\n"
        "run: {stage_name: mix, warmup_steps: 0}\n"
    )
    seen = record_train_batches(monkeypatch)

    def stage(out: Path, steps: int, *extra: str) -> Dict:
        opts = [*tiny_options(out, steps), "run.test_splits=[]", "run.num_workers=2", *extra]
        return run_stage(Config(cfg_path, opts))

    stage(tmp_path / "straight", 6)
    straight, seen[:] = list(seen), []
    # split where the stream has handed out an odd number of batches: with two workers the next one is
    # due from worker 1, so the resumed DataLoader (which starts at its worker 0) must rotate their roles
    from_stream = [batch[0].startswith("synthetic_caption_wds:") for batch in straight]
    split = next(k for k in range(2, 6) if sum(from_stream[:k]) % 2 == 1)
    stage(tmp_path / "split", split)
    assert seen == straight[:split]
    ckpt = tmp_path / "split" / "checkpoints" / f"step_{split:06d}"
    position = load_training_state(str(ckpt))[DATA_STATE]["ranks"][0]["loaders"]
    assert position["synthetic_caption_wds"]["next_worker"] == 1
    seen.clear()
    summary = stage(tmp_path / "split", 6, "run.resume_ckpt_path=auto")
    assert summary["steps"] == 6 - split
    assert seen == straight[split:]
    assert {sid.split(":")[0] for batch in straight for sid in batch} == {"synthetic_caption_wds", "synthetic_vqa"}


def test_each_dataset_batches_at_its_own_batch_size(tmp_path, tiny_options, monkeypatch):
    # datasets.<name>.batch_size overrides run.batch_size_train (4) for that dataset's micro-batches
    cfg_path = tmp_path / "sizes.yaml"
    cfg_path.write_text(
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets:\n"
        "  synthetic_vqa: {sample_ratio: 0.5, batch_size: 1}\n"
        "  synthetic_coco_caption: {sample_ratio: 0.5, batch_size: 3}\n"
        "  synthetic_refcoco: {sample_ratio: 0.5}\n"
        "run: {stage_name: sizes, warmup_steps: 0}\n"
    )
    seen = record_train_batches(monkeypatch)
    out = tmp_path / "out"
    opts = [*tiny_options(out, 8), "run.test_splits=[]", "run.accum_grad_iters=2"]
    summary = run_stage(Config(cfg_path, opts))
    assert summary["steps"] == 8 and summary["skipped_steps"] == 0
    sizes = {(batch[0].split(":")[0], len(batch)) for batch in seen}
    assert {name: n for name, n in sizes} == {"synthetic_vqa": 1, "synthetic_coco_caption": 3,
                                              "synthetic_refcoco": 4}, sizes
    assert len(sizes) == 3  # one size per dataset
    # throughput counts the samples each micro-batch held; every step's loss is finite
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "event" not in r]
    assert len(steps) == 8 and all(r["samples_per_s"] > 0 and r["loss"] == r["loss"] for r in steps)
    # the data position of each loader records its own batch size
    ckpt = out / "checkpoints" / f"step_{8:06d}"
    loaders = load_training_state(str(ckpt))[DATA_STATE]["ranks"][0]["loaders"]
    assert {name: pos["batch_size"] for name, pos in loaders.items()} == {
        "synthetic_vqa": 1, "synthetic_coco_caption": 3, "synthetic_refcoco": 4}


class Media(Dataset):
    """``n`` samples of one media kind: a pixel image, a video's frames, a stored feature vector, or none."""

    SHAPES = {"image": (3, 8, 8), "video": (2, 3, 8, 8), "feature": (16,), "text": None}

    def __init__(self, kind: str, n: int = 6) -> None:
        self.kind, self.n = kind, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict:
        shape = self.SHAPES[self.kind]
        return {"image": None if shape is None else torch.full(shape, float(index)), "instruction_input": "q",
                "answer": "a", "label": torch.tensor(index), "sample_id": f"{self.kind}:{index}"}


def test_every_dataset_mixing_joins_one_micro_batch_of_each_dataset_into_every_step():
    loaders = {kind: InfiniteLoader(Media(kind), size, 0, seed=i, rank=0, world_size=1)
               for i, (kind, size) in enumerate({"image": 2, "video": 1, "feature": 1, "text": 2}.items())}
    mixer = MixedLoader(loaders, {k: 1.0 for k in loaders}, seed=0, mixing="every_dataset")
    for _ in range(4):  # past an epoch of the one-sample-a-step datasets
        batch = next(mixer)
        kinds = [sid.split(":")[0] for sid in batch["sample_id"]]
        assert kinds == ["image", "image", "video", "feature", "text", "text"]
        shapes = [None if x is None else tuple(x.shape) for x in batch["image"]]
        assert shapes == [(3, 8, 8), (3, 8, 8), (2, 3, 8, 8), (16,), None, None]
        assert batch["label"].shape == (6,)  # a column of one shape is stacked again
        assert batch["instruction_input"] == ["q"] * 6
    assert mixer.last_name == "image+video+feature+text"
    with pytest.raises(ValueError, match="run.batch_mixing must be one of one_dataset, every_dataset"):
        MixedLoader(loaders, {k: 1.0 for k in loaders}, seed=0, mixing="all")
