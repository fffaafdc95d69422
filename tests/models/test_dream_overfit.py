"""The quickstart's diffusion head learns *where* to draw: overfit four targets, one per quadrant.

One shape of one colour in each quadrant, the quadrant the only condition: with the head settings of
``train_configs/dream_quickstart_stage1.yaml`` the UNet's predicted clean image from pure noise must put
the shape in the asked quadrant after a few hundred steps. Its loss weighting decides this: the place is
settled at high noise, where min-SNR weighting (``snr_gamma``) leaves the image's error almost unweighted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from minigpt.models import load_model

STAGE = Path(__file__).resolve().parents[2] / "train_configs" / "dream_quickstart_stage1.yaml"
STEPS = 300


def quickstart_head():
    block = yaml.safe_load(STAGE.read_text())["model"]["heads"]["dream_diffusion"]
    torch.manual_seed(0)
    return load_model("dreamllm", "tiny", overrides={"heads": {"dream_diffusion": block}}).dream_head


def four_targets() -> torch.Tensor:
    """``[4, 3, 16, 16]`` in [-1, 1]: a red square on a pale ground, in quadrant q = 2 * row + column."""
    x = torch.full((4, 3, 16, 16), 0.8)
    for q in range(4):
        r, c = q // 2, q % 2
        x[q, :, 8 * r + 1:8 * r + 7, 8 * c + 1:8 * c + 7] = torch.tensor([0.9, -0.9, -0.9])[:, None, None]
    return x


def red_excess_by_quadrant(x0: torch.Tensor) -> torch.Tensor:
    """``x0`` ``[N, 3, 16, 16]`` -> ``[N, 4]``: mean red-minus-green per quadrant (row-major from the top left)."""
    red = x0[:, 0] - x0[:, 1]
    return torch.stack([red[:, :8, :8].mean((1, 2)), red[:, :8, 8:].mean((1, 2)),
                        red[:, 8:, :8].mean((1, 2)), red[:, 8:, 8:].mean((1, 2))], dim=1)


@pytest.mark.slow  # about 60-100 s on a busy 2-core CPU
def test_quickstart_head_overfits_four_targets_to_their_quadrants():
    head = quickstart_head()
    width = head.condition_projector.in_features
    torch.manual_seed(0)
    where = torch.nn.Embedding(4, width)
    torch.nn.init.normal_(where.weight, std=width**-0.5)
    head.cfg_dropout = 0.0  # the check is about the conditional model alone
    opt = torch.optim.AdamW(list(head.parameters()) + list(where.parameters()), lr=3e-3, weight_decay=0.0)
    targets, quadrants = four_targets(), torch.arange(4).repeat(4)
    head.train()
    for _ in range(STEPS):
        cond = head.condition(where(quadrants)[:, None, :].expand(-1, head.num_queries, -1))
        loss = head.diffusion_loss(cond, targets[quadrants])
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    t = 900  # nearly pure noise: the input says nothing about the place, only the condition does
    ab = head.noise_scheduler.alphas_cumprod[t]
    xt = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * (1 - ab).sqrt()
    with torch.no_grad():
        rows = []
        for q in range(4):
            cond = head.condition(where(torch.full((32,), q))[:, None, :].expand(-1, head.num_queries, -1))
            out = head.run_unet(xt, torch.full((32,), t), cond)
            x0 = (xt - (1 - ab).sqrt() * out) / ab.sqrt() if head.prediction_type == "epsilon" else ab.sqrt() * xt - (1 - ab).sqrt() * out
            rows.append(red_excess_by_quadrant(x0.mean(0, keepdim=True))[0])
    table = torch.stack(rows)  # [asked quadrant, quadrant of the image]
    assert table.argmax(dim=1).tolist() == [0, 1, 2, 3], f"{head.prediction_type}, snr_gamma {head.snr_gamma}: red excess by (asked, drawn) quadrant:\n{table}"
    assert float(table.diagonal().min()) > 0.3, f"{head.prediction_type}, snr_gamma {head.snr_gamma}: red excess by (asked, drawn) quadrant:\n{table}"
