"""An encoder whose output the dataset already holds: features computed once, offline."""

from __future__ import annotations

import torch
from torch import nn

from minigpt.models.base_model import strict_part_kwargs


class PrecomputedFeatures(nn.Module):
    """Passes precomputed features through: ``[B, tokens, dim]`` (or ``[B, dim]``, one token) in and out.

    YAML name ``precomputed``. Samples then carry each media item as a ``[tokens, dim]`` (or ``[dim]``)
    tensor instead of pixels, and only the projector and the LLM run on them (MM-LLaMA's design).
    """

    takes_features = True

    def __init__(self, dim: int, tokens: int = 1) -> None:
        super().__init__()
        self.dim = int(dim)
        self.num_tokens = int(tokens)

    @property
    def out_dim(self) -> int:
        return self.dim

    @classmethod
    def from_config(cls, cfg) -> "PrecomputedFeatures":
        kwargs = strict_part_kwargs(cfg, ("dim", "tokens", "freeze"), "precomputed")
        kwargs.pop("freeze", None)
        return cls(**kwargs)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() == 2:
            feats = feats[:, None, :]
        if feats.shape[1:] != (self.num_tokens, self.dim):
            raise ValueError(
                f"precomputed features must be [B, {self.num_tokens}, {self.dim}], got {tuple(feats.shape)}"
            )
        return feats
