"""A small ViT with a convolutional patch stem, for presets that must run on a CPU in seconds."""

from __future__ import annotations

import math
from typing import Optional

import torch
from timm.models.vision_transformer import Block
from torch import nn


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """``[grid*grid, dim]`` sin-cos position code: half the channels for rows, half for columns."""
    if dim % 4:
        raise ValueError(f"tiny_vit: width must be a multiple of 4 for the 2-D position code, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # [dim/4]
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # [g, g] each

    def code(v: torch.Tensor) -> torch.Tensor:
        angles = v.reshape(-1, 1) * omega[None]  # [g*g, dim/4]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([code(rows), code(cols)], dim=1)  # [g*g, dim]


class TinyViTEncoder(nn.Module):
    """Conv stem (stride-2 3x3 convs, BatchNorm) + timm transformer blocks. YAML name ``tiny_vit``.

    A conv stem instead of one big patchify conv: at 64 px, three stride-2 convs give an 8x8 grid
    whose tokens already separate colour and shape edges, and the normalisation in the stem is what
    lets colour survive to the output (without it colour questions stay at chance).
    """

    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        stem_channels: Optional[int] = None,
        stem_norm: str = "batch",
        **_: object,
    ) -> None:
        super().__init__()
        n_down = int(math.log2(patch_size))
        if 2**n_down != patch_size:
            raise ValueError(f"tiny_vit: patch_size must be a power of two, got {patch_size}")
        if image_size % patch_size:
            raise ValueError(f"tiny_vit: image_size {image_size} is not a multiple of patch_size {patch_size}")
        if stem_norm not in ("batch", "group"):
            raise ValueError(f"tiny_vit: stem_norm must be 'batch' or 'group', got {stem_norm!r}")
        c = stem_channels or width // 2
        layers = []
        in_ch = 3
        for i in range(n_down):
            out_ch = width if i == n_down - 1 else c
            norm = nn.BatchNorm2d(out_ch) if stem_norm == "batch" else nn.GroupNorm(8, out_ch)
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False), norm, nn.GELU()]
            in_ch = out_ch
        self.stem = nn.Sequential(*layers)
        self.grid = image_size // patch_size
        self.num_tokens = self.grid * self.grid
        self.width = width
        self.image_size = image_size
        # a 2-D sin-cos code of (row, column) at the scale of the stem's output, learnable from there:
        # where a shape is must be visible to the LLM from step one (positions, boxes, "left of")
        self.pos_embed = nn.Parameter(sincos_2d(self.grid, width)[None])
        self.blocks = nn.ModuleList(
            [Block(width, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width)

    @property
    def out_dim(self) -> int:
        return self.width

    @classmethod
    def from_config(cls, cfg) -> "TinyViTEncoder":
        return cls(**{k: v for k, v in dict(cfg).items() if k not in ("name", "freeze", "precision")})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)  # [B, C, g, g]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # [B, g*g, C]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
