"""MiniGPT-v2's projector: merge groups of adjacent visual tokens, then project."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


class ConcatLinearProjector(nn.Module):
    """Concatenate ``group`` adjacent tokens and project them. YAML name ``concat_linear``.

    ``layout: sequence`` merges consecutive tokens in raster order, as MiniGPT-v2 does (4 tokens
    of 1408 -> one of 5632 -> Linear to the LLM width). ``layout: square`` merges 2x2 spatial
    neighbours instead. ``hidden_dim`` inserts a GELU MLP; ``out_norm`` adds a final LayerNorm.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        group: int = 4,
        layout: str = "sequence",
        hidden_dim: Optional[int] = None,
        out_norm: bool = False,
        **_: object,
    ) -> None:
        super().__init__()
        if layout not in ("sequence", "square"):
            raise ValueError(f"concat_linear: layout must be 'sequence' or 'square', got {layout!r}")
        if layout == "square" and int(math.isqrt(group)) ** 2 != group:
            raise ValueError(f"concat_linear: layout 'square' needs a square group, got {group}")
        self.group, self.layout = group, layout
        d = in_dim * group
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(d, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            self.proj = nn.Linear(d, out_dim)
        self.norm = nn.LayerNorm(out_dim) if out_norm else nn.Identity()

    def num_output_tokens(self, n_in: int) -> int:
        return n_in // self.group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if n % self.group:
            raise ValueError(f"concat_linear: {n} visual tokens are not divisible by group {self.group}")
        if self.layout == "sequence":
            x = x.reshape(b, n // self.group, c * self.group)  # [B, N/g, g*C]
        else:
            side, k = math.isqrt(n), math.isqrt(self.group)
            x = x.reshape(b, side // k, k, side // k, k, c)  # [B, gh, k, gw, k, C]
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, n // self.group, c * self.group)
        return self.norm(self.proj(x))
