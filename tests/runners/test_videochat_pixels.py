"""The synthetic VideoChat clips read as pixels (no ``features_dir``) train and evaluate every image family.

The video processor hands each clip out as its frames ``[T, 3, H, W]``; the reader puts them in the
video slot ``<Video><VideoHere></Video>``, which the TinyGPT-V, MiniGPT-4 and MiniGPT-v2 tiny presets
fill frame by frame through their own image path (``model.video_pooling``). In an image slot the
frames would be read as ``T`` images for one slot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from minigpt.common.config import Config
from minigpt.datasets.synthetic.videos import generate_synthetic_videos
from minigpt.runners.stage import run_stage

pytest.importorskip("decord")

STAGE = """
model: {{arch: {arch}, model_type: tiny, video_pooling: {pooling}}}
datasets:
  synthetic_videochat: {{sample_ratio: 1.0}}
run: {{stage_name: videochat_pixels, init_lr: 1.0e-3, warmup_steps: 0, seed: 0}}
"""


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videochat_pixels")
    generate_synthetic_videos(root / "synthetic", n_train=4, n_test=2)  # where the builder's default paths look
    return root


@pytest.mark.parametrize("arch,pooling", [("tinygptv", "concat"), ("minigpt4", "mean"), ("minigpt_v2", "concat")])
def test_pixel_clips_fill_a_video_slot_and_train_and_evaluate_in_each_family(arch, pooling, clips_root, tmp_path):
    stage = tmp_path / "stage.yaml"
    stage.write_text(STAGE.format(arch=arch, pooling=pooling))
    out = tmp_path / "out"
    cfg = Config(stage, [
        "run.max_iters=1", "run.batch_size_train=2", "run.batch_size_eval=2", "run.max_eval_samples=2",
        f"run.data_root={clips_root}", f"run.output_dir={out}", "run.progress=false", "run.log_freq=1",
        "run.num_threads=1", "run.test_splits=[test]", "run.eval_max_new_tokens=2",
    ])  # fmt: skip
    summary = run_stage(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r and "step" in r]
    assert len(steps) == 1 and steps[0]["dataset"] == "synthetic_videochat" and math.isfinite(steps[0]["loss"])
    end = next(r for r in rows if r.get("event") == "train_end")
    assert end["data"]["synthetic_videochat"] == {"samples": 2, "skipped": 0, "skip_rate": 0.0}
    # evaluation generates from the same video slots: a prediction for each held-out clip
    assert any(k.startswith("synthetic_videochat/test/") for k in summary["metrics"]), summary["metrics"]
    preds = [json.loads(line) for line in (out / "predictions" / "synthetic_videochat_test.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(isinstance(p["prediction"], str) for p in preds), preds
