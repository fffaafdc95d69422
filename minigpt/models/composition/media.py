"""The media a batch carries, as ordered lists of images and videos with each sample's slot kinds.

A sample's text says how many media slots it has and of which kind (``<ImageHere>``: an image,
``<VideoHere>``: a video, see :func:`~minigpt.models.composition.layout.media_kinds`). A batch's
``image`` entry comes in one of these shapes (all may appear in training, evaluation and the demo):

- a tensor ``[B, 3, H, W]``: one image per sample, used by the samples whose text holds a media
  slot (rows of text-only prompts are ignored); ``[B, N, C]`` is the same for image features the
  vision feature cache computed, or precomputed features (the ``precomputed`` encoder);
  ``[B, T, 3, H, W]``: one video of ``T`` frames per sample (the video processors' output, stacked);
- a list with one entry per sample: ``None`` (text-only), one image ``[3, H, W]``, one video
  ``[T, 3, H, W]`` (for a sample whose slot is a video), several images as ``[k, 3, H, W]``, or a
  list of images and videos in the order of the sample's slots; with the ``precomputed`` encoder,
  one item's features ``[N, C]`` (or ``[C]``), or a list of them; on an image slot, a video the
  encoder reads whole (the ``video_imagebind`` processor's clip views ``[S, 3, T, H, W]``: one item).

So text-only, image and video samples mix in one batch; the images of a batch share one shape, and
so do its videos (frame count and size).

A model with a stored-feature chain beside its pixel chain (``model.media_paths.features``) reads
every item of one or two dimensions (``[C]`` / ``[N, C]``: what the feature store hands out) as
stored features, whatever its slot's kind, and every other item as pixels; such items are of kind
``feature`` in :attr:`MediaBatch.kinds` and go through that chain. So pixel images, videos,
stored features and text-only samples share one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

import torch

from minigpt.common.constants import IMAGE_TOKEN, VIDEO_TOKEN

IMAGE, VIDEO = "image", "video"
FEATURE = "feature"  # an item of stored features going through the model's stored-feature chain
_SLOT_TOKEN = {IMAGE: IMAGE_TOKEN, VIDEO: VIDEO_TOKEN}
# an item's dimensions per slot kind: pixels ([3, H, W] / [T, 3, H, W]) or features ([N, C] / [C])
# (an image slot also takes a video its encoder reads whole, as ImageBind's clip views [S, 3, T, H, W])
_ITEM_DIMS = {IMAGE: (1, 2, 3, 5), VIDEO: (1, 2, 4)}
_ITEM_SHAPES = {
    IMAGE: "[3, H, W] (features: [N, C]; a video read whole: [S, 3, T, H, W])",
    VIDEO: "[T, 3, H, W] frames (features: [N, C])",
}


@dataclass
class MediaBatch:
    """Every media item of a batch in slot order (sample by sample), split by kind, and the slots per sample."""

    items: Optional[torch.Tensor]  # [M, ...] the batch's images in slot order, or None when it has none
    counts: List[int]  # [B] media slots (images and videos) per sample
    videos: Optional[torch.Tensor] = None  # [V, T, 3, H, W] the batch's videos in slot order, or None
    kinds: List[str] = field(default_factory=list)  # each slot's kind ("image" / "video" / "feature"), batch order
    features: Optional[torch.Tensor] = None  # [F, N, C] or [F, C] stored features in slot order (FEATURE slots)

    @property
    def total(self) -> int:
        return sum(self.counts)


def _sample_items(entry: Any, kinds: Sequence[str], i: int) -> List[torch.Tensor]:
    """The items of one sample's ``image`` entry, read against its slot kinds (a 4-D tensor on a video
    slot is that video; elsewhere it is ``k`` images)."""
    out: List[torch.Tensor] = []

    def take(x: Any) -> None:
        if x is None:
            return
        if isinstance(x, torch.Tensor):
            kind = kinds[len(out)] if len(out) < len(kinds) else IMAGE
            if x.dim() == 5 and kind == VIDEO:  # several videos [k, T, 3, H, W]
                out.extend(x.unbind(0))
            elif x.dim() == 5:  # one video its encoder reads whole: ImageBind's views [S, 3, T, H, W]
                out.append(x)
            elif x.dim() == 4 and kind != VIDEO:  # several images [k, 3, H, W]
                out.extend(x.unbind(0))
            elif 1 <= x.dim() <= 4:
                out.append(x)
            else:
                raise ValueError(
                    f"sample {i}: an image is [3, H, W] (several: [k, 3, H, W]), a video [T, 3, H, W], "
                    f"features [N, C]; got shape {tuple(x.shape)}"
                )
            return
        if isinstance(x, (list, tuple)):
            for y in x:
                take(y)
            return
        raise TypeError(f"sample {i}: image must be a tensor, a list of tensors or None, got {type(x).__name__}")

    take(entry)
    return out


def _check_item(item: torch.Tensor, kind: str, i: int, slot: int) -> None:
    if item.dim() not in _ITEM_DIMS[kind]:
        raise ValueError(
            f"sample {i}: media slot {slot} is {_SLOT_TOKEN[kind]}, which takes {_ITEM_SHAPES[kind]}; "
            f"got shape {tuple(item.shape)}"
        )


def _stack(items: List[torch.Tensor], what: str) -> Optional[torch.Tensor]:
    if not items:
        return None
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        raise ValueError(f"{what} of one batch must share a shape, got {sorted(shapes)}")
    return torch.stack(items)


def _as_kinds(slots: Sequence[Union[int, Sequence[str]]]) -> List[List[str]]:
    return [[IMAGE] * int(s) if isinstance(s, int) else list(s) for s in slots]


def _is_feature(item: torch.Tensor) -> bool:
    return item.dim() <= 2  # [C] / [N, C]: pixels are [3, H, W] and up


def gather_media(
    images: Any, slots: Sequence[Union[int, Sequence[str]]], stored_features: bool = False
) -> MediaBatch:
    """The batch's media items matched to the media slots each sample's text holds.

    ``slots[i]`` lists the kinds of sample ``i``'s slots in order (``PromptLayout.slot_kinds``), or
    is their number when all are images. A batched tensor gives each sample with a slot its row (a
    second slot in such a sample is an error: it has one item); a list must give each sample exactly
    as many items as it has slots, each of its slot's kind.

    ``stored_features``: the model has a stored-feature chain; items of one or two dimensions (in a
    batched tensor: ``[B, C]`` / ``[B, N, C]``) are then of kind ``feature`` (see the module notes).
    """
    kinds = _as_kinds(slots)
    counts = [len(k) for k in kinds]
    if not any(counts):
        return MediaBatch(None, counts)
    if images is None:
        raise ValueError(f"the prompts hold media slots ({IMAGE_TOKEN} / {VIDEO_TOKEN}) but no media were given")
    if isinstance(images, torch.Tensor):
        if images.shape[0] != len(counts):
            raise ValueError(f"{images.shape[0]} images for {len(counts)} samples")
        over = [i for i, c in enumerate(counts) if c > 1]
        if over:
            raise ValueError(
                f"sample {over[0]}: {counts[over[0]]} media slots but a batched image tensor holds one image per "
                "sample (or one video); pass a list of [k, 3, H, W] tensors for several images"
            )
        if stored_features and images.dim() <= 3:  # one item of stored features per sample with a slot
            rows = torch.tensor([c > 0 for c in counts], device=images.device)
            return MediaBatch(None, counts, None, [FEATURE] * sum(counts), images[rows])
        if all(k == [IMAGE] for k in kinds if k) and images.dim() != 5:
            for i, k in enumerate(kinds):  # the common case: one image per row, no copy
                if k:
                    _check_item(images[i], IMAGE, i, 0)
                    break
            rows = torch.tensor([c > 0 for c in counts], device=images.device)
            return MediaBatch(images[rows], counts, None, [IMAGE] * sum(counts))
        per_sample: List[List[torch.Tensor]] = [[images[i]] if k else [] for i, k in enumerate(kinds)]
    else:
        if len(images) != len(counts):
            raise ValueError(f"{len(images)} image entries for {len(counts)} samples")
        per_sample = []
        for i, (entry, k) in enumerate(zip(images, kinds)):
            got = _sample_items(entry, k, i)
            if k and len(got) != len(k):
                if set(k) == {IMAGE}:
                    raise ValueError(f"sample {i}: {len(k)} {IMAGE_TOKEN} slot(s) in the text but {len(got)} image(s)")
                raise ValueError(
                    f"sample {i}: {len(k)} media slot(s) in the text ({', '.join(k)}) but {len(got)} item(s)"
                )
            per_sample.append(got if k else [])
    flat_kinds: List[str] = []
    by_kind: dict = {IMAGE: [], VIDEO: [], FEATURE: []}
    for i, (got, k) in enumerate(zip(per_sample, kinds)):
        for slot, (item, kind) in enumerate(zip(got, k)):
            if stored_features and _is_feature(item):
                kind = FEATURE
            else:
                _check_item(item, kind, i, slot)
            by_kind[kind].append(item)
            flat_kinds.append(kind)
    return MediaBatch(
        _stack(by_kind[IMAGE], "images"), counts, _stack(by_kind[VIDEO], "videos"), flat_kinds,
        _stack(by_kind[FEATURE], "stored features"),
    )
