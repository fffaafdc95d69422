"""``minigpt eval``: score a checkpoint on the test splits an eval config names, or on benchmarks.

    minigpt eval --cfg-path eval_configs/quickstart_eval.yaml --options model.ckpt=output/quickstart run.max_eval_samples=200
    minigpt eval vqa --cfg-path eval_configs/tinygptv_benchmark_eval.yaml --dataset okvqa,gqa   (as eval_scripts/eval_vqa.py)

The config is composed like a training config (see README.md), with ``run.evaluate_only`` forced on,
so no optimizer step runs whatever the YAML says. The metrics table goes to stdout and
``<run.output_dir>/metrics.json`` holds the headline metrics, every per-dataset metric, the checkpoint
evaluated and the wall time; per-sample predictions go to ``<run.output_dir>/predictions/``.
Works under ``torchrun`` too: each rank scores a shard of the samples. ``eval_scripts/evaluate.py``
is this command.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

from minigpt.common import dist_utils
from minigpt.common.config import Config, ConfigError
from minigpt.common.config.shipped import cfg_path_arg
from minigpt.common.logger import setup_logging
from minigpt.common.registry import RegistryError
from minigpt.evaluation.benchmarks.cli import DEFAULT_DATASETS, FAMILY_TITLES

logger = logging.getLogger("minigpt.evaluate")

METRICS_FILE = "metrics.json"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Evaluate a minigpt checkpoint on the test splits of an eval config.",
        epilog=f"Benchmarks instead: put a family first ({', '.join(FAMILY_TITLES)}), e.g. "
        "`minigpt eval vqa --cfg-path tinygptv_benchmark_eval --dataset okvqa` (its --help lists its options).",
    )
    p.add_argument("--cfg-path", required=True, type=cfg_path_arg, help="an eval config (eval_configs/*.yaml)")
    p.add_argument(
        "--options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. model.ckpt=output/quickstart run.max_eval_samples=100",
    )
    return p.parse_args(argv)


def evaluate(cfg_path: str, options: List[str]) -> Dict[str, Any]:
    """Compose the config with ``run.evaluate_only=true``, evaluate, write metrics.json; return its content."""
    from minigpt.runners.pipeline import headline_metrics
    from minigpt.runners.stage import run_stage
    from minigpt.tasks.evaluation.table import format_metrics

    cfg = Config(cfg_path, list(options) + ["run.evaluate_only=true"])
    if not cfg.run_cfg.get("test_splits"):
        raise ConfigError(f"{cfg_path}: run.test_splits is empty, so there is nothing to evaluate")
    ckpt = cfg.model_cfg.get("ckpt")
    if not ckpt:
        logger.warning("model.ckpt is not set: evaluating a randomly initialised model")
    t0 = time.time()
    metrics = run_stage(cfg)["metrics"]
    result = {
        **headline_metrics(metrics),
        "wall_time_s": round(time.time() - t0, 1),
        "checkpoint": list(ckpt) if ckpt is not None and not isinstance(ckpt, str) else ckpt,
        "config": os.path.abspath(cfg_path),
        "all_metrics": metrics,
    }
    if dist_utils.is_main_process():
        out_dir = str(cfg.run_cfg.output_dir)
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, METRICS_FILE)
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(format_metrics(metrics))
        print(f"\nmetrics written to {path}")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """``minigpt eval``: a config's test splits, or with a benchmark family first, that family's benchmarks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FAMILY_TITLES:
        from minigpt.evaluation.benchmarks.cli import main as benchmarks_main

        return benchmarks_main(argv[0], DEFAULT_DATASETS.get(argv[0]), argv[1:])
    args = parse_args(argv)
    setup_logging()
    try:
        evaluate(args.cfg_path, args.options)
    except (ConfigError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

