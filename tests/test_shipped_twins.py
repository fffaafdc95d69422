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
from test_shipped_configs import STAGE1_ORIGINAL_LAYOUT, stage_files

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


def stored_features(cfg, tmp_path: Path) -> List[str]:
    """Extract features (the video quickstart's embedding: 2 frames, 2 x 2 cells of the tiny ViT) for every
    dataset of ``cfg`` that reads media; the ``features_dir`` options that point the datasets at them."""
    from minigpt.features.__main__ import main as extract

    options = []
    for name, block in cfg.datasets_cfg.items():
        if "vis_processor" not in block:
            continue
        out = tmp_path / "features" / str(name)
        extract(["extract", "--encoder", "vision_pretrain:tinygptv_tiny", "--dataset", str(name), "--splits", "train",
                 "--data-root", str(cfg.run_cfg.data_root), "--out", str(out), "--pool-grid", "2", "--no-progress"])
        options.append(f"datasets.{name}.features_dir={out}")
    return options


@pytest.mark.parametrize("path", shipped_params(TRAIN_CONFIGS), ids=lambda p: p.name)
def test_each_training_stage_trains_two_steps_at_toy_width(path, data_root, real_layout_root, tmp_path):
    from minigpt.runners.stage import run_stage

    options = twin_options(tmp_path / "out", root_for(path, data_root, real_layout_root))
    cfg = twin_config(path, options)
    if cfg.model_cfg.vision_encoder.name == "precomputed":  # its datasets read stored features: extract them first
        cfg = twin_config(path, options + stored_features(cfg, tmp_path))
    summary = run_stage(cfg)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert math.isfinite(summary["final_loss_ema"])
    # two steps draw from some of the mixed datasets; each one's first sample goes through the model too
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    venc = cfg.model_cfg.vision_encoder
    shape = (venc.dim,) if venc.name == "precomputed" else (venc.image_size, venc.image_size)
    for name, splits in task.build_datasets(cfg).items():
        sample = next(iter(splits["train"]))
        if sample["image"] is not None:  # text-only datasets (unnatural_instruction) carry none
            assert sample["image"].shape[-len(shape):] == shape, name
        out = task.train_step(model, collate_samples([sample]))
        assert torch.isfinite(out["loss"]), name


@pytest.mark.parametrize("name", ["tinygptv_stage1.yaml", "minigpt4_stage1.yaml"])
def test_stage_one_with_the_original_layout_feeds_image_then_caption(name, real_layout_root, tmp_path):
    """docs/recipes.md's switch for stages 1-2: a LAION sample becomes BOS, the image alone, the caption and '\\n'."""
    cfg = twin_config(STAGE_CONFIGS / name, twin_options(tmp_path, real_layout_root) + STAGE1_ORIGINAL_LAYOUT)
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    sample = next(iter(task.build_datasets(cfg)["laion"]["train"]))
    batch = model.build_inputs([sample["instruction_input"]], [sample["answer"]], model.num_image_tokens())
    tok, n = model.tokenizer, model.num_image_tokens()
    caption = tok(sample["answer"] + "\n", add_special_tokens=False)["input_ids"]
    ids = [None if m else int(i) for i, m in zip(batch["input_ids"][0], batch["media_mask"][0])]
    assert ids[: 1 + n + len(caption)] == [tok.bos_token_id] + [None] * n + caption
    assert int(batch["attention_mask"][0].sum()) == 1 + n + len(caption)
