"""Two torchrun processes (gloo) train the tiny LaVIN on a mixture of image and text-only batches.

LaVIN's adapters sit in the LLM (used twice a step: the modality token's pass and the sequence's)
and in the CLIP tower (unused on a text-only step). DDP runs with ``find_unused_parameters=False``,
so one rank on a text-only batch while the other has images only works because the tower's adapters
get zero-weighted gradients on text-only steps (minigpt/models/lavin/model.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = 12


def test_lavin_trains_on_image_and_text_only_batches_under_two_process_ddp(tiny_options, tmp_path):
    text = tmp_path / "text" / "unnatural.json"
    text.parent.mkdir()
    records = [
        {"instances": [{"instruction_with_input": f"add {i} and {i + 1}", "constraints": None, "output": str(2 * i + 1)}]}
        for i in range(40)
    ]
    text.write_text(json.dumps(records))
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        "model: {arch: lavin, model_type: tiny}\n"
        "datasets:\n"
        "  synthetic_coco_caption: {sample_ratio: 1.0}\n"
        f"  unnatural_instruction: {{sample_ratio: 1.0, build_info: {{annotations: {{train: [{text}]}}}}}}\n"
        "run: {stage_name: lavin_mixed, init_lr: 1.0e-2, warmup_steps: 0, seed: 5}\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("MINIGPT_DATA_ROOT", None)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "train.py",
           "--cfg-path", str(cfg), "--options", "run.test_splits=[]", "run.dist_backend=gloo",
           *tiny_options(out, STEPS), "run.batch_size_train=2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "event" not in r]
    assert len(steps) == STEPS and all(math.isfinite(r["loss"]) for r in steps)
    drawn = [r["dataset"] for r in steps]
    assert "unnatural_instruction" in drawn and "synthetic_coco_caption" in drawn, drawn
