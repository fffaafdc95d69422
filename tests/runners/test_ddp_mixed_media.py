"""Two torchrun processes (gloo) train one model on stored image features, stored clip features and text-only samples.

The model is the video quickstart's composition (the ``precomputed`` encoder, a bias-free linear
projection with dropout, a tiny Llama); the image dataset and the video dataset each read the
features ``python -m minigpt.features extract`` stored for them (``features_dir``), and a text-only
dataset has no media at all. On a text-only step nothing goes through the projector, which the
composition's zero-weighted touch of its parameters keeps DDP's gradient buckets whole.
"""

from __future__ import annotations

import json
import math

from shared_helpers import train_on_two_processes

from minigpt.datasets.synthetic.videos import generate_synthetic_videos
from minigpt.features.__main__ import main as features_main


def test_image_features_clip_features_and_text_only_train_under_two_process_ddp(data_root, tiny_options, tmp_path):
    videos = tmp_path / "videos"
    generate_synthetic_videos(videos, n_train=16, n_test=0)
    vc = videos / "videochat"
    common = ["--encoder", "vision_pretrain:tinygptv_tiny", "--pool-grid", "2", "--num-threads", "1", "--no-progress",
              "--splits", "train"]
    features_main(["extract", "--dataset", "synthetic_coco_caption", "--data-root", str(data_root),
                   "--out", str(tmp_path / "image_features"), *common])
    features_main(["extract", "--dataset", "synthetic_videochat", "--data-root", str(data_root),
                   "--out", str(tmp_path / "clip_features"), *common,
                   "--options", f"build_info.annotations.train=[{vc / 'videochat_instruct_train.json'}]",
                   f"build_info.images={vc / 'videos'}"])
    text = tmp_path / "unnatural.json"
    text.write_text(json.dumps([
        {"instances": [{"instruction_with_input": f"add {i} and {i + 1}", "constraints": None, "output": str(2 * i + 1)}]}
        for i in range(40)
    ]))
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        "model:\n  arch: minigpt4\n  model_type: tiny\n"
        "  vision_encoder: {name: precomputed, dim: 1024, tokens: 1}\n"
        "  projector: {name: linear, out_norm: true, bias: false, dropout: 0.1}\n"
        "datasets:\n"
        f"  synthetic_coco_caption: {{sample_ratio: 1.0, features_dir: {tmp_path / 'image_features'}}}\n"
        f"  synthetic_videochat: {{sample_ratio: 1.0, features_dir: {tmp_path / 'clip_features'},\n"
        f"    build_info: {{annotations: {{train: [{vc / 'videochat_instruct_train.json'}]}}, images: {vc / 'videos'}}}}}\n"
        f"  unnatural_instruction: {{sample_ratio: 1.0, build_info: {{annotations: {{train: [{text}]}}}}}}\n"
        "run: {stage_name: mixed_media, init_lr: 1.0e-3, warmup_steps: 0, seed: 4}\n"
    )
    out, steps = tmp_path / "out", 18
    done = train_on_two_processes(cfg, out, [*tiny_options(out, steps), "run.batch_size_train=2"], timeout=600)
    assert len(done) == steps and all(math.isfinite(r["loss"]) for r in done)
    drawn = {r["dataset"] for r in done}
    assert drawn == {"synthetic_coco_caption", "synthetic_videochat", "unnatural_instruction"}, drawn
