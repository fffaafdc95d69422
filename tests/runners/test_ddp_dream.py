"""DreamLLM under two torchrun processes (gloo) on a mixture of drawing requests and text-only batches.

On a text-only step nothing reaches the dream head (no query slots, no target image) nor the vision
path: only the zero-weighted touch of their parameters gives them the gradients DDP waits for
(``find_unused_parameters=False``). lm_loss and the head's loss are logged apart.
"""

from __future__ import annotations

import json
import math

import pytest
from shared_helpers import train_on_two_processes


@pytest.mark.parametrize("condition_norm", [False, True])  # true: the quickstart's standardised condition
def test_dreamllm_trains_drawing_and_text_only_batches_under_two_process_ddp(tiny_options, tmp_path, condition_norm):
    text = tmp_path / "unnatural.json"
    records = [
        {"instances": [{"instruction_with_input": f"add {i} and {i + 1}", "constraints": None, "output": str(2 * i + 1)}]}
        for i in range(40)
    ]
    text.write_text(json.dumps(records))
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        "model: {arch: dreamllm, model_type: tiny, "
        f"heads: {{dream_diffusion: {{condition_norm: {str(condition_norm).lower()}}}}}}}\n"
        "datasets:\n"
        "  synthetic_drawing: {sample_ratio: 1.0}\n"
        f"  unnatural_instruction: {{sample_ratio: 1.0, build_info: {{annotations: {{train: [{text}]}}}}}}\n"
        "run: {stage_name: ddp_dream, init_lr: 1.0e-3, warmup_steps: 0, seed: 3}\n"
    )
    out = tmp_path / "out"
    done = train_on_two_processes(cfg, out, [*tiny_options(out, 12), "run.batch_size_train=2"], timeout=600)
    assert len(done) == 12 and all(math.isfinite(r["loss"]) for r in done)
    drawn = [r["dataset"] for r in done]
    assert "unnatural_instruction" in drawn and "synthetic_drawing" in drawn, drawn
    for r in done:
        assert math.isfinite(r["lm_loss"]) and math.isfinite(r["dream_diffusion_loss"])
        if r["dataset"] == "unnatural_instruction":
            assert r["dream_diffusion_loss"] == 0.0
        else:
            assert r["dream_diffusion_loss"] > 0.0
