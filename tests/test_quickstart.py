"""The README's quickstart, end to end (minutes: run with `python -m pytest -m slow`)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_learns_on_held_out_images(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--cfg-path",
           os.path.join(REPO, "train_configs", "quickstart.yaml"), "--options", "run.progress=false"]
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("MINIGPT_DATA_ROOT", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30 * 60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "output" / "quickstart" / "metrics.json").read_text())
    stages = ["stage0", "stage1", "stage2", "stage3", "grounding", "stage4"]
    assert [s["stage"] for s in metrics["stages"]] == stages
    assert metrics["vqa_accuracy"] >= 0.80, metrics
    assert metrics["grounding_acc@0.5"] >= 0.30, metrics
    assert metrics["hallucination_rate"] <= 0.10, metrics  # "is there a ...?" answered yes where the answer is no
    assert metrics["wall_time_s"] <= 15 * 60, metrics
    assert "vqa_accuracy" in proc.stdout and "metrics written to" in proc.stdout


def test_quickstart_caches_the_frozen_encoder_from_stage_1_on():
    """Stage 0 trains the encoder (no cache possible); every later stage freezes it and caches its output."""
    from minigpt.common.config import Config

    path = os.path.join(REPO, "train_configs", "quickstart.yaml")
    pipe = Config.load_pipeline(path).pipeline
    for stage in pipe.stages:
        cfg = Config(os.path.join(REPO, "train_configs", str(stage.cfg)), [str(o) for o in stage.get("options") or []])
        cached = bool(cfg.run_cfg.vision_feature_cache.enabled)
        if stage.name == "stage0":
            assert not cached and not cfg.model_cfg.vision_encoder.freeze
        else:
            assert cached and cfg.model_cfg.vision_encoder.freeze, stage.name
