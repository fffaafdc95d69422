"""The tiny presets' logits on a fixed input are pinned: restructuring the composition must not change them.

Weights are filled from each parameter's own name (not from the order parts are built in), so the pin
holds across any refactoring that keeps checkpoint names. ``python tests/models/test_pinned_logits.py
--write`` rewrites the pinned file; do that only for a change meant to alter the numbers.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Dict

import pytest
import torch

from minigpt.models import load_model

PINNED = Path(__file__).parent / "data" / "pinned_logits.safetensors"
FAMILIES = ("tinygptv", "minigpt4", "minigpt_v2")
INSTRUCTIONS = [
    "<Img><ImageHere></Img> [vqa] what color is the circle?",
    ["<Img><ImageHere></Img> [caption] describe the picture", "[refer] the red square"],
    "how many legs does a cat have?",
]
ANSWERS = ["red", ["a red square on the left", "{<10><20><40><60>}"], "four"]
LAST_POSITIONS = 6


def _fill_by_name(model: torch.nn.Module) -> None:
    """Each parameter drawn from a generator seeded by its checkpoint name, scaled to keep activations tame."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _inputs() -> Dict[str, object]:
    g = torch.Generator().manual_seed(1234)
    return {"image": torch.randn(3, 3, 64, 64, generator=g), "instruction_input": INSTRUCTIONS, "answer": ANSWERS}


def pinned_outputs(family: str) -> Dict[str, torch.Tensor]:
    """The loss, the logits at every labelled position and at the last positions, and greedy tokens."""
    model = load_model(family, "tiny", is_eval=True)
    _fill_by_name(model)
    captured = {}

    def keep_logits(module, args, out):
        captured.setdefault("logits", out.logits)

    handle = model.llm.causal_lm.register_forward_hook(keep_logits)
    model.loss_on_label_positions = False  # logits at every position, for the hook to read
    try:
        with torch.no_grad():
            loss = model(_inputs())["loss"]
    finally:
        handle.remove()
    logits = captured["logits"].float()  # [B, T, V]
    with torch.no_grad():
        images = _inputs()["image"]
        prompts = [INSTRUCTIONS[0], INSTRUCTIONS[1][0], INSTRUCTIONS[2]]
        texts = model.generate(images, prompts, max_new_tokens=6)
    tokens = model.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
    return {
        "loss": loss.detach().reshape(1).float(),
        "last_logits": logits[:, -LAST_POSITIONS:, :].contiguous(),
        "logit_sums": logits.sum(-1).contiguous(),  # [B, T]: every position, vocabulary summed
        "greedy_tokens": tokens,
    }


def _write() -> None:
    from safetensors.torch import save_file

    out = {}
    for family in FAMILIES:
        for key, value in pinned_outputs(family).items():
            out[f"{family}.{key}"] = value
    PINNED.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(PINNED))
    print(f"wrote {len(out)} tensors to {PINNED}")


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_preset_logits_equal_the_pinned_ones(family):
    from safetensors.torch import load_file

    pinned = load_file(str(PINNED))
    now = pinned_outputs(family)
    for key, value in now.items():
        want = pinned[f"{family}.{key}"]
        assert value.shape == want.shape, (family, key)
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, want, rtol=0, atol=1e-6, msg=f"{family}.{key}")
        else:
            assert torch.equal(value, want), (family, key)


if __name__ == "__main__":
    if "--write" in sys.argv:
        _write()
