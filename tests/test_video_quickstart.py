"""The README's video quickstart, end to end (minutes: run with `python -m pytest -m slow`)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_video_quickstart_tells_held_out_motion_directions_and_colour_changes(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--cfg-path",
           os.path.join(REPO, "train_configs", "video_quickstart.yaml"), "--options", "run.progress=false"]
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("MINIGPT_DATA_ROOT", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30 * 60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "output" / "video_quickstart"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["stage0", "features", "mmllama"]
    trained = (out / "mmllama" / "config.yaml").read_text()
    assert "arch: mm_llama" in trained and "name: precomputed" in trained  # the registered MM-LLaMA on stored vectors
    assert json.loads((out / "features" / "features.json").read_text())["count"] == 4400
    assert metrics["vqa_accuracy_motion"] >= 0.80, metrics  # chance: 0.25
    assert metrics["vqa_accuracy_colour"] >= 0.90, metrics  # chance: 0.2 (one of the five other colours)
    assert metrics["wall_time_s"] <= 10 * 60, metrics
