"""Evaluate a trained checkpoint on the test splits an eval config names; print and save the metrics.

    python eval_scripts/evaluate.py --cfg-path eval_configs/quickstart_eval.yaml \\
        --options model.ckpt=output/quickstart run.max_eval_samples=200

The same as ``minigpt eval`` (:mod:`minigpt.cli.evaluate`): ``metrics.json`` and the per-sample
predictions go to ``run.output_dir``. Works under ``torchrun`` too.
"""

import os
import sys

try:
    import minigpt  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`: the package sits one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
