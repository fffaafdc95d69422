"""Two torchrun processes (gloo) train on batches that each hold a pixel image, a pixel video, stored
features and a text-only sample.

The model is the tiny MiniGPT-4 with a stored-feature chain beside its pixel chain
(``model.media_paths.features``); ``run.batch_mixing: every_dataset`` joins one micro-batch of each
of four datasets into every step's batch. Each rank writes its parameters after the last step: DDP
keeps them equal.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from minigpt.features.__main__ import main as features_main

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("synthetic_coco_caption", "synthetic_videochat", "video_instruct", "unnatural_instruction")

# train.py's entry point, then each rank's parameters to rank<r>.safetensors (the test's own hook on the task)
DRIVER = """
import os, sys
from safetensors.torch import save_file
from minigpt.tasks.base_task import BaseTask
from minigpt.cli.train import main

built = []
original = BaseTask.build_model
BaseTask.build_model = lambda self, cfg: built.append(original(self, cfg)) or built[-1]
code = main(sys.argv[2:])
state = {k: v.detach().contiguous() for k, v in built[0].named_parameters() if v.requires_grad}
save_file(state, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.safetensors"))
sys.exit(code)
"""


def test_batches_of_image_video_features_and_text_train_under_two_process_ddp(data_root, tiny_options, tmp_path):
    features = tmp_path / "clip_features"  # the 8 training clips' stored embeddings
    features_main(["extract", "--encoder", "vision_pretrain:tinygptv_tiny", "--pool-grid", "2", "--num-threads", "1",
                   "--no-progress", "--splits", "train", "--dataset", "synthetic_videochat",
                   "--data-root", str(data_root), "--out", str(features)])
    clips = data_root / "synthetic" / "videochat" / "videos" / "train"
    videos = tmp_path / "VideoInstruct100K.json"
    videos.write_text(json.dumps([{"video_id": p.stem, "q": "which way does it move?", "a": "left"}
                                  for p in sorted(clips.glob("*.mp4"))]))
    text = tmp_path / "unnatural.json"
    text.write_text(json.dumps([
        {"instances": [{"instruction_with_input": f"add {i} and {i + 1}", "constraints": None, "output": str(2 * i + 1)}]}
        for i in range(16)
    ]))
    frames = "{image_size: 64, n_frms: 2}"
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        "model:\n  arch: minigpt4\n  model_type: tiny\n"
        "  media_paths:\n    features:\n      vision_encoder: {name: precomputed, dim: 1024, tokens: 1}\n"
        "      projector: {name: linear, bias: false, dropout: 0.1}\n"
        "datasets:\n"
        "  synthetic_coco_caption: {}\n"
        f"  synthetic_videochat: {{features_dir: {features}}}\n"
        f"  video_instruct: {{build_info: {{annotations: {{train: [{videos}]}}, videos: {clips}}},\n"
        f"    vis_processor: {{train: {frames}, eval: {frames}}}}}\n"
        f"  unnatural_instruction: {{build_info: {{annotations: {{train: [{text}]}}}}}}\n"
        "run: {stage_name: every_kind, init_lr: 1.0e-3, warmup_steps: 0, seed: 4, batch_mixing: every_dataset}\n"
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out, steps = tmp_path / "out", 4
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("MINIGPT_DATA_ROOT", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver), str(tmp_path),
           "--cfg-path", str(cfg), "--options", "run.test_splits=[]", "run.dist_backend=gloo",
           *tiny_options(out, steps), "run.batch_size_train=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    done = [r for r in rows if "event" not in r]
    assert len(done) == steps and all(math.isfinite(r["loss"]) for r in done)
    assert all(r["dataset"] == "+".join(DATASETS) for r in done), [r["dataset"] for r in done]
    end = next(r for r in rows if r.get("event") == "train_end")
    assert {n: end["data"][n]["samples"] for n in DATASETS} == {n: 2 * steps for n in DATASETS}  # 1 a rank a step
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert "media_paths.features.projector.proj.weight" in ranks[0] and "projector.proj.weight" in ranks[0]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
