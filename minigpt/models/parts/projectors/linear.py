"""A single linear map from visual to LLM width (MiniGPT-4's ``llama_proj``, MM-LLaMA's bias-free projection)."""

from __future__ import annotations

import torch
from torch import nn


class LinearProjector(nn.Module):
    """``Linear(in_dim -> out_dim)``, optionally bias-free, after dropout, followed by LayerNorm. YAML name ``linear``.

    ``bias: false`` and ``dropout: 0.1`` give MM-LLaMA's projection of one ImageBind embedding
    (1024 -> the LLM width, one token per media item); the defaults give MiniGPT-4's ``llama_proj``.
    """

    def __init__(
        self, in_dim: int, out_dim: int, out_norm: bool = False, bias: bool = True, dropout: float = 0.0, **_: object
    ) -> None:
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"projector dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(float(dropout)) if dropout else nn.Identity()
        self.proj = nn.Linear(in_dim, out_dim, bias=bool(bias))
        self.norm = nn.LayerNorm(out_dim) if out_norm else nn.Identity()

    def num_output_tokens(self, n_in: int) -> int:
        return n_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.dropout(x)))
