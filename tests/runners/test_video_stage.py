"""A training stage on video: the video_instruct builder reads tiny MP4s, the tiny families train on them.

The videos (a square crossing the frame left or right) are written by the test; the stage is the
usual ``run_stage`` with ``datasets.video_instruct`` beside the synthetic image captions, so the run
alternates video and image batches through one model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from shared_helpers import (
    moving_square_frames,
    train_on_two_processes,
    write_addition_instructions,
    write_mp4,
)

from minigpt.common.config import Config
from minigpt.runners.stage import run_stage

pytest.importorskip("decord")
pytest.importorskip("av")


def _video_root(root: Path) -> Path:
    """VideoInstruct-100K's layout: ``video_instruct/VideoInstruct100K.json`` and ``videos/<video_id>.mp4``."""
    entries = []
    for i, (direction, colour) in enumerate([("left", "red"), ("right", "blue"), ("right", "red"), ("left", "blue")]):
        write_mp4(root / "video_instruct" / "videos" / f"v_{i}.mp4", moving_square_frames(direction, colour))
        entries.append({"video_id": f"v_{i}", "q": "Which way does the square move?", "a": direction})
    (root / "video_instruct" / "VideoInstruct100K.json").write_text(json.dumps(entries))
    return root


STAGE = """
model:
  arch: {arch}
  model_type: tiny
  video_pooling: {pooling}
datasets:
  video_instruct:
    sample_ratio: 1.0
    vis_processor:
      train: {{name: video_train, image_size: 64, n_frms: 4, min_scale: 0.9}}
      eval: {{name: video_eval, image_size: 64, n_frms: 4}}
  synthetic_caption_wds:
    sample_ratio: 1.0
run:
  stage_name: video_stage
  init_lr: 1.0e-3
  warmup_steps: 0
  seed: 0
"""


@pytest.mark.parametrize("arch,pooling", [("tinygptv", "concat"), ("minigpt_v2", "mean")])
def test_a_stage_trains_on_video_and_image_batches(arch, pooling, tmp_path, data_root, tiny_options):
    videos = _video_root(tmp_path / "videos_root") / "video_instruct"
    stage = tmp_path / "stage.yaml"
    stage.write_text(STAGE.format(arch=arch, pooling=pooling))
    out = tmp_path / "out"
    # the videos live in their own folder; the synthetic captions in the shared data root
    cfg = Config(stage, tiny_options(out, 4, [
        "run.test_splits=[]", "run.batch_size_train=2",
        f"datasets.video_instruct.build_info.annotations.train=[{videos}/VideoInstruct100K.json]",
        f"datasets.video_instruct.build_info.videos={videos}/videos",
    ]))  # fmt: skip
    assert cfg.model_cfg.video_pooling == pooling
    run_stage(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r and "step" in r]
    assert len(steps) == 4 and {r["dataset"] for r in steps} == {"video_instruct", "synthetic_caption_wds"}, steps
    video_losses = [r["loss"] for r in steps if r["dataset"] == "video_instruct"]
    assert all(math.isfinite(v) for v in video_losses) and video_losses[-1] < video_losses[0], video_losses
    end = next(r for r in rows if r.get("event") == "train_end")
    assert end["data"]["video_instruct"]["samples"] >= 2 and end["data"]["video_instruct"]["skipped"] == 0
    assert (out / "checkpoints" / "step_000004" / "trained.safetensors").is_file()


@pytest.mark.slow
def test_video_image_and_text_only_batches_train_under_two_process_ddp(tmp_path, data_root, tiny_options):
    """torchrun, 2 processes (gloo): the ranks draw video, image and text-only micro-batches in any mix."""
    videos = _video_root(tmp_path / "videos_root") / "video_instruct"
    text = write_addition_instructions(tmp_path / "text" / "unnatural.json")
    stage = tmp_path / "stage.yaml"
    stage.write_text(
        STAGE.format(arch="tinygptv", pooling="concat")
        .replace("datasets:\n", f"datasets:\n  unnatural_instruction: {{sample_ratio: 1.0, build_info: {{annotations: {{train: [{text}]}}}}}}\n")
    )
    out = tmp_path / "out"
    options = [*tiny_options(out, 12), "run.batch_size_train=2",
               f"datasets.video_instruct.build_info.annotations.train=[{videos}/VideoInstruct100K.json]",
               f"datasets.video_instruct.build_info.videos={videos}/videos"]  # fmt: skip
    done = train_on_two_processes(stage, out, options, timeout=900)
    assert len(done) == 12 and all(math.isfinite(r["loss"]) for r in done)
    assert {r["dataset"] for r in done} == {"video_instruct", "synthetic_caption_wds", "unnatural_instruction"}, done
