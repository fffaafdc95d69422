"""The frame size a video container declares, read from its header without decoding (minigpt/common/video_files.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from minigpt.common.io import DatasetError, ReadLimits, default_read_limits
from minigpt.common.video_files import check_video_file, declared_frame_size
from minigpt.datasets.datasets.video_datasets import write_mjpeg_avi

UNKNOWN_SIZE = b"\x01" + b"\xff" * 7  # an EBML size with every value bit set: "unknown"


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _mp4_track(handler: bytes, width: int, height: int) -> bytes:
    # VisualSampleEntry: size, format, 6 reserved, data_reference_index, 16 pre_defined/reserved, width, height
    entry = struct.pack(">I4s6sH16sHH", 86, b"avc1", bytes(6), 1, bytes(16), width, height) + bytes(50)
    stsd = _box(b"stsd", bytes(4) + struct.pack(">I", 1) + entry)
    hdlr = _box(b"hdlr", bytes(8) + handler + bytes(12) + b"Handler\0")
    return _box(b"trak", _box(b"tkhd", bytes(84)) + _box(b"mdia", _box(b"mdhd", bytes(24)) + hdlr
                                                          + _box(b"minf", _box(b"stbl", stsd))))


def _ebml(eid: bytes, payload: bytes) -> bytes:
    return eid + b"\x01" + len(payload).to_bytes(7, "big") + payload


def _mkv(width: int, height: int, tracks_first: bool = True) -> bytes:
    uint = lambda eid, v: _ebml(eid, v.to_bytes(4, "big"))  # noqa: E731
    video = _ebml(b"\xe0", uint(b"\xb0", width) + uint(b"\xba", height))
    tracks = _ebml(b"\x16\x54\xae\x6b", _ebml(b"\xae", uint(b"\xd7", 1) + uint(b"\x83", 1) + video))
    cluster = b"\x1f\x43\xb6\x75" + UNKNOWN_SIZE + bytes(64)
    body = _ebml(b"\x15\x49\xa9\x66", b"") + (tracks + cluster if tracks_first else cluster + tracks)
    return _ebml(b"\x1a\x45\xdf\xa3", _ebml(b"\x42\x82", b"webm")) + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + body


def test_declared_sizes_of_avi_mp4_and_matroska(tmp_path: Path):
    avi = write_mjpeg_avi(tmp_path / "a.avi", [np.zeros((40, 64, 3), np.uint8)] * 2)
    assert declared_frame_size(avi) == (64, 40)
    # the media data before 'moov', an audio track (its sizes are not frames) before the video track
    mp4 = tmp_path / "a.mp4"
    mp4.write_bytes(_box(b"ftyp", b"isom" + bytes(4)) + _box(b"mdat", bytes(1000))
                    + _box(b"moov", _box(b"mvhd", bytes(100)) + _mp4_track(b"soun", 60000, 60000)
                           + _mp4_track(b"vide", 1920, 1080)))
    assert declared_frame_size(str(mp4)) == (1920, 1080)
    mkv = tmp_path / "a.webm"
    mkv.write_bytes(_mkv(5000, 4000))
    assert declared_frame_size(str(mkv)) == (5000, 4000)
    # tracks after the media data are not looked for; other or cut-short files declare nothing
    mkv.write_bytes(_mkv(5000, 4000, tracks_first=False))
    assert declared_frame_size(str(mkv)) is None
    for data in (b"\x00garbage, not a video" * 10, mp4.read_bytes()[:1200], b"RIFF\x10\x00\x00\x00AVI LIST"):
        (tmp_path / "x").write_bytes(data)
        assert declared_frame_size(str(tmp_path / "x")) is None


def test_check_video_file_caps_bytes_and_declared_frame_pixels(tmp_path: Path):
    avi = write_mjpeg_avi(tmp_path / "a.avi", [np.zeros((40, 64, 3), np.uint8)] * 2)
    limits = default_read_limits()
    assert limits.max_video_bytes == 4 << 30 and limits.max_video_frame_pixels == 4096 * 4096
    check_video_file(avi, limits, "ds")  # within the defaults
    small = ReadLimits(None, None, 2, False, max_video_bytes=100, max_video_frame_pixels=64 * 39)
    with pytest.raises(DatasetError, match=r"'ds', sample 's1': video file .*a\.avi holds \d+ bytes.*max_video_bytes=100"):
        check_video_file(avi, small, "ds", "s1")
    tight = ReadLimits(None, None, 2, False, max_video_bytes=None, max_video_frame_pixels=64 * 39)
    with pytest.raises(DatasetError, match=r"declares 64x40 frames, more than read_limits.max_video_frame_pixels=2496") as info:
        check_video_file(avi, tight, "ds", "s1")
    assert info.value.kind == "too_large" and info.value.path == avi
    for name, kind in (("missing.avi", "missing_file"), ("empty.avi", "empty_file"), ("dir.avi", "not_a_file")):
        if name == "empty.avi":
            (tmp_path / name).write_bytes(b"")
        elif name == "dir.avi":
            (tmp_path / name).mkdir()
        with pytest.raises(DatasetError) as info:
            check_video_file(str(tmp_path / name), limits, "ds")
        assert info.value.kind == kind, name
