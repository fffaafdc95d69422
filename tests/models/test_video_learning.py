"""What each ``model.video_pooling`` keeps: concatenated frames carry the order (motion), averaged frames do not.

Two clips show the same square crossing the frame, one leftwards, one rightwards: the same frames in
opposite orders. With ``concat`` the tiny TinyGPT-V learns to tell them apart in a few dozen steps;
with ``mean`` their slot embeddings are the same, so no training could.
"""

from __future__ import annotations

import torch
from shared_helpers import moving_square_frames

from minigpt.common.constants import VIDEO_PLACEHOLDER
from minigpt.models import load_model

PROMPTS = [f"{VIDEO_PLACEHOLDER} which way does the square move?"] * 2
ANSWERS = ["left", "right"]


def _clip(direction: str) -> torch.Tensor:
    """``[4, 3, 64, 64]`` normalised frames of the square moving ``direction``."""
    frames = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in moving_square_frames(direction, n=4)])
    return (frames.float() / 255 - 0.45) / 0.27


def test_mean_pooling_cannot_see_the_direction_concat_learns_it():
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", overrides={"video_pooling": "mean"})
    videos = [_clip("left"), _clip("right")]
    assert torch.equal(videos[0], videos[1].flip(0))  # the same frames, in opposite orders
    model.eval()
    _, pooled = model.encode_media_items(None, torch.stack(videos))
    assert torch.allclose(pooled[0], pooled[1], atol=1e-5)  # mean: the two clips are one input

    model.video_pooling = "concat"
    _, laid_out = model.encode_media_items(None, torch.stack(videos))
    assert not torch.allclose(laid_out[0], laid_out[1], atol=1e-3)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    answered = None
    for step in range(1, 201):
        model.train()
        loss = model({"image": videos, "instruction_input": PROMPTS, "answer": ANSWERS})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            model.eval()
            answered = model.generate(videos, PROMPTS, max_new_tokens=3)
            if answered == ANSWERS:
                break
    assert answered == ANSWERS, f"after {step} steps (loss {loss.item():.3f}) the model answers {answered}"
