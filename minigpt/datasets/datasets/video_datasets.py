"""Video instruction data: Video-ChatGPT's VideoInstruct-100K, and a tiny video writer for fixtures.

A video sample has the one sample schema with the clip in ``"image"``: the video processor's
``FloatTensor[T, 3, H, W]`` (``T`` = ``n_frms``; a batch stacks to ``[B, T, 3, H, W]``). The
instruction starts with the video placeholder ``<Video><VideoHere></Video>``; the model encodes
each frame through its image path and puts the pooled (or concatenated) frames' tokens there.
"""

from __future__ import annotations

import io
import os
import struct
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from minigpt.common.constants import VIDEO_PLACEHOLDER
from minigpt.common.io import DatasetError, MissingDataError, path_manager
from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    Processor,
    require_keys,
)

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")


class VideoInstructDataset(BaseDataset):
    """VideoInstruct-100K question/answer pairs over videos: ``[{"video_id", "q", "a"}, ...]``.

    ``video_id`` names the video file under ``videos_root`` without its extension (ActivityNet's
    ``v_<youtube id>``); the first of ``video_extensions`` that exists is read (an id that already
    ends in one of them is used as it is). The instruction is the video placeholder
    (``<Video><VideoHere></Video>``), the task tag (if any) and ``q``; the answer is ``a`` as written (answers run to paragraphs: no text
    processor). Samples also carry ``"video_id"``. An unreadable or missing video raises the
    :mod:`~minigpt.common.io` error naming the dataset, sample and path; so does one over the
    ``read_limits`` video caps (``max_video_bytes``, ``max_video_frame_pixels`` from the container
    header: ``too_large``), checked before it is decoded (:mod:`minigpt.common.video_files`).
    """

    task = "video_conversation"
    placeholder = VIDEO_PLACEHOLDER

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        videos_root: Optional[str],
        task_tag: Optional[str] = None,
        video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
        read_images: bool = True,
        require_processor: bool = True,
    ) -> None:
        super().__init__(name, vis_processor, text_processor, videos_root, task_tag, None, read_images)
        if vis_processor is None and read_images and require_processor:
            raise ValueError(f"dataset {name!r}: a video processor (vis_processor) is required")
        self.video_extensions = [str(e).lstrip(".").lower() for e in video_extensions]
        if not self.video_extensions:
            raise ValueError(f"dataset {name!r}: video_extensions must list at least one extension")
        # a malformed entry is logged, counted and left out; a file of nothing else is an error
        self.add_json_lists(ann_paths)

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("video_id", "q", "a"), self.name, path, i)
        for key in ("video_id", "q", "a"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise DatasetError(
                    f"dataset {self.name!r}: entry {i} of {path}: {key!r} must be non-empty text, "
                    f"got {entry[key]!r:.200}"
                )
        video_id = entry["video_id"].strip()
        return {
            "key": f"{len(self.records)}:{video_id}",
            "video_id": video_id,
            "question": entry["q"],
            "answer": entry["a"].strip(),
        }

    def video_path(self, video_id: str, sample_id: str) -> str:
        """The file of ``video_id`` under the videos root; ``MissingDataError`` listing what was tried."""
        ext = os.path.splitext(video_id)[1].lstrip(".").lower()
        names = (
            [video_id] if ext in self.video_extensions else [f"{video_id}.{e}" for e in self.video_extensions]
        )
        tried = [self.image_path(n, sample_id) for n in names]  # refused when a name leaves the videos root
        for path in tried:
            if path_manager.exists(path):
                return path
        raise MissingDataError(
            f"dataset {self.name!r}, sample {sample_id!r}: no video file for {video_id!r} "
            f"(tried {', '.join(tried)})"
        )

    def load_video(self, video_id: str, sample_id: str):
        return self.read_video(self.video_path(video_id, sample_id), sample_id)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        return {
            "image": self.load_video(record["video_id"], sample_id),
            "instruction_input": self.instruction(" ".join(record["question"].split())),
            "answer": record["answer"],
            "sample_id": sample_id,
            "task": self.task,
            "video_id": record["video_id"],
        }


# -- writing ------------------------------------------------------------------------------------
def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, body: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body


def write_mjpeg_avi(
    path: Union[str, "os.PathLike[str]"],
    frames: Sequence[np.ndarray],
    fps: Union[int, float, Fraction] = 10,
    quality: int = 95,
) -> str:
    """Write ``frames`` (``uint8 [H, W, 3]`` arrays, all one size) as a Motion-JPEG AVI file.

    For fixtures and synthetic data: an AVI of JPEG frames needs no video encoder (PIL writes
    the frames, the RIFF container is a few structs), and decord/ffmpeg read it with the exact
    frame count and rate. Returns ``path`` as a string.

    decord 0.6 cannot convert Motion-JPEG frames of some narrow widths (16 and 48 pixels among
    them); widths of 32, 56, 64 and most above 64 read back exactly.
    """
    if not frames:
        raise ValueError("write_mjpeg_avi needs at least one frame")
    arrays = [np.asarray(f) for f in frames]
    height, width = arrays[0].shape[:2]
    for n, a in enumerate(arrays):
        if a.dtype != np.uint8 or a.shape != (height, width, 3):
            raise ValueError(
                f"frame {n}: expected uint8 [{height}, {width}, 3], got {a.dtype} {list(a.shape)}"
            )
    rate = Fraction(fps).limit_denominator(1001000)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    jpegs: List[bytes] = []
    for a in arrays:
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, format="JPEG", quality=quality)
        jpegs.append(buf.getvalue())
    n, biggest = len(jpegs), max(len(j) for j in jpegs)
    avi_has_index = 0x10
    main_header = struct.pack(
        "<14I", round(1e6 / float(rate)), 0, 0, avi_has_index, n, 0, 1, biggest, width, height, 0, 0, 0, 0
    )
    # AVISTREAMHEADER after its two fourccs: flags, priority, language, initial frames, then the
    # rate as dwRate / dwScale frames per second, start, length, buffer size, quality (-1:
    # default), sample size (0: varies) and the frame rectangle
    stream_fields = (0, 0, 0, 0, rate.denominator, rate.numerator, 0, n, biggest, -1, 0, 0, 0, width, height)
    stream_header = b"vids" + b"MJPG" + struct.pack("<IHHIIIIIIiI4h", *stream_fields)
    bitmap_info = struct.pack(
        "<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0
    )
    header = _list(
        b"hdrl",
        _chunk(b"avih", main_header)
        + _list(b"strl", _chunk(b"strh", stream_header) + _chunk(b"strf", bitmap_info)),
    )
    movi, index = b"", b""
    keyframe = 0x10
    for jpeg in jpegs:
        # idx1 offsets count from the 'movi' fourcc
        index += b"00dc" + struct.pack("<III", keyframe, 4 + len(movi), len(jpeg))
        movi += _chunk(b"00dc", jpeg)
    body = b"AVI " + header + _list(b"movi", movi) + _chunk(b"idx1", index)
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
