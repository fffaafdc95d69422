"""Run one stage from a composed config: build task, data and model, train, evaluate."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

from minigpt.common import dist_utils
from minigpt.common.launch import set_up_process
from minigpt.common.registry import registry
from minigpt.runners.run_guard import RunLock, check_fresh_output, clear_checkpoints

logger = logging.getLogger(__name__)


def check_checkpoint_paths(cfg) -> None:
    """Fail before any work when ``model.ckpt`` or ``run.resume_ckpt_path`` names nothing loadable."""
    from omegaconf import ListConfig

    from minigpt.common.config import ConfigError
    from minigpt.models.weights.checkpoint import resolve_checkpoint_file
    from minigpt.runners.checkpointing import check_resumable

    ckpt = cfg.model_cfg.get("ckpt")
    for path in (ckpt if isinstance(ckpt, (list, tuple, ListConfig)) else [ckpt] if ckpt else []):
        try:
            resolve_checkpoint_file(str(path))
        except FileNotFoundError as exc:
            raise ConfigError(f"model.ckpt (from {cfg.source_of('model.ckpt')}): {exc}") from exc
    resume = cfg.run_cfg.get("resume_ckpt_path")
    if resume and resume != "auto":
        try:
            check_resumable(str(resume))  # complete, and every file matches its recorded sha256
        except ValueError as exc:
            raise ConfigError(f"run.resume_ckpt_path (from {cfg.source_of('run.resume_ckpt_path')}): {exc}") from exc


def run_stage(cfg) -> Dict[str, Any]:
    """Train (unless ``run.evaluate_only``) and evaluate the stage ``cfg`` describes; return a summary."""
    check_checkpoint_paths(cfg)
    rc = cfg.run_cfg
    overwrite = check_fresh_output(rc)  # every rank, before the process group forms: reads only
    device = set_up_process(rc, seed_per_rank=True)
    out_dir = str(rc.output_dir)
    lock = RunLock(out_dir)  # rank 0 holds it for the stage; a second run into out_dir is refused meanwhile
    try:
        if dist_utils.is_main_process():
            lock.acquire()
            if overwrite:
                clear_checkpoints(out_dir)
            cfg.save(os.path.join(out_dir, "config.yaml"))
        dist_utils.barrier()
        return _run(cfg, device)
    finally:
        lock.release()


def _run(cfg, device) -> Dict[str, Any]:
    rc = cfg.run_cfg
    out_dir = str(rc.output_dir)
    task = registry.get_task_class(rc.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    runner = registry.get_runner_class(rc.runner)(cfg, task, model, datasets, device)
    summary: Dict[str, Any] = {"stage": rc.get("stage_name"), "output_dir": out_dir}
    if not rc.get("evaluate_only"):
        summary.update(runner.train())
    summary["metrics"] = runner.evaluate()
    return summary
