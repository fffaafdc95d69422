"""LaVIN's recipes (train_configs/lavin_*.yaml) train on their data path and evaluate with the ScienceQA table.

The configs name ``arch: lavin``; each test runs with every registered arch of ``ARCHS`` put in its place
(``lavin`` is skipped while it is not registered; the tiny TinyGPT-V always runs), so the data path, the
lr rule and the evaluation are checked whichever model trains on them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List

import pytest
from shared_helpers import STAGE_CONFIGS

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.datasets.synthetic import generate_synthetic_dataset

ARCHS = ["lavin", "tinygptv"]


def _arch(name: str) -> str:
    if name not in registry.list_models():
        pytest.skip(f"model arch {name!r} is not registered in this checkout (it lands with the LaVIN model)")
    return name


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lavin_data")
    generate_synthetic_dataset(root / "synthetic", n_train=40, n_test=10, seed=0, shard_size=20, progress=False)
    return root


def _cpu(out: Path, root: Path) -> List[str]:
    return [f"run.data_root={root}", f"run.output_dir={out}", "run.device=cpu", "run.num_threads=1",
            "run.progress=false", "run.save_freq=0", "run.num_workers=0", "run.eval_max_new_tokens=4"]


@pytest.mark.parametrize("arch", ARCHS)
def test_quickstart_stage_trains_and_scores_image_and_text_only_questions(arch, data_root, tmp_path, caplog):
    from minigpt.runners.stage import run_stage

    options = [f"model.arch={_arch(arch)}", "model.model_type=tiny", "run.max_iters=3", "run.batch_size_train=4",
               "run.warmup_steps=1", "run.test_splits=[test]", "run.batch_size_eval=8", "run.log_freq=1",
               *_cpu(tmp_path, data_root)]
    cfg = Config(STAGE_CONFIGS / "lavin_quickstart_stage1.yaml", options)
    with caplog.at_level(logging.INFO, logger="minigpt"):
        summary = run_stage(cfg)
    assert summary["steps"] == 3
    # LaVIN's rule: 8e-3 x (4 per step x 1 accumulated x 1 process) / 256
    assert "peak lr 0.000125 = run.blr 0.008 x effective batch 4 " in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in rows if "lr" in r) == pytest.approx(1.25e-4)  # the schedule peaks at the derived lr
    metrics = summary["metrics"]
    sqa = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("synthetic_scienceqa/test/")}
    assert sqa["samples"] == 16  # 8 held-out images -> 8 test problems with an image, 8 text-only ones
    for column in ("accuracy", "accuracy_img", "accuracy_text_only", "accuracy_no", "accuracy_txt"):
        assert 0.0 <= sqa[f"scienceqa_{column}"] <= 1.0, column
    assert "synthetic_alpaca/test/text_instruction_accuracy" in metrics


@pytest.mark.parametrize("arch", ARCHS)
def test_scienceqa_recipe_composes_as_published_and_trains_an_epoch(arch, data_root, tmp_path):
    from minigpt.runners.stage import run_stage

    arch = _arch(arch)
    # LaVIN's real preset at toy width (same classes, 224 px); the tiny TinyGPT-V in its place otherwise
    swap = ["model.scale=toy"] if arch == "lavin" else ["model.model_type=tiny"]
    # the released layout's paths pointed at the synthetic ScienceQA-format files
    sqa = "datasets.scienceqa"
    on_synthetic = [f"{sqa}.build_info.problems_file=synthetic/sqa/problems.json",
                    f"{sqa}.build_info.pid_splits_file=synthetic/sqa/pid_splits.json",
                    f"{sqa}.build_info.images=synthetic/images", f"{sqa}.build_info.image_path='{{image}}'"]
    # the tiny model's encoder takes the synthetic 64 px images; LaVIN's CLIP tower the recipe's 224 px
    sizes = [] if arch == "lavin" else [f"{sqa}.vis_processor.{w}.image_size=64" for w in ("train", "eval")]
    cfg = Config(STAGE_CONFIGS / "lavin_scienceqa.yaml", [f"model.arch={arch}", *swap, *sizes])
    run = cfg.run_cfg
    assert (run.lr_rule, run.blr, run.batch_size_train, run.accum_grad_iters, run.max_iters, run.warmup_steps) == (
        "blr_per_256", 9.0e-3, 4, 4, 20 * 397, 2 * 397)  # 397 updates an epoch on the published 2 GPUs
    assert (run.weight_decay, run.beta2, run.grad_clip, run.min_lr) == (0.02, 0.95, None, 0.0)
    assert cfg.datasets_cfg.scienceqa.output_format == "ALE" and cfg.datasets_cfg.scienceqa.build_info.captions_file is None
    cfg = Config(STAGE_CONFIGS / "lavin_scienceqa.yaml", [
        f"model.arch={arch}", *swap, *sizes, *on_synthetic, "run.runner=runner_epoch", "run.max_epoch=1",
        "run.test_splits=[]",
        *_cpu(tmp_path, data_root)])
    summary = run_stage(cfg)
    assert summary["steps"] == 80 // 4 // 4  # one epoch: 40 image + 40 text-only problems, 4 a micro-batch, 4 accumulated
