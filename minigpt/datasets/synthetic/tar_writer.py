"""A minimal tar writer for webdataset shards: fixed metadata, so shards come out byte-identical."""

from __future__ import annotations

from typing import Any

_TAR_BLOCK = 512
_TAR_RECORD = 20 * _TAR_BLOCK  # tar files are padded to whole records of 20 blocks


def _tar_header(name: str, size: int) -> bytes:
    """A POSIX ustar header for a regular file with fixed owner, mode and mtime.

    Written by hand rather than through ``tarfile`` because it is the writer's hot spot (tarfile
    spends more per member than JPEG encoding costs) and fixed metadata keeps shards byte-identical.
    """
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")

    def octal(value: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, value)

    header = bytearray(_TAR_BLOCK)
    header[0:100] = raw.ljust(100, b"\0")
    header[100:108] = octal(0o644, 8)
    header[108:116] = octal(0, 8)  # uid
    header[116:124] = octal(0, 8)  # gid
    header[124:136] = octal(size, 12)
    header[136:148] = octal(0, 12)  # mtime
    header[148:156] = b" " * 8  # checksum is computed with its own field as spaces
    header[156:157] = b"0"  # regular file
    header[257:265] = b"ustar\x0000"
    header[329:337] = octal(0, 8)  # devmajor
    header[337:345] = octal(0, 8)  # devminor
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


class TarWriter:
    """Appends regular files to a tar stream; ``close`` writes the end-of-archive blocks."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self._written = 0

    def add(self, name: str, data: bytes) -> None:
        pad = -len(data) % _TAR_BLOCK
        self._f.write(_tar_header(name, len(data)))
        self._f.write(data)
        if pad:
            self._f.write(b"\0" * pad)
        self._written += _TAR_BLOCK + len(data) + pad

    def close(self) -> None:
        end = self._written + 2 * _TAR_BLOCK
        self._f.write(b"\0" * (2 * _TAR_BLOCK + (-end % _TAR_RECORD)))
