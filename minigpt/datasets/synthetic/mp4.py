"""A Motion-JPEG MP4 writer: short videos with no video encoder installed.

Each frame is a JPEG (PIL writes it); the ISO base media file (``ftyp``, ``mdat``, ``moov``) is a
few structs: one video track whose sample entry is ``jpeg`` (FFmpeg's and so decord's MJPEG tag in
MP4/MOV), one chunk, constant frame duration. The same frames and quality give the same bytes.
"""

from __future__ import annotations

import io
import os
import struct
from typing import List, Sequence, Union

import numpy as np
from PIL import Image

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)  # identity, 16.16 / 2.30


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _sample_entry(width: int, height: int) -> bytes:
    # VisualSampleEntry: reserved, data_reference_index, pre_defined/reserved, size, 72 dpi both ways,
    # reserved, one frame per sample, an empty compressor name, 24-bit colour, pre_defined -1
    return _box(
        b"jpeg",
        bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HH", width, height),
        struct.pack(">II", 0x480000, 0x480000), bytes(4), struct.pack(">H", 1), bytes(32),
        struct.pack(">Hh", 24, -1),
    )


def write_mjpeg_mp4(
    path: Union[str, "os.PathLike[str]"], frames: Sequence[np.ndarray], fps: int = 8, quality: int = 95
) -> str:
    """Write ``frames`` (``uint8 [H, W, 3]`` arrays, all one size) as a Motion-JPEG MP4 at ``fps`` (an integer).

    decord reads it back with the exact frame count and rate. Like :func:`write_mjpeg_avi`, widths
    of 32, 56, 64 and most above 64 read back exactly under decord 0.6. Returns ``path`` as a string.
    """
    if not frames:
        raise ValueError("write_mjpeg_mp4 needs at least one frame")
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps}")
    arrays = [np.asarray(f) for f in frames]
    height, width = arrays[0].shape[:2]
    jpegs: List[bytes] = []
    for n, a in enumerate(arrays):
        if a.dtype != np.uint8 or a.shape != (height, width, 3):
            raise ValueError(f"frame {n}: expected uint8 [{height}, {width}, 3], got {a.dtype} {list(a.shape)}")
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, format="JPEG", quality=quality)
        jpegs.append(buf.getvalue())
    n, timescale = len(jpegs), int(fps)
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2mp41")
    mdat = _box(b"mdat", *jpegs)
    first_frame = len(ftyp) + 8  # the chunk starts after mdat's header
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(width, height)),
        _full_box(b"stts", 0, 0, struct.pack(">III", 1, n, 1)),  # n samples of one tick each
        _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, n, 1)),  # one chunk of n samples
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, n), *(struct.pack(">I", len(j)) for j in jpegs)),
        _full_box(b"stco", 0, 0, struct.pack(">II", 1, first_frame)),
    )
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    minf = _box(b"minf", _full_box(b"vmhd", 0, 1, bytes(8)), dinf, stbl)
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, n, 0x55C4, 0))  # language 'und'
    hdlr = _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\0")
    tkhd = _full_box(
        b"tkhd", 0, 3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, n * 1000 // timescale), bytes(8), struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX, struct.pack(">II", width << 16, height << 16),
    )
    mvhd = _full_box(
        b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, n * 1000 // timescale),
        struct.pack(">IH", 0x10000, 0x100), bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2),
    )
    moov = _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))
    path = os.fspath(path)
    with open(path, "wb") as fh:
        fh.write(ftyp + mdat + moov)
    return path
