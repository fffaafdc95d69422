"""Image processors: a PIL image in, a normalised ``FloatTensor[3, S, S]`` out."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from minigpt.processors.base import BaseProcessor

# The statistics the CLIP / EVA vision towers were trained with.
CLIP_MEAN: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def _stats(
    values: Optional[Sequence[float]], default: Tuple[float, float, float], key: str
) -> Tuple[float, ...]:
    if values is None:
        return default
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"image processor {key} must have 3 values (one per RGB channel), got {values}")
    if key == "std" and any(v <= 0 for v in values):
        raise ValueError(f"image processor std must be positive, got {values}")
    return values


def _check_size(image_size: int) -> int:
    if int(image_size) != image_size or image_size <= 0:
        raise ValueError(f"image processor image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


class _ImageProcessor(BaseProcessor):
    transform: transforms.Compose

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"{type(self).__name__} expects a PIL image, got {type(image).__name__}")
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image)

    def _normalised(self, *geometry: object) -> transforms.Compose:
        """``geometry`` (the crop / resize steps), then ``ToTensor`` and normalisation with ``mean``/``std``."""
        return transforms.Compose([*geometry, transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])


class _SquareImageProcessor(_ImageProcessor):
    """A deterministic transform to ``image_size`` square: :meth:`_geometry`, then tensor and normalisation."""

    CONFIG_KEYS = {"image_size": 224, "mean": None, "std": None}

    def __init__(
        self,
        image_size: int = 224,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        self.image_size = _check_size(image_size)
        self.mean, self.std = _stats(mean, CLIP_MEAN, "mean"), _stats(std, CLIP_STD, "std")
        self.transform = self._normalised(*self._geometry())

    def _geometry(self) -> Tuple[object, ...]:
        raise NotImplementedError


class ImageTrainProcessor(_ImageProcessor):
    """Training-time image transform, registered as ``image_train``.

    A random resized crop covering ``min_scale``..``max_scale`` of the image area, resized to
    ``image_size`` square with bicubic interpolation, then ``ToTensor`` and normalisation with the
    CLIP statistics (or the ``mean``/``std`` given). No horizontal flip: captions and boxes say
    "left" and "right".
    """

    CONFIG_KEYS = {"image_size": 224, "mean": None, "std": None, "min_scale": 0.5, "max_scale": 1.0}

    def __init__(
        self,
        image_size: int = 224,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
    ) -> None:
        self.image_size = _check_size(image_size)
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(
                f"image_train needs 0 < min_scale <= max_scale <= 1, got min_scale={min_scale}, "
                f"max_scale={max_scale}"
            )
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.mean, self.std = _stats(mean, CLIP_MEAN, "mean"), _stats(std, CLIP_STD, "std")
        self.transform = self._normalised(
            transforms.RandomResizedCrop(
                self.image_size,
                scale=(self.min_scale, self.max_scale),
                interpolation=InterpolationMode.BICUBIC,
            )
        )


class ImageEvalProcessor(_SquareImageProcessor):
    """Deterministic image transform for evaluation, registered as ``image_eval``.

    Resizes to ``image_size`` x ``image_size`` (bicubic, aspect ratio not kept, so a box given as
    fractions of the width and height stays where it was), then ``ToTensor`` and normalisation.
    """

    def _geometry(self) -> Tuple[object, ...]:
        return (transforms.Resize((self.image_size, self.image_size), interpolation=InterpolationMode.BICUBIC),)


class ImageCenterCropProcessor(_SquareImageProcessor):
    """ImageBind's image transform, registered as ``image_center_crop``.

    The short side resized to ``image_size`` (bicubic, aspect ratio kept), the centre square of
    ``image_size`` cropped, then ``ToTensor`` and normalisation (CLIP's statistics by default, as
    ImageBind's ``load_and_transform_vision_data``).
    """

    def _geometry(self) -> Tuple[object, ...]:
        return (
            transforms.Resize(self.image_size, interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(self.image_size),
        )
