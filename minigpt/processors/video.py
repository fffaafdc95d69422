"""Video processors: a video file in, ``FloatTensor[T, 3, S, S]`` of sampled, normalised frames out.

Frames are decoded with decord. ``n_frms`` frames are taken from the whole video or from a clip
of it (``start``/``end`` seconds given per call, and optionally a window of ``clip_duration``
seconds inside that): the clip is cut into ``n_frms`` equal segments and one frame is taken
from each, the middle one (``sampling: uniform``) or a random one (``sampling: random``). A
clip with fewer frames than ``n_frms`` repeats frames, so ``T`` is always ``n_frms`` and
batches keep one shape.

The spatial transform is the image processors' own (:mod:`minigpt.processors.image`): the
same resize or random resized crop, bicubic, and CLIP normalisation, run once on the stacked
``uint8`` frames so every frame of a clip gets the same crop.
"""

from __future__ import annotations

import math
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torchvision import transforms

from minigpt.common.io import DatasetError, MissingDataError, path_manager
from minigpt.processors.base import BaseProcessor
from minigpt.processors.image import ImageEvalProcessor, ImageTrainProcessor

SAMPLINGS = ("uniform", "random")

PathLike = Union[str, "os.PathLike[str]"]


def sample_frame_indices(
    first: int,
    stop: int,
    n_frms: int,
    sampling: str = "uniform",
    generator: Optional[torch.Generator] = None,
) -> List[int]:
    """``n_frms`` frame indices from ``first`` (inclusive) to ``stop`` (exclusive), in order.

    The range is cut into ``n_frms`` equal segments; ``uniform`` takes the frame at each
    segment's middle, ``random`` a uniformly random frame of each segment (torch's RNG, or
    ``generator``). With fewer frames than ``n_frms`` some indices repeat.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"frame sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if n_frms <= 0:
        raise ValueError(f"n_frms must be positive, got {n_frms}")
    if not 0 <= first < stop:
        raise ValueError(f"frame range [{first}, {stop}) is empty")
    length = stop - first
    if sampling == "uniform":
        offsets = [0.5] * n_frms
    else:
        offsets = torch.rand(n_frms, generator=generator).tolist()
    # min(): an offset of 1.0 - eps times a segment can still round up to `stop` in floating point
    return [min(stop - 1, first + int((i + u) * length / n_frms)) for i, u in enumerate(offsets)]


def clip_frame_range(
    num_frames: int,
    fps: float,
    start: Optional[float] = None,
    end: Optional[float] = None,
    clip_duration: Optional[float] = None,
    random_window: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Tuple[int, int]:
    """``(first, stop)``: the frames whose timestamps fall in the clip ``[start, end)`` seconds.

    ``start``/``end`` default to the video's start and end; ``end`` past the end is cut to it.
    With ``clip_duration`` shorter than the clip, a window of that many seconds is taken inside
    it: a random one (``random_window``) or the centred one. Raises ``ValueError`` for a clip
    that holds no frame.
    """
    if num_frames <= 0:
        raise ValueError("the video has no frames")
    need_time = start is not None or end is not None or clip_duration is not None
    if need_time and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"clip sampling needs the frame rate, but the video reports {fps} fps")
    if not need_time:
        return 0, num_frames
    duration = num_frames / fps
    lo = 0.0 if start is None else float(start)
    hi = duration if end is None else min(float(end), duration)
    if lo < 0 or (end is not None and float(end) <= lo):
        raise ValueError(f"clip [{start}, {end}] s is not a valid range")
    if lo >= duration:
        raise ValueError(f"clip starts at {lo:g} s but the video lasts {duration:g} s")
    if clip_duration is not None and clip_duration < hi - lo:
        slack = hi - lo - clip_duration
        lo += float(torch.rand((), generator=generator)) * slack if random_window else slack / 2
        hi = lo + clip_duration
    # frame i is shown from i / fps on; round first so 0.5 s * 10 fps is frame 5, not 5.000001
    first = math.ceil(round(lo * fps, 6))
    stop = min(num_frames, math.ceil(round(hi * fps, 6)))
    if stop <= first:  # a clip shorter than one frame still shows the frame it starts in
        first = min(math.floor(lo * fps), num_frames - 1)
        stop = first + 1
    return first, stop


def frames_transform(image_transform: transforms.Compose) -> transforms.Compose:
    """An image processor's PIL transform turned into one on a ``uint8`` ``[T, 3, H, W]`` clip.

    ``ToTensor`` becomes a ``uint8 -> float`` conversion (the same division by 255); every other
    step (resize, random resized crop, normalisation) runs unchanged on the stacked tensor, so
    a random crop is drawn once per clip.
    """
    steps = []
    converted = False
    for step in image_transform.transforms:
        if isinstance(step, transforms.ToTensor):
            steps.append(transforms.ConvertImageDtype(torch.float32))
            converted = True
        else:
            steps.append(step)
    if not converted:
        raise TypeError(f"expected an image transform with a ToTensor step, got {image_transform}")
    return transforms.Compose(steps)


def _decord_errors() -> Tuple[type, ...]:
    import decord

    # decord raises RuntimeError when it cannot open a file and its own DECORDError (an
    # Exception, not a RuntimeError) when it cannot decode or convert a frame
    return (decord.DECORDError, RuntimeError, OSError, ValueError, IndexError)


def open_video(path: PathLike) -> Tuple[str, Any, int, float]:
    """``(path, decord reader, frame count, frames per second)`` of the video file at ``path``.

    Raises :class:`MissingDataError` for a missing file, ``ImportError`` naming the ``video`` extra
    without decord, and :class:`DatasetError` (naming the path) for a file decord cannot open.
    """
    path = os.fspath(path)
    if not path_manager.exists(path):
        raise MissingDataError(f"video file not found: {path}", path=path)
    try:
        import decord
    except ImportError as exc:  # decord has wheels for x86-64 only
        raise ImportError(f"reading video {path} needs decord (pip install 'minigpt-kit[video]')") from exc
    try:
        reader = decord.VideoReader(path_manager.get_local_path(path), num_threads=1)
        num_frames = len(reader)
        fps = float(reader.get_avg_fps()) if num_frames else 0.0
    except _decord_errors() as exc:
        raise DatasetError(f"unreadable or corrupt video {path}: {exc}", "decode_error", path) from exc
    return path, reader, num_frames, fps


def decode_frames(reader: Any, indices: List[int], path: str) -> np.ndarray:
    """Frames ``indices`` of a video opened by :func:`open_video`, as ``uint8 [N, H, W, 3]``."""
    try:
        return reader.get_batch(indices).asnumpy()
    except _decord_errors() as exc:
        raise DatasetError(f"cannot decode frames {indices} of video {path}: {exc}", "decode_error", path) from exc


def _check_n_frms(n_frms: int) -> int:
    if int(n_frms) != n_frms or n_frms <= 0:
        raise ValueError(f"video processor n_frms must be a positive integer, got {n_frms!r}")
    return int(n_frms)


def _check_clip_duration(clip_duration: Optional[float]) -> Optional[float]:
    if clip_duration is None:
        return None
    if not clip_duration > 0:
        raise ValueError(
            f"video processor clip_duration must be positive seconds or null, got {clip_duration!r}"
        )
    return float(clip_duration)


class _VideoProcessor(BaseProcessor):
    n_frms: int
    sampling: str
    clip_duration: Optional[float]
    transform: transforms.Compose
    random_window: bool = False

    def _setup(self, n_frms: int, sampling: str, clip_duration: Optional[float]) -> None:
        self.n_frms = _check_n_frms(n_frms)
        if sampling not in SAMPLINGS:
            raise ValueError(
                f"video processor sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}"
            )
        self.sampling = sampling
        self.clip_duration = _check_clip_duration(clip_duration)

    def read_frames(
        self, path: PathLike, start: Optional[float] = None, end: Optional[float] = None
    ) -> Tuple[torch.Tensor, List[int]]:
        """``(uint8 [T, 3, H, W] frames, their indices in the video)`` of the sampled clip.

        Raises :class:`MissingDataError` for a missing file and :class:`DatasetError` (both
        naming the path) for one decord cannot open or decode, or a clip outside the video.
        """
        path, reader, num_frames, fps = open_video(path)
        if num_frames == 0:
            raise DatasetError(f"video {path} holds no decodable frame", "decode_error", path)
        try:
            first, stop = clip_frame_range(
                num_frames, fps, start, end, self.clip_duration, self.random_window
            )
        except ValueError as exc:
            raise DatasetError(f"video {path} ({num_frames} frames at {fps:g} fps): {exc}", path=path) from exc
        indices = sample_frame_indices(first, stop, self.n_frms, self.sampling)
        frames = decode_frames(reader, indices, path)  # [T, H, W, 3] uint8
        return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), indices  # [T, 3, H, W]

    def __call__(
        self, path: PathLike, start: Optional[float] = None, end: Optional[float] = None
    ) -> torch.Tensor:
        """The sampled frames of ``path`` (optionally of its ``[start, end)`` seconds), transformed."""
        frames, _ = self.read_frames(path, start, end)
        return self.transform(frames)


class VideoTrainProcessor(_VideoProcessor):
    """Training-time video transform, registered as ``video_train``.

    Samples ``n_frms`` frames (``sampling: random`` by default: one random frame per segment),
    from a random window of ``clip_duration`` seconds when that is set, then applies
    ``image_train``'s random resized crop (one crop for the whole clip), bicubic resize to
    ``image_size`` and normalisation. Returns ``FloatTensor[n_frms, 3, image_size, image_size]``.
    """

    CONFIG_KEYS = {
        "image_size": 224,
        "n_frms": 8,
        "sampling": "random",
        "clip_duration": None,
        "mean": None,
        "std": None,
        "min_scale": 0.5,
        "max_scale": 1.0,
    }
    random_window = True

    def __init__(
        self,
        image_size: int = 224,
        n_frms: int = 8,
        sampling: str = "random",
        clip_duration: Optional[float] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
    ) -> None:
        self._setup(n_frms, sampling, clip_duration)
        self.image_processor = ImageTrainProcessor(image_size, mean, std, min_scale, max_scale)
        self.image_size = self.image_processor.image_size
        self.transform = frames_transform(self.image_processor.transform)


class VideoEvalProcessor(_VideoProcessor):
    """Deterministic video transform for evaluation, registered as ``video_eval``.

    Samples ``n_frms`` frames (``sampling: uniform`` by default: each segment's middle frame),
    from the centred window of ``clip_duration`` seconds when that is set, then applies
    ``image_eval``'s bicubic resize to ``image_size`` square and normalisation. Returns
    ``FloatTensor[n_frms, 3, image_size, image_size]``.
    """

    CONFIG_KEYS = {
        "image_size": 224,
        "n_frms": 8,
        "sampling": "uniform",
        "clip_duration": None,
        "mean": None,
        "std": None,
    }

    def __init__(
        self,
        image_size: int = 224,
        n_frms: int = 8,
        sampling: str = "uniform",
        clip_duration: Optional[float] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
    ) -> None:
        self._setup(n_frms, sampling, clip_duration)
        self.image_processor = ImageEvalProcessor(image_size, mean, std)
        self.image_size = self.image_processor.image_size
        self.transform = frames_transform(self.image_processor.transform)
