"""Every shipped training stage runs at toy width (``model.scale=toy``) on the synthetic data (DESIGN.md §5).

Same parts, classes, processors, image sizes, templates, prompts and datasets as the real run; only
widths, depths, heads and vocabulary are shrunk. The real-format datasets (LAION, CC/SBU, RefCOCO,
LLaVA, VQAv2, GQA, Flickr30k, Visual Genome, ...) read, with their default paths, a data root the
synthetic generator lays out as the real datasets are (``real_layout=True``, the ``real_layout_root``
fixture). Each stage config trains 2 steps here; the pipelines chaining them run end to end through
train.py in tests/test_shipped_pipelines.py, the eval configs in tests/test_shipped_eval_configs.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List

import pytest
import torch
from shared_helpers import STAGE_CONFIGS, shipped_params
from test_shipped_configs import stage_files

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples

TRAIN_CONFIGS = sorted({s for p in STAGE_CONFIGS.glob("*.yaml") for s in stage_files(p)})


def test_every_shipped_stage_config_is_run_here():
    """Every non-pipeline file of train_configs/, and every stage a pipeline names, lies in train_configs/."""
    shipped = set(STAGE_CONFIGS.glob("*.yaml"))
    pipelines = {p for p in shipped if Config.is_pipeline_file(p)}
    assert set(TRAIN_CONFIGS) == shipped - pipelines


def uses_synthetic_builders(cfg_path: Path) -> bool:
    """Whether ``cfg_path`` trains on the ``synthetic_*`` builders (the quickstart) rather than real-format ones."""
    return any(name.startswith("synthetic_") for name in Config(cfg_path).config.get("datasets") or {})


def twin_config(path: Path, options: List[str]) -> Config:
    """``path`` composed whole with ``options``: every dataset of the published mixture takes part."""
    return Config(path, options)


def root_for(path: Path, data_root: Path, real_layout_root: Path) -> Path:
    return data_root if uses_synthetic_builders(path) else real_layout_root


def twin_options(out: Path, data_root: Path, max_iters: int = 2) -> List[str]:
    return [
        "model.scale=toy",
        "model.ckpt=null",
        f"run.max_iters={max_iters}",
        "run.batch_size_train=2",
        "run.batch_size_eval=4",
        "run.max_eval_samples=4",
        "run.eval_max_new_tokens=4",
        "run.warmup_steps=1",
        "run.num_workers=0",
        "run.save_freq=0",
        f"run.data_root={data_root}",
        f"run.output_dir={out}",
        "run.progress=false",
        "run.num_threads=1",
        "run.device=cpu",
    ]


@pytest.mark.parametrize("path", shipped_params(TRAIN_CONFIGS), ids=lambda p: p.name)
def test_each_training_stage_trains_two_steps_at_toy_width(path, data_root, real_layout_root, tmp_path):
    from minigpt.runners.stage import run_stage

    cfg = twin_config(path, twin_options(tmp_path / "out", root_for(path, data_root, real_layout_root)))
    summary = run_stage(cfg)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert math.isfinite(summary["final_loss_ema"])
    # two steps draw from some of the mixed datasets; each one's first sample goes through the model too
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    size = cfg.model_cfg.vision_encoder.image_size
    for name, splits in task.build_datasets(cfg).items():
        sample = next(iter(splits["train"]))
        if sample["image"] is not None:  # text-only datasets (unnatural_instruction) carry none
            assert sample["image"].shape[-2:] == (size, size), name
        out = task.train_step(model, collate_samples([sample]))
        assert torch.isfinite(out["loss"]), name
