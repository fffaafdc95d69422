"""Video files within read limits: the byte cap, and the frame size the container declares, before decoding.

A video reader (decord, i.e. FFmpeg) allocates frames of whatever size the file declares, so an
absurd size in a header (or a multi-gigabyte file) is refused here, from the file's size and the
first bytes of its container, never by decoding it. :func:`declared_frame_size` reads the frame
size of an AVI (RIFF ``avih`` and the video stream's ``strf``), MP4/MOV (ISO BMFF: each video
track's sample description) or Matroska/WebM file (``Tracks`` > ``Video`` > ``PixelWidth`` /
``PixelHeight``); the largest declared size counts. Another container, or one whose header is not
where these look, declares nothing here: only the byte cap applies, and a corrupt file then fails
in the decoder as ``decode_error``.
"""

from __future__ import annotations

import struct
from typing import Iterator, List, Optional, Tuple

from minigpt.common.io import DatasetError, ReadLimits, check_local_file

Size = Tuple[int, int]

HEADER_BYTES = 4 << 20  # what is read of an AVI or Matroska file (their headers come first)
MAX_MOOV_BYTES = 64 << 20  # an MP4 'moov' box larger than this is not read (no size is declared then)

_MKV_SEGMENT, _MKV_TRACKS, _MKV_CLUSTER = 0x18538067, 0x1654AE6B, 0x1F43B675
_MKV_TRACK_ENTRY, _MKV_VIDEO, _MKV_WIDTH, _MKV_HEIGHT = 0xAE, 0xE0, 0xB0, 0xBA


def check_video_file(path: str, limits: ReadLimits, dataset: str, sample_id: Optional[str] = None) -> None:
    """Refuse ``path`` before decoding: missing, not a file, empty, over ``max_video_bytes`` or
    declaring frames over ``max_video_frame_pixels`` (``too_large``). A URI is not checked."""
    check_local_file(path, limits.max_video_bytes, "video file", dataset, sample_id, cap="max_video_bytes")
    if "://" in path or not limits.max_video_frame_pixels:
        return
    size = declared_frame_size(path)
    if size is not None and size[0] * size[1] > limits.max_video_frame_pixels:
        where = f"dataset {dataset!r}" + (f", sample {sample_id!r}" if sample_id else "")
        raise DatasetError(
            f"{where}: video {path} declares {size[0]}x{size[1]} frames, more than "
            f"read_limits.max_video_frame_pixels={limits.max_video_frame_pixels}",
            kind="too_large", path=path, sample_id=sample_id,
        )


def declared_frame_size(path: str) -> Optional[Size]:
    """``(width, height)`` the container of ``path`` declares (the largest, if several), or None."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        try:
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                fh.seek(0)
                return _largest(_avi_sizes(fh.read(HEADER_BYTES)))
            if head[:4] == b"\x1a\x45\xdf\xa3":
                fh.seek(0)
                return _largest(_mkv_sizes(fh.read(HEADER_BYTES)))
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                return _largest(_mp4_sizes(fh))
        except (IndexError, ValueError, struct.error):  # a header cut short or garbled: it declares nothing
            return None
    return None


def _largest(sizes: List[Size]) -> Optional[Size]:
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


# -- AVI -------------------------------------------------------------------------------------------
def _riff_chunks(buf: bytes, start: int, end: int) -> Iterator[Tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        fourcc, size = buf[pos:pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
        yield fourcc, pos + 8, min(end, pos + 8 + size)
        pos += 8 + size + (size & 1)


def _avi_sizes(buf: bytes) -> List[Size]:
    sizes: List[Size] = []

    def walk(start: int, end: int) -> None:
        video_stream = False
        for fourcc, lo, hi in _riff_chunks(buf, start, end):
            if fourcc == b"LIST" and buf[lo:lo + 4] in (b"hdrl", b"strl"):
                walk(lo + 4, hi)
            elif fourcc == b"avih":  # MainAVIHeader: dwWidth, dwHeight after eight DWORDs
                sizes.append(struct.unpack_from("<II", buf, lo + 32))
            elif fourcc == b"strh":
                video_stream = buf[lo:lo + 4] == b"vids"
            elif fourcc == b"strf" and video_stream:  # BITMAPINFOHEADER: biWidth, biHeight (negative: top-down)
                w, h = struct.unpack_from("<ii", buf, lo + 4)
                sizes.append((abs(w), abs(h)))

    walk(12, len(buf))
    return sizes


# -- MP4 / MOV -------------------------------------------------------------------------------------
def _boxes(buf: bytes, start: int, end: int) -> Iterator[Tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", buf, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise ValueError(f"box {kind!r} of {size} bytes")
        yield kind, pos + head, min(end, pos + size)
        pos += size


def _mp4_sizes(fh) -> List[Size]:
    # top-level boxes are skipped by seeking (the media data may come before 'moov')
    fh.seek(0, 2)
    file_end = fh.tell()
    pos = 0
    while pos + 8 <= file_end:
        fh.seek(pos)
        size, kind = struct.unpack(">I4s", fh.read(8))
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", fh.read(8))[0], 16
        elif size == 0:
            size = file_end - pos
        if size < head:
            return []
        if kind == b"moov":
            if size - head > MAX_MOOV_BYTES:
                return []
            moov = fh.read(size - head)
            return [s for kind, lo, hi in _boxes(moov, 0, len(moov)) if kind == b"trak"
                    for s in _track_size(moov, lo, hi)]
        pos += size
    return []


def _child(buf: bytes, start: int, end: int, kind: bytes) -> Optional[Tuple[int, int]]:
    return next(((lo, hi) for k, lo, hi in _boxes(buf, start, end) if k == kind), None)


def _track_size(buf: bytes, start: int, end: int) -> List[Size]:
    mdia = _child(buf, start, end, b"mdia")
    hdlr = mdia and _child(buf, *mdia, b"hdlr")
    if not hdlr or buf[hdlr[0] + 8:hdlr[0] + 12] != b"vide":  # handler type after version/flags, pre_defined
        return []
    stsd = None
    for kind in (b"minf", b"stbl", b"stsd"):
        stsd = _child(buf, *(stsd or mdia), kind)
        if stsd is None:
            return []
    # stsd: version/flags, entry count, then the first VisualSampleEntry: size, format, 6 reserved bytes,
    # data_reference_index, 16 pre_defined/reserved bytes, width and height (16 bits each)
    return [struct.unpack_from(">HH", buf, stsd[0] + 8 + 32)]


# -- Matroska / WebM -------------------------------------------------------------------------------
def _vint(buf: bytes, pos: int, keep_marker: bool) -> Tuple[int, int, bool]:
    """An EBML variable-length integer at ``pos``: (value, next position, all value bits set)."""
    first = buf[pos]
    if first == 0:
        raise ValueError("EBML integer longer than 8 bytes")
    length = 9 - first.bit_length()
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for byte in buf[pos + 1:pos + length]:
        value = (value << 8) | byte
    return value, pos + length, not keep_marker and value == (1 << (7 * length)) - 1


def _elements(buf: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    pos = start
    while pos < end:
        eid, pos, _ = _vint(buf, pos, True)
        size, pos, unknown = _vint(buf, pos, False)
        stop = end if unknown else min(end, pos + size)  # an element of unknown size runs to its parent's end
        yield eid, pos, stop
        pos = stop


def _mkv_sizes(buf: bytes) -> List[Size]:
    sizes: List[Size] = []
    for eid, lo, hi in _elements(buf, 0, len(buf)):
        if eid != _MKV_SEGMENT:
            continue
        for child, clo, chi in _elements(buf, lo, hi):
            if child == _MKV_CLUSTER:  # the media data: the tracks come before it
                return sizes
            if child != _MKV_TRACKS:
                continue
            for entry, elo, ehi in _elements(buf, clo, chi):
                video = entry == _MKV_TRACK_ENTRY and next(
                    ((vlo, vhi) for v, vlo, vhi in _elements(buf, elo, ehi) if v == _MKV_VIDEO), None)
                if video:
                    fields = {f: int.from_bytes(buf[flo:fhi], "big") for f, flo, fhi in _elements(buf, *video)}
                    sizes.append((fields.get(_MKV_WIDTH, 0), fields.get(_MKV_HEIGHT, 0)))
    return sizes
