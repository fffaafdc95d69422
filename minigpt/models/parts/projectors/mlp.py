"""A two-layer MLP projector (LLaVA-1.5's ``mlp2x_gelu``; with ``activation: silu`` and ``hidden_dim: 128``, LaVIN's)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU}


class MLPProjector(nn.Module):
    """``Linear -> activation -> Linear`` (+ optional LayerNorm); ``activation``: gelu | silu. YAML name ``mlp``."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: Optional[int] = None,
        out_norm: bool = False,
        activation: str = "gelu",
        **_: object,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"projector.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        hidden_dim = hidden_dim or out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), ACTIVATIONS[activation](), nn.Linear(hidden_dim, out_dim)
        )
        self.norm = nn.LayerNorm(out_dim) if out_norm else nn.Identity()

    def num_output_tokens(self, n_in: int) -> int:
        return n_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x))
