"""One embedding per image or video from a model's vision encoder, the way ImageBind embeds a clip.

ImageBind's video path embeds each 2-frame clip with one temporal patch embedding, so a single
vector can say which way something moved, and an image is a clip of the same frame twice. The
:class:`ClipEmbedder` does this with any registered image encoder: it takes ``frames`` frames of a
clip (spread over the processed ``[T, 3, H, W]`` frames; an image is repeated), encodes each, pools
each frame's token grid to ``pool_grid x pool_grid`` cells and concatenates the cells of all frames:
``frames * pool_grid**2 * encoder width`` numbers, which keep where things are in each frame. With
``centre``, each channel is given relative to its mean over the clip's cells (all frames): what every cell
shares (the background) drops out and what tells the cells apart (where the object is, its colour in
each frame) is all that is left, so a linear projection trained from scratch finds it at once.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ClipEmbedder(nn.Module):
    """``[B, 3, H, W]`` images or ``[B, T, 3, H, W]`` clips -> ``[B, out_dim]`` embeddings (frozen, eval mode)."""

    def __init__(self, encoder: nn.Module, frames: int = 2, pool_grid: int = 1, centre: bool = False) -> None:
        super().__init__()
        if frames < 1 or pool_grid < 1:
            raise ValueError(f"frames and pool_grid must be >= 1, got {frames} and {pool_grid}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.frames = int(frames)
        self.pool_grid = int(pool_grid)
        self.centre = bool(centre)
        width = getattr(encoder, "out_dim", None) or getattr(encoder, "width", None)
        if not isinstance(width, int):
            raise ValueError(f"{type(encoder).__name__} does not say its output width (out_dim)")
        self.width = width
        self.out_dim = self.frames * self.pool_grid**2 * width

    def pick_frames(self, media: torch.Tensor) -> torch.Tensor:
        """``[B, frames, 3, H, W]``: an image repeated, or ``frames`` of a clip's frames evenly spread, first and last included."""
        if media.dim() == 4:
            return media[:, None].expand(-1, self.frames, -1, -1, -1)
        if media.dim() != 5:
            raise ValueError(f"expected images [B, 3, H, W] or clips [B, T, 3, H, W], got {tuple(media.shape)}")
        t = media.shape[1]
        index = torch.linspace(0, t - 1, self.frames).round().long() if self.frames > 1 else torch.tensor([t // 2])
        return media[:, index]

    @torch.no_grad()
    def forward(self, media: torch.Tensor) -> torch.Tensor:
        clips = self.pick_frames(media)
        b, f = clips.shape[:2]
        tokens = self.encoder(clips.flatten(0, 1))  # [B*F, N, C]
        n = tokens.shape[1]
        grid = math.isqrt(n)
        if grid * grid != n:
            raise ValueError(f"{type(self.encoder).__name__} gives {n} tokens, not a square grid to pool")
        maps = tokens.transpose(1, 2).reshape(b * f, self.width, grid, grid)  # [B*F, C, g, g]
        cells = F.adaptive_avg_pool2d(maps, self.pool_grid)  # [B*F, C, p, p]
        cells = cells.reshape(b, f, self.width, self.pool_grid**2)  # [B, F, C, p*p]
        if self.centre:
            cells = cells - cells.mean(dim=(1, 3), keepdim=True)
        return cells.reshape(b, f * self.width * self.pool_grid**2).float()


def build_embedder(encoder: str, checkpoints: Sequence[str] = (), frames: int = 2, pool_grid: int = 1,
                   centre: bool = False, model_type: Optional[str] = None) -> ClipEmbedder:
    """A :class:`ClipEmbedder` over the vision encoder of model preset ``encoder`` (``arch`` or ``arch:model_type``).

    ``checkpoints`` (trained-parameter files or stage folders, e.g. a stage-0 run) are loaded into
    the model first, later ones over earlier ones.
    """
    from minigpt.common.registry import RegistryError, registry
    from minigpt.models import load_model

    arch, _, preset = str(encoder).partition(":")
    try:
        registry.get_model_class(arch)
    except RegistryError as exc:
        raise ValueError(f"--encoder {encoder!r}: {exc} (give a model preset as ARCH or ARCH:MODEL_TYPE)") from exc
    ckpt = list(checkpoints) or None
    model = load_model(arch, preset or model_type, is_eval=True, checkpoint=ckpt)
    part = getattr(model, "vision_encoder", None)
    if part is None:
        raise ValueError(f"--encoder {encoder!r}: the model has no vision_encoder")
    return ClipEmbedder(part, frames=frames, pool_grid=pool_grid, centre=centre)
