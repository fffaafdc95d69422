"""Run one stage from a composed config: build task, data and model, train, evaluate."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

from minigpt.common import dist_utils
from minigpt.common.launch import set_up_process
from minigpt.common.registry import registry

logger = logging.getLogger(__name__)


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
    device = set_up_process(rc, seed_per_rank=True)
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
