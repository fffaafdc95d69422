"""The one evaluation stack (minigpt/tasks/evaluation): in training and in the eval scripts alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from minigpt.evaluation.benchmarks import BENCHMARKS
from minigpt.tasks.evaluation.scorers import SCORERS

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL_CFG = REPO_ROOT / "eval_configs" / "quickstart_eval.yaml"
VQA_TAG = "[vqa] "
REFER_LEAD = "[refer] give me the location of "


def test_every_benchmark_is_in_the_scorers_table():
    assert set(BENCHMARKS) <= set(SCORERS)
    assert all(BENCHMARKS[name].scorer is SCORERS[name] for name in BENCHMARKS)


def test_the_tasks_layer_does_not_import_the_evaluation_layer():
    code = (
        "import sys, minigpt.tasks.base_task, minigpt.tasks.image_text_pretrain, minigpt.runners.runner_iter; "
        "bad = sorted(m for m in sys.modules if m.startswith('minigpt.evaluation')); "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
