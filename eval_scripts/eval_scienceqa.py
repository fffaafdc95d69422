"""ScienceQA as LaVIN evaluates it: every question, image and text-only; accuracy with the official breakdown.

    python eval_scripts/eval_scienceqa.py --cfg-path eval_configs/tinygptv_benchmark_eval.yaml [--split test]
    python eval_scripts/eval_scienceqa.py --cfg-path ... --dataset scienceqa_img   # image questions only

Predictions are saved as they are made and a rerun continues where an interrupted one stopped;
metrics go to ``<output_dir>/<benchmark>_<split>_metrics.json``. See eval_scripts/EVAL_README.md.
"""

from __future__ import annotations

import os
import sys

try:
    import minigpt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`: the package sits one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt.evaluation.benchmarks.cli import main

if __name__ == "__main__":
    raise SystemExit(main("scienceqa", default_datasets="scienceqa"))
