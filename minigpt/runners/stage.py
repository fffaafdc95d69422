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


def run_stage(cfg) -> Dict[str, Any]:
    """Train (unless ``run.evaluate_only``) and evaluate the stage ``cfg`` describes; return a summary."""
    rc = cfg.run_cfg
    device = dist_utils.resolve_device(str(rc.device))
    dist_utils.init_distributed(device, str(rc.dist_backend))
    if rc.get("num_threads"):
        torch.set_num_threads(int(rc.num_threads))
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
