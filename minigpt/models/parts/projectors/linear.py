"""A single linear map from visual to LLM width (MiniGPT-4's ``llama_proj``)."""

from __future__ import annotations

import torch
from torch import nn


class LinearProjector(nn.Module):
    """``Linear(in_dim -> out_dim)``, optionally followed by LayerNorm. YAML name ``linear``."""

    def __init__(self, in_dim: int, out_dim: int, out_norm: bool = False, **_: object) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim) if out_norm else nn.Identity()

    def num_output_tokens(self, n_in: int) -> int:
        return n_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))
