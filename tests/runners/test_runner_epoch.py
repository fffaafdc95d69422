"""The epoch-based runner (``runner_epoch``): epochs derived from the datasets, a checkpoint per epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
from omegaconf import OmegaConf
from torch.utils.data import IterableDataset

from minigpt.common.registry import registry
from minigpt.runners.checkpointing import load_training_state
from minigpt.runners.runner_epoch import batches_per_epoch
from minigpt.runners.stage import run_stage

ALIGN_STAGE = """\
model:
  arch: tinygptv
  model_type: tiny
datasets:
  synthetic_cc_sbu_align:
    sample_ratio: 1.0
    data_type: text               # no image decoding: the test is about step counts, kept fast
run:
  stage_name: epochs
  init_lr: 1.0e-3
  min_lr: 1.0e-4
  warmup_lr: 1.0e-5
  warmup_steps: 0
  seed: 42
"""


def _rows(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def stage(stage_from_yaml):
    return stage_from_yaml


def test_runner_epoch_runs_each_epoch_over_the_data_once(stage, data_root, tmp_path):
    # 24 of the synthetic captions in a data root of their own: a short epoch keeps the test fast
    records = json.loads((data_root / "synthetic" / "cc_sbu_align" / "filter_cap.json").read_text())["annotations"]
    small = tmp_path / "data" / "synthetic" / "cc_sbu_align"
    small.mkdir(parents=True)
    (small / "filter_cap.json").write_text(json.dumps({"annotations": records[:24]}))
    out = tmp_path / "run"
    # the originals' per-epoch cosine steps by the derived epochs (run.iters_per_epoch stays null)
    cfg = stage(ALIGN_STAGE, out, 1000, "run.test_splits=[]", "run.runner=runner_epoch", "run.max_epoch=2",
                "run.batch_size_train=4", "run.accum_grad_iters=2", f"run.data_root={tmp_path / 'data'}",
                "run.lr_sched=linear_warmup_cosine_epoch_lr", "run.log_freq=1")
    train = registry.get_builder_class("synthetic_cc_sbu_align")(
        cfg.datasets_cfg.synthetic_cc_sbu_align, data_root=cfg.run_cfg.data_root
    ).build_datasets(splits=["train"])["train"]
    assert len(train) == 24
    micro = len(train) // 4
    per_epoch = micro // 2
    assert per_epoch >= 2 and micro % 2 == 0  # so epoch boundaries fall on optimizer-step boundaries

    summary = run_stage(cfg)
    assert summary["steps"] == 2 * per_epoch  # run.max_iters=1000 is replaced by the epochs
    rows = _rows(out / "metrics.jsonl")
    assert [(r["epoch"], r["step"]) for r in rows if r.get("event") == "epoch_end"] == [(1, per_epoch),
                                                                                        (2, 2 * per_epoch)]
    steps = [r for r in rows if "loss" in r and "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 2 * per_epoch + 1))
    # epoch 0 at init_lr (no warm-up), epoch 1 of 2 at cosine(1/2): half way between init_lr and min_lr
    assert [r["lr"] for r in steps] == pytest.approx([1e-3] * per_epoch + [5.5e-4] * per_epoch)
    assert (out / "checkpoints" / f"step_{per_epoch:06d}").is_dir()  # a checkpoint at each epoch end
    data = load_training_state(str(out / "checkpoints" / f"step_{2 * per_epoch:06d}"))["data"]
    position = data["ranks"][0]["loaders"]["synthetic_cc_sbu_align"]
    # 2 epochs: the second pass (epoch index 1) has handed out all of its batches, no third one begun
    assert (position["epoch"], position["offset"]) == (1, 2 * per_epoch)


def test_runner_epoch_needs_a_length_or_iters_per_epoch():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(())

    rc = OmegaConf.create({"batch_size_train": 4, "train_splits": ["train"]})
    with pytest.raises(ValueError, match="web/train.*run.iters_per_epoch"):
        batches_per_epoch({"web": {"train": Stream()}}, rc, 1)
    assert batches_per_epoch({"a": {"train": list(range(50))}, "b": {"test": [0]}}, rc, 2) == {"a/train": 6}
