"""The media a batch carries, as one ordered list of items with a count per sample.

A batch's ``image`` entry comes in one of these shapes (all may appear in training, evaluation and
the demo):

- a tensor ``[B, 3, H, W]``: one image per sample, used by the samples whose text holds a media
  slot (rows of text-only prompts are ignored); ``[B, N, C]`` is the same for image features the
  vision feature cache computed, or precomputed features (the ``precomputed`` encoder);
- a list with one entry per sample: ``None`` (text-only), one image ``[3, H, W]``, several images
  as ``[k, 3, H, W]`` or a list of ``[3, H, W]`` tensors, in the order of the sample's slots; with
  the ``precomputed`` encoder, one item's features ``[N, C]`` (or ``[C]``), or a list of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch


@dataclass
class MediaBatch:
    """Every media item of a batch in slot order (sample by sample), and how many each sample has."""

    items: Optional[torch.Tensor]  # [M, ...] stacked items, or None when the batch has none
    counts: List[int]  # [B] items per sample

    @property
    def total(self) -> int:
        return sum(self.counts)


def _sample_items(entry: Any, i: int) -> List[torch.Tensor]:
    if entry is None:
        return []
    if isinstance(entry, torch.Tensor):
        if entry.dim() in (1, 2, 3):  # features [C] / [N, C], or one image [3, H, W]
            return [entry]
        if entry.dim() == 4:
            return list(entry.unbind(0))
        if entry.dim() == 5:  # one video as ImageBind's views [S, 3, T, H, W] (the video_imagebind processor)
            return [entry]
        raise ValueError(
            f"sample {i}: an image is [3, H, W] (several: [k, 3, H, W]), features [N, C]; got shape {tuple(entry.shape)}"
        )
    if isinstance(entry, (list, tuple)):
        items = []
        for item in entry:
            items += _sample_items(item, i)
        return items
    raise TypeError(f"sample {i}: image must be a tensor, a list of tensors or None, got {type(entry).__name__}")


def gather_media(images: Any, slot_counts: Sequence[int]) -> MediaBatch:
    """The batch's media items matched to the media slots each sample's text holds.

    ``slot_counts[i]`` is the number of slots in sample ``i``'s text. A batched tensor gives each
    sample with a slot its row (a second slot in such a sample is an error: it has one image);
    a list must give each sample exactly as many items as it has slots.
    """
    counts = [int(c) for c in slot_counts]
    if not any(counts):
        return MediaBatch(None, counts)
    if images is None:
        raise ValueError("the prompts hold media slots (<ImageHere>) but no images were given")
    if isinstance(images, torch.Tensor):
        if images.shape[0] != len(counts):
            raise ValueError(f"{images.shape[0]} images for {len(counts)} samples")
        over = [i for i, c in enumerate(counts) if c > 1]
        if over:
            raise ValueError(
                f"sample {over[0]}: {counts[over[0]]} <ImageHere> slots but a batched image tensor holds one "
                "image per sample; pass a list of [k, 3, H, W] tensors for several images"
            )
        rows = torch.tensor([c > 0 for c in counts], device=images.device)
        return MediaBatch(images[rows], counts)
    if len(images) != len(counts):
        raise ValueError(f"{len(images)} image entries for {len(counts)} samples")
    items: List[torch.Tensor] = []
    for i, (entry, slots) in enumerate(zip(images, counts)):
        got = _sample_items(entry, i)
        if slots and len(got) != slots:
            raise ValueError(f"sample {i}: {slots} <ImageHere> slot(s) in the text but {len(got)} image(s)")
        if slots:
            items += got
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch must share a shape, got {sorted(shapes)}")
    return MediaBatch(torch.stack(items), counts)
