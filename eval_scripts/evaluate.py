"""Evaluate a trained checkpoint on the test splits an eval config names; print and save the metrics.

    python eval_scripts/evaluate.py --cfg-path eval_configs/quickstart_eval.yaml \\
        --options model.ckpt=output/quickstart run.max_eval_samples=200

The config is composed like a training config (see README.md), with ``run.evaluate_only`` forced on,
so no optimizer step runs whatever the YAML says. The metrics table goes to stdout and
``<run.output_dir>/metrics.json`` holds the headline metrics, every per-dataset metric, the checkpoint
evaluated and the wall time; per-sample predictions go to ``<run.output_dir>/predictions/``.
Works under ``torchrun`` too: each rank scores a shard of the samples.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

try:
    import minigpt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`: the package sits one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt.common import dist_utils
from minigpt.common.config import Config, ConfigError
from minigpt.common.logger import setup_logging
from minigpt.common.registry import RegistryError

logger = logging.getLogger("minigpt.evaluate")

METRICS_FILE = "metrics.json"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate a minigpt checkpoint on the test splits of an eval config.")
    p.add_argument("--cfg-path", required=True, help="an eval config (eval_configs/*.yaml)")
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
    args = parse_args(argv)
    setup_logging()
    try:
        evaluate(args.cfg_path, args.options)
    except (ConfigError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
