"""The README's LaVIN quickstart, end to end (minutes: run with `python -m pytest -m slow`)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_lavin_quickstart_answers_held_out_image_and_text_only_problems(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--cfg-path",
           os.path.join(REPO, "train_configs", "lavin_quickstart.yaml"), "--options", "run.progress=false"]
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("MINIGPT_DATA_ROOT", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30 * 60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "output" / "lavin_quickstart" / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["lavin"]
    assert metrics["scienceqa_accuracy_img"] >= 0.85, metrics
    assert metrics["scienceqa_accuracy_text_only"] >= 0.90, metrics
    assert metrics["wall_time_s"] <= 10 * 60, metrics
