"""What the demo accepts as a video upload: a file within the size, frame-size and length caps that decodes.

As with images (:mod:`minigpt.demo.inputs`), every refusal is a :class:`DemoInputError` whose message
the page shows as is. The checks run cheapest first: the file's size, the frame size its container
declares (:func:`minigpt.common.video_files.declared_frame_size`, read from the header without
decoding), then the frame count and rate decord reports (the length cap), and only then are the
frames the model sees decoded, by the model preset's eval video processor.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Optional, Tuple

import torch

from minigpt.common.io import DatasetError
from minigpt.common.video_files import declared_frame_size
from minigpt.demo.inputs import (
    DemoInputError,
    PathLike,
    UploadLimits,
    megabytes,
    megapixels,
    unreadable_upload,
    uploaded_file,
)

VIDEO_FORMATS = "an MP4, WebM, MKV, AVI or MOV file"


def video_length(path: str) -> Tuple[int, float]:
    """``(frames, frames per second)`` decord reports for ``path``; raises what decord raises."""
    import decord

    reader = decord.VideoReader(path, num_threads=1)
    n = len(reader)
    return n, (float(reader.get_avg_fps()) if n else 0.0)


def check_video(path: Optional[PathLike], limits: Optional[UploadLimits] = None) -> Tuple[str, float]:
    """``(path, seconds)`` of an uploaded video within ``limits``, or a :class:`DemoInputError` saying why not.

    Refused: no file, an empty or unreadable file, one over ``limits.max_video_bytes``, one whose
    header declares frames over ``limits.max_video_frame_pixels``, one decord cannot open (not a
    video, corrupt), one without frames or frame rate, and one longer than ``limits.max_video_seconds``.
    """
    limits = limits if limits is not None else UploadLimits()
    path, name, size = uploaded_file(path, "video", "Upload a video first.")
    if size > limits.max_video_bytes:
        raise DemoInputError(
            f"{name} is {megabytes(size)}; this demo takes videos up to {megabytes(limits.max_video_bytes)}. "
            "Upload a shorter or smaller file."
        )
    try:
        declared = declared_frame_size(path)
    except OSError as exc:
        raise unreadable_upload(name, exc) from exc
    if declared is not None and declared[0] * declared[1] > limits.max_video_frame_pixels:
        w, h = declared
        raise DemoInputError(
            f"{name} has {w}x{h} frames ({megapixels(w * h)}); this demo takes videos up to "
            f"{megapixels(limits.max_video_frame_pixels)} a frame. Upload a smaller video."
        )
    try:
        frames, fps = video_length(path)
    except ImportError as exc:
        raise DemoInputError("This demo cannot read videos: decord is not installed on the server.") from exc
    except Exception as exc:  # noqa: BLE001 - decord raises its own DECORDError, RuntimeError and more
        raise DemoInputError(
            f"{name} cannot be read as a video ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}); "
            f"it may be corrupt. Upload {VIDEO_FORMATS}."
        ) from exc
    if frames <= 0 or not fps > 0:
        raise DemoInputError(f"{name} holds no frames this demo can read; upload another video.")
    seconds = frames / fps
    if seconds > limits.max_video_seconds:
        raise DemoInputError(
            f"{name} lasts {seconds:.1f} s; this demo takes videos up to {limits.max_video_seconds:g} s. "
            "Upload a shorter clip."
        )
    return path, seconds


def load_video(
    path: Optional[PathLike], processor: Callable[[str], torch.Tensor], limits: Optional[UploadLimits] = None
) -> Tuple[torch.Tensor, float]:
    """``(frames [T, 3, H, W], seconds)``: the upload checked by :func:`check_video`, then sampled by ``processor``."""
    path, seconds = check_video(path, limits)
    try:
        frames = processor(path)
    except DatasetError as exc:  # a file whose header read but whose frames do not decode
        name = os.path.basename(path)
        raise DemoInputError(f"{name} cannot be decoded ({exc}); it may be truncated or corrupt.") from exc
    return frames, seconds


def video_key(frames: Any) -> str:
    """A digest of the sampled frames: the same clip uploaded again continues its conversation."""
    frames = frames.detach().cpu().contiguous()
    digest = hashlib.sha256(f"video{tuple(frames.shape)}".encode())
    digest.update(frames.numpy().tobytes())
    return digest.hexdigest()
