"""The README's DreamLLM quickstart, end to end (minutes: run with `python -m pytest -m slow`)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_dream_quickstart_draws_held_out_requests_in_the_asked_colour_and_quadrant(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--cfg-path",
           os.path.join(REPO, "train_configs", "dream_quickstart.yaml"), "--options", "run.progress=false"]
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    env.pop("MINIGPT_DATA_ROOT", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30 * 60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "output" / "dream_quickstart"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["dream"]
    assert metrics["creation_drawn_rate"] >= 0.95, metrics
    assert metrics["creation_colour_accuracy"] >= 0.60, metrics  # chance 1/6
    assert metrics["creation_quadrant_accuracy"] >= 0.50, metrics  # chance 1/4
    assert (out / "eval" / "creation_samples.png").is_file()
    assert metrics["wall_time_s"] <= 15 * 60, metrics
