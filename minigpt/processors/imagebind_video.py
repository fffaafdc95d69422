"""ImageBind's video protocol as a processor: a video file in, ``[clips * crops, 3, frames, S, S]`` views out.

What ImageBind's ``load_and_transform_video_data`` does (facebookresearch/ImageBind, ``imagebind/data.py``),
by default: ``clips`` (5) windows of ``clip_duration`` (2) seconds spread evenly over the video (the
first starts at 0 s, the last ends at the end; pytorchvideo's ``ConstantClipsPerVideoSampler``),
``frames`` (2) frames taken evenly from each window, its first and last frame included
(``UniformTemporalSubsample``), the short side scaled to ``image_size`` (bilinear), CLIP normalisation,
then ``crops`` (3) square crops of ``image_size`` along the long side (start, centre, end). The
``imagebind_vit`` encoder embeds the ``clips * crops`` views and averages the embeddings.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from minigpt.common.io import DatasetError
from minigpt.processors.base import BaseProcessor
from minigpt.processors.image import CLIP_MEAN, CLIP_STD
from minigpt.processors.video import clip_frame_range, decode_frames, open_video

PathLike = Union[str, "os.PathLike[str]"]


def clip_windows(duration: float, clips: int, clip_duration: float) -> List[Tuple[float, float]]:
    """``clips`` windows ``(start, end)`` seconds of ``clip_duration`` each, spread evenly over ``duration``.

    The first starts at 0; the last ends at ``duration`` (a video shorter than one window gives
    ``clips`` copies of the window ``[0, clip_duration)``).
    """
    latest_start = max(duration - clip_duration, 0.0)
    step = latest_start / max(clips - 1, 1)
    return [(i * step, i * step + clip_duration) for i in range(clips)]


def even_indices(first: int, stop: int, n: int) -> List[int]:
    """``n`` frame indices spread evenly over ``[first, stop)``, first and last frame included."""
    last = stop - 1
    return [first + int(v) for v in torch.linspace(0, last - first, n).round().long().tolist()]


def spatial_crops(clip: torch.Tensor, size: int, crops: int) -> List[torch.Tensor]:
    """``[3, T, H, W]`` (short side ``size``) -> ``crops`` views ``[3, T, size, size]``: start, centre, end of the long side."""
    h, w = clip.shape[-2:]
    y, x = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
    where = [1] if crops == 1 else [0, 1, 2]
    out = []
    for idx in where:
        yy, xx = y, x
        if h > w:
            yy = {0: 0, 1: y, 2: h - size}[idx]
        else:
            xx = {0: 0, 1: x, 2: w - size}[idx]
        out.append(clip[..., yy : yy + size, xx : xx + size])
    return out


class ImageBindVideoProcessor(BaseProcessor):
    """ImageBind's video protocol (5 clips of 2 s, 2 frames each, 3 spatial crops). YAML name ``video_imagebind``.

    Returns ``FloatTensor[clips * crops, 3, frames, image_size, image_size]``, clip-major (the crops
    of clip 0 first), the layout the ``imagebind_vit`` encoder averages over.
    """

    CONFIG_KEYS = {
        "image_size": 224,
        "clips": 5,
        "clip_duration": 2.0,
        "frames": 2,
        "crops": 3,
        "mean": None,
        "std": None,
    }

    def __init__(
        self,
        image_size: int = 224,
        clips: int = 5,
        clip_duration: float = 2.0,
        frames: int = 2,
        crops: int = 3,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        for key, value in (("image_size", image_size), ("clips", clips), ("frames", frames)):
            if int(value) != value or value <= 0:
                raise ValueError(f"video_imagebind: {key} must be a positive integer, got {value!r}")
        if crops not in (1, 3):
            raise ValueError(f"video_imagebind: crops must be 1 or 3 (ImageBind's SpatialCrop), got {crops!r}")
        if not clip_duration > 0:
            raise ValueError(f"video_imagebind: clip_duration must be positive seconds, got {clip_duration!r}")
        self.image_size, self.clips, self.frames, self.crops = int(image_size), int(clips), int(frames), int(crops)
        self.clip_duration = float(clip_duration)
        self.mean = torch.tensor(list(mean) if mean is not None else CLIP_MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(list(std) if std is not None else CLIP_STD).view(3, 1, 1, 1)

    @property
    def num_views(self) -> int:
        return self.clips * self.crops

    def frame_indices(self, num_frames: int, fps: float) -> List[List[int]]:
        """The frame indices of each clip window of a video of ``num_frames`` frames at ``fps``."""
        out = []
        for start, end in clip_windows(num_frames / fps, self.clips, self.clip_duration):
            first, stop = clip_frame_range(num_frames, fps, start, end)
            out.append(even_indices(first, stop, self.frames))
        return out

    def _scale(self, clip: torch.Tensor) -> torch.Tensor:
        """``[3, T, H, W]`` float -> the short side at ``image_size`` (bilinear, as pytorchvideo's ShortSideScale)."""
        h, w = clip.shape[-2:]
        if w <= h:
            size = (int(h / w * self.image_size), self.image_size)
        else:
            size = (self.image_size, int(w / h * self.image_size))
        frames = clip.permute(1, 0, 2, 3)  # [T, 3, H, W]
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        return frames.permute(1, 0, 2, 3)

    def __call__(self, path: PathLike) -> torch.Tensor:
        """The ``[clips * crops, 3, frames, S, S]`` views of the video at ``path``."""
        path, reader, num_frames, fps = open_video(path)
        if num_frames == 0 or not (math.isfinite(fps) and fps > 0):
            raise DatasetError(f"video {path} holds no decodable frame or no frame rate", "decode_error", path)
        per_clip = self.frame_indices(num_frames, fps)
        flat = sorted({i for clip in per_clip for i in clip})
        decoded = decode_frames(reader, flat, path)  # [N, H, W, 3] uint8
        frame = {i: torch.from_numpy(decoded[k]) for k, i in enumerate(flat)}
        views = []
        for indices in per_clip:
            clip = torch.stack([frame[i] for i in indices]).permute(3, 0, 1, 2).float() / 255.0  # [3, T, H, W]
            clip = (self._scale(clip) - self.mean) / self.std
            views += spatial_crops(clip, self.image_size, self.crops)
        return torch.stack(views)  # [clips * crops, 3, T, S, S]
