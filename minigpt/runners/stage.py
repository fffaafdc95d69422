"""Run one stage from a composed config: build task, data and model, train, evaluate."""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Dict

import numpy as np
import torch

from minigpt.common import dist_utils
from minigpt.common.registry import registry

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic() -> None:
    """Deterministic kernels everywhere (``run.deterministic``), so a run and its resume repeat bitwise."""
    # cuBLAS needs this workspace setting for deterministic matmuls; it is read when CUDA initialises
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def check_checkpoint_paths(cfg) -> None:
    """Fail before any work when ``model.ckpt`` or ``run.resume_ckpt_path`` names nothing loadable."""
    from omegaconf import ListConfig

    from minigpt.common.config import ConfigError
    from minigpt.models.weights.checkpoint import resolve_checkpoint_file
    from minigpt.runners.checkpointing import STATE_FILE

    ckpt = cfg.model_cfg.get("ckpt")
    for path in (ckpt if isinstance(ckpt, (list, tuple, ListConfig)) else [ckpt] if ckpt else []):
        try:
            resolve_checkpoint_file(str(path))
        except FileNotFoundError as exc:
            raise ConfigError(f"model.ckpt (from {cfg.source_of('model.ckpt')}): {exc}") from exc
    resume = cfg.run_cfg.get("resume_ckpt_path")
    if resume and resume != "auto" and not os.path.isfile(os.path.join(str(resume), STATE_FILE)):
        raise ConfigError(
            f"run.resume_ckpt_path (from {cfg.source_of('run.resume_ckpt_path')}): {resume} is not a checkpoint "
            f"directory (no {STATE_FILE} in it); pass a checkpoints/step_N directory or 'auto'"
        )


def run_stage(cfg) -> Dict[str, Any]:
    """Train (unless ``run.evaluate_only``) and evaluate the stage ``cfg`` describes; return a summary."""
    check_checkpoint_paths(cfg)
    rc = cfg.run_cfg
    device = dist_utils.resolve_device(str(rc.device))
    dist_utils.init_distributed(device, str(rc.dist_backend))
    if rc.get("num_threads"):
        torch.set_num_threads(int(rc.num_threads))
    if rc.get("deterministic"):
        set_deterministic()
    seed_everything(int(rc.seed) + dist_utils.get_rank())
    out_dir = str(rc.output_dir)
    if dist_utils.is_main_process():
        os.makedirs(out_dir, exist_ok=True)
        cfg.save(os.path.join(out_dir, "config.yaml"))
    task = registry.get_task_class(rc.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    runner = registry.get_runner_class(rc.runner)(cfg, task, model, datasets, device)
    summary: Dict[str, Any] = {"stage": rc.get("stage_name"), "output_dir": out_dir}
    if not rc.get("evaluate_only"):
        summary.update(runner.train())
    summary["metrics"] = runner.evaluate()
    return summary
