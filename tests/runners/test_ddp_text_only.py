"""Two torchrun processes (gloo) train on a mixture where text-only and image batches alternate.

DDP runs with ``find_unused_parameters=False``: on a text-only step nothing goes through the
vision encoder and the projector, and only the composition's zero-weighted touch of their
parameters gives them the gradients DDP waits for. Without it the first text-only step fails.
LaVIN's adapters sit in the LLM (used twice a step: the modality token's pass and the sequence's)
and in the CLIP tower (unused on a text-only step), which get zero-weighted gradients on text-only
steps too (minigpt/models/lavin/model.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List

from shared_helpers import train_on_two_processes, write_addition_instructions


def train_mixed(arch: str, steps: int, init_lr: float, seed: int, tiny_options, tmp_path: Path) -> List[str]:
    """Train ``arch``'s tiny preset for ``steps`` steps on two processes; the dataset each step drew."""
    text = write_addition_instructions(tmp_path / "text" / "unnatural.json")
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        f"model: {{arch: {arch}, model_type: tiny}}\n"
        "datasets:\n"
        "  synthetic_coco_caption: {sample_ratio: 1.0}\n"
        f"  unnatural_instruction: {{sample_ratio: 1.0, build_info: {{annotations: {{train: [{text}]}}}}}}\n"
        f"run: {{stage_name: mixed_{arch}, init_lr: {init_lr}, warmup_steps: 0, seed: {seed}}}\n"
    )
    out = tmp_path / "out"
    done = train_on_two_processes(cfg, out, [*tiny_options(out, steps), "run.batch_size_train=2"], timeout=600)
    assert len(done) == steps and all(math.isfinite(r["loss"]) for r in done)
    return [r["dataset"] for r in done]


def test_text_only_micro_batches_train_under_two_process_ddp(tiny_options, tmp_path):
    drawn = train_mixed("tinygptv", 20, 1.0e-3, 3, tiny_options, tmp_path)
    assert drawn.count("unnatural_instruction") >= 5 and drawn.count("synthetic_coco_caption") >= 5, drawn
    switches = sum(a != b for a, b in zip(drawn, drawn[1:]))
    assert switches >= 5, drawn  # text-only and image steps interleave, not one block after the other


def test_lavin_trains_on_image_and_text_only_batches_under_two_process_ddp(tiny_options, tmp_path):
    drawn = train_mixed("lavin", 12, 1.0e-2, 5, tiny_options, tmp_path)
    assert "unnatural_instruction" in drawn and "synthetic_coco_caption" in drawn, drawn
