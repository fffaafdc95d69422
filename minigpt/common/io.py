"""File access for every reader: annotations, images, shards (datasets, processors and evaluation alike).

Every annotation file, image and tar shard is read through one iopath ``PathManager``
(:data:`path_manager`), so a local path and a path served by a registered handler (e.g. a
remote store) read the same way. The helpers raise :class:`DatasetError` subclasses whose
message names the dataset, the sample and the path, and whose ``kind`` (:data:`SKIP_KINDS`) says
what was wrong, instead of returning ``None``. Images are read within :class:`ReadLimits` (bytes
and pixels checked before anything is decoded; defaults in ``configs/datasets/read_limits.yaml``),
and annotation paths stay inside their dataset's root (:func:`contained_path`).
"""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import stat
import struct
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from iopath.common.file_io import PathManager
from PIL import Image, UnidentifiedImageError

from minigpt.common.image_decode import load_whole

path_manager = PathManager()

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


# What can be wrong with a sample: every skipped read and dropped annotation record is counted under
# one of these kinds (skip records, the data_stats of a batch, the end-of-run summary).
SKIP_KINDS: Dict[str, str] = {
    "missing_file": "the image, video or shard does not exist",
    "not_a_file": "a directory, device or pipe where a file was expected",
    "empty_file": "a zero-byte file",
    "too_large": "over a read_limits cap: max_image_bytes / max_image_pixels, max_video_bytes / max_video_frame_pixels",
    "decode_error": "a corrupt or truncated image, video or JSON member",
    "bad_size": "an image side under read_limits.min_image_side, or a recorded width/height that is not positive",
    "bad_box": "a box that is inverted, empty, not numeric or outside its image",
    "bad_text_encoding": "text that is not UTF-8",
    "placeholder_in_text": "annotation text holding the image placeholder the reader adds itself",
    "outside_data_root": "a file path that is absolute or climbs out of the dataset's root with '..'",
    "wrong_type": "an annotation entry or field that is missing or of the wrong JSON type",
    "unreadable": "any other read failure",
}


class DatasetError(RuntimeError):
    """A sample or annotation file that cannot be read; the message names dataset, sample and path.

    ``kind`` (a key of :data:`SKIP_KINDS`) says what was wrong, ``path`` and ``sample_id`` where;
    a skipped read is counted under its kind.
    """

    default_kind = "unreadable"

    def __init__(
        self, message: str = "", kind: Optional[str] = None, path: Optional[str] = None, sample_id: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.kind = kind or self.default_kind
        if self.kind not in SKIP_KINDS:
            raise ValueError(f"unknown bad-data kind {self.kind!r}; kinds: {', '.join(SKIP_KINDS)}")
        self.path = path
        self.sample_id = sample_id

    def prefixed(self, prefix: str) -> "DatasetError":
        """The same error (class, kind, path) with ``prefix`` in front of its message."""
        return type(self)(f"{prefix}: {self}", kind=self.kind, path=self.path, sample_id=self.sample_id)


class MissingDataError(DatasetError, FileNotFoundError):
    """An annotation file, shard or image that does not exist."""

    default_kind = "missing_file"


class SkipRateExceeded(DatasetError):
    """Too many of one dataset's samples were unreadable: the run stops instead of training on what is left.

    Raised by :class:`minigpt.datasets.datasets.base_dataset.SkipTracker` once a dataset's share
    of skipped reads passes ``run.max_skip_rate``; the message names the dataset, the rate, the
    threshold and the last error.
    """


def _is_uri(path: str) -> bool:
    return "://" in path


def resolve_path(root: Optional[str], path: str) -> str:
    """``path`` joined to ``root`` unless it is absolute or a URI (``s3://...``)."""
    path = os.path.expanduser(str(path))
    if root is None or os.path.isabs(path) or _is_uri(path):
        return path
    root = str(root)
    if _is_uri(root):
        return root.rstrip("/") + "/" + path
    return os.path.join(root, path)


def _where(dataset: str, sample_id: Optional[str]) -> str:
    return f"dataset {dataset!r}" + (f", sample {sample_id!r}" if sample_id else "")


READ_LIMITS_YAML = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "datasets", "read_limits.yaml"
)


@dataclass(frozen=True)
class ReadLimits:
    """The caps and path rule a reader applies to the files its annotations name (``read_limits`` block).

    The defaults and their meaning are in ``configs/datasets/read_limits.yaml`` (:func:`default_read_limits`);
    every dataset block can override them under ``datasets.<name>.read_limits``. ``None`` (or 0) for a cap
    turns it off.
    """

    max_image_bytes: Optional[int]
    max_image_pixels: Optional[int]
    min_image_side: int
    allow_outside_root: bool
    max_video_bytes: Optional[int] = None
    max_video_frame_pixels: Optional[int] = None

    @classmethod
    def from_config(cls, cfg: Any) -> "ReadLimits":
        """From a ``read_limits`` mapping holding every key of the default YAML."""
        return cls(
            max_image_bytes=_cap(cfg["max_image_bytes"]),
            max_image_pixels=_cap(cfg["max_image_pixels"]),
            min_image_side=int(cfg["min_image_side"] or 0),
            allow_outside_root=bool(cfg["allow_outside_root"]),
            max_video_bytes=_cap(cfg["max_video_bytes"]),
            max_video_frame_pixels=_cap(cfg["max_video_frame_pixels"]),
        )


def _cap(value: Any) -> Optional[int]:
    """A byte or pixel cap: ``None`` or 0 turn it off."""
    if value is None:
        return None
    return int(value) or None


@lru_cache(maxsize=1)
def _load_read_limits_yaml() -> Dict[str, Any]:
    import yaml

    with open(READ_LIMITS_YAML, encoding="utf-8") as f:
        return dict(yaml.safe_load(f)["read_limits"])


def default_read_limits_config() -> Dict[str, Any]:
    """The ``read_limits`` block of ``configs/datasets/read_limits.yaml`` (the one place defaults live), a copy."""
    return dict(_load_read_limits_yaml())


def default_read_limits() -> ReadLimits:
    """:class:`ReadLimits` of ``configs/datasets/read_limits.yaml``, for readers built without a builder."""
    return ReadLimits.from_config(default_read_limits_config())


def contained_path(root: Optional[str], rel_path: str, limits: ReadLimits, dataset: str, sample_id: Optional[str]) -> str:
    """``rel_path`` (from an annotation) resolved under ``root``; refused when it leaves ``root``.

    The check is lexical: an absolute path, a ``~`` path, a URI or one whose ``..`` climbs above
    ``root`` raises :class:`DatasetError` of kind ``outside_data_root`` unless
    ``limits.allow_outside_root``. Symlinks inside ``root`` are followed, not judged: they are put
    there by whoever set up the data root (a link to a disk of images), unlike annotation text.
    """
    text = str(rel_path)
    if not limits.allow_outside_root and root is not None:
        normal = os.path.normpath(text.replace("\\", "/"))
        if os.path.isabs(text) or text.startswith("~") or _is_uri(text) or normal == ".." or normal.startswith("../"):
            raise DatasetError(
                f"{_where(dataset, sample_id)}: path {text!r} leaves the dataset root {root} "
                "(set read_limits.allow_outside_root: true in the dataset's config to read it)",
                kind="outside_data_root", path=text, sample_id=sample_id,
            )
    return resolve_path(root, text)


def check_local_file(
    path: str, max_bytes: Optional[int], what: str, dataset: str, sample_id: Optional[str] = None,
    cap: str = "max_image_bytes",
) -> None:
    """Refuse a local ``path`` before it is opened: missing (:class:`MissingDataError`), a directory,
    device or pipe (``/dev/zero``: ``not_a_file``), empty (``empty_file``) or over ``max_bytes``
    (``too_large``, naming ``read_limits.<cap>``). A URI is not checked here.
    """
    if _is_uri(path):
        return
    where = _where(dataset, sample_id)

    def error(message: str, kind: str) -> DatasetError:
        return DatasetError(f"{where}: {what} {path} {message}", kind=kind, path=path, sample_id=sample_id)

    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise MissingDataError(f"{where}: {what} not found: {path}", path=path, sample_id=sample_id) from exc
    except OSError as exc:
        raise error(f"cannot be read: {exc}", "unreadable") from exc
    if stat.S_ISDIR(st.st_mode):
        raise error("is a directory", "not_a_file")
    if not stat.S_ISREG(st.st_mode):
        raise error("is not a regular file (a device, pipe or socket)", "not_a_file")
    if max_bytes and st.st_size > max_bytes:
        raise error(f"holds {st.st_size} bytes, more than read_limits.{cap}={max_bytes}", "too_large")
    if st.st_size == 0:
        raise error("is empty (0 bytes)", "empty_file")


def read_file_capped(
    path: str, max_bytes: Optional[int], what: str, dataset: str, sample_id: Optional[str] = None
) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them (``None``: no cap).

    A local path is checked first (:func:`check_local_file`); the read itself stops after
    ``max_bytes + 1`` bytes, so a file growing meanwhile (or a remote one) is never read whole.
    """
    where = _where(dataset, sample_id)

    def error(message: str, kind: str) -> DatasetError:
        return DatasetError(f"{where}: {what} {path} {message}", kind=kind, path=path, sample_id=sample_id)

    check_local_file(path, max_bytes, what, dataset, sample_id)
    try:
        with path_manager.open(path, "rb") as f:
            data = f.read(max_bytes + 1) if max_bytes else f.read()
    except FileNotFoundError as exc:
        raise MissingDataError(f"{where}: {what} not found: {path}", path=path, sample_id=sample_id) from exc
    except IsADirectoryError as exc:
        raise error("is a directory", "not_a_file") from exc
    except MemoryError as exc:
        raise error("does not fit in memory", "too_large") from exc
    except OSError as exc:
        raise error(f"cannot be read: {exc}", "unreadable") from exc
    if max_bytes and len(data) > max_bytes:
        raise error(f"holds more than read_limits.max_image_bytes={max_bytes} bytes", "too_large")
    if not data:
        raise error("is empty (0 bytes)", "empty_file")
    return data


def open_image(
    path: str, dataset: str, sample_id: Optional[str] = None, limits: Optional[ReadLimits] = None
) -> Image.Image:
    """The image at ``path`` as a fully loaded RGB PIL image, within ``limits`` (default: the YAML's)."""
    limits = limits or default_read_limits()
    data = read_file_capped(path, limits.max_image_bytes, "image file", dataset, sample_id)
    return decode_image(data, path, dataset, sample_id, limits)


# what PIL raises for a corrupt file: OSError (truncated), SyntaxError (broken PNG chunk), the rest: lying headers
_DECODE_ERRORS = (OSError, SyntaxError, struct.error, EOFError, ValueError, IndexError)


def decode_image(
    data: bytes, path: str, dataset: str, sample_id: Optional[str] = None, limits: Optional[ReadLimits] = None
) -> Image.Image:
    """Encoded image bytes (read from ``path``, named in errors) as an RGB PIL image.

    The size is checked from the header before any pixel is decoded: more than
    ``limits.max_image_pixels`` is ``too_large``, a side under ``limits.min_image_side`` ``bad_size``.
    """
    limits = limits or default_read_limits()
    where = _where(dataset, sample_id)

    def error(message: str, kind: str) -> DatasetError:
        return DatasetError(f"{where}: {message}", kind=kind, path=path, sample_id=sample_id)

    if not data:
        raise error(f"image {path} is empty (0 bytes)", "empty_file")
    if limits.max_image_bytes and len(data) > limits.max_image_bytes:  # a member of a shard, read already
        raise error(f"image {path} holds {len(data)} bytes, more than read_limits.max_image_bytes", "too_large")
    try:
        with warnings.catch_warnings():  # the pixel cap below replaces PIL's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if limits.max_image_pixels and width * height > limits.max_image_pixels:
            raise error(
                f"image {path} is {width}x{height}, more than read_limits.max_image_pixels="
                f"{limits.max_image_pixels}", "too_large"
            )
        if min(width, height) < limits.min_image_side:
            raise error(
                f"image {path} is {width}x{height}, a side under read_limits.min_image_side={limits.min_image_side}",
                "bad_size",
            )
        load_whole(image)  # decode now, so a truncated file fails here and not inside a transform
        return image.convert("RGB")
    except UnidentifiedImageError as exc:
        raise error(f"unreadable or corrupt image {path}: not a recognised image format", "decode_error") from exc
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise error(f"image {path} is too large to decode: {exc}", "too_large") from exc
    except _DECODE_ERRORS as exc:
        raise error(f"unreadable or corrupt image {path}: {type(exc).__name__}: {exc}", "decode_error") from exc


def _read_bytes(path: str, dataset: str, what: str) -> bytes:
    try:
        with path_manager.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise MissingDataError(f"dataset {dataset!r}: {what} not found: {path}") from exc
    except OSError as exc:
        raise DatasetError(f"dataset {dataset!r}: cannot read {what} {path}: {exc}") from exc


def load_json(path: str, dataset: str) -> Any:
    """A parsed JSON annotation file."""
    data = _read_bytes(path, dataset, "annotation file")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise DatasetError(f"dataset {dataset!r}: annotation file {path} is not valid JSON: {exc}") from exc


# What an annotation pickle may name besides the opcodes for lists, dicts, tuples, strings and numbers:
# the builtin containers and scalars that pickle reaches through a global (Python 2 spells builtins
# ``__builtin__``; protocols 0-2 spell a Python 3 ``bytes`` as ``_codecs.encode(text, "latin1")``).
# Anything else -- os.system, builtins.eval, a class to rebuild -- is refused.
PLAIN_PICKLE_GLOBALS = frozenset(
    [(module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset", "complex", "bytearray")]
    + [("_codecs", "encode")]
)


class UnsafePickleError(DatasetError):
    """A pickle that names a global beyond plain containers and builtin scalars: refused, never run."""


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _PlainDataUnpickler(pickle.Unpickler):
    """Rebuilds plain data only: every global outside :data:`PLAIN_PICKLE_GLOBALS` is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(module, name)


def loads_plain_pickle(data: bytes, path: str, dataset: str) -> Any:
    """Unpickle ``data`` (read from ``path``) holding plain data only; the one pickle reader of the library.

    Lists, dicts, tuples, sets, strings, bytes and numbers load -- including Python 2 pickles such as
    RefCOCO's ``refs(unc).p``, whose byte strings are decoded as latin1. A pickle naming any other
    global (a function to call, a class to rebuild) raises :class:`UnsafePickleError` naming the file
    and the global, before anything it names is imported or called; a broken file raises
    :class:`DatasetError`.
    """
    try:
        # The RefCOCO refs files were written by Python 2; latin1 decodes their byte strings.
        return _PlainDataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise UnsafePickleError(
            f"dataset {dataset!r}: refusing to unpickle {path}: it names the global {exc.qualname}, and an "
            "annotation pickle may hold only plain containers (list, dict, tuple, set) and builtin scalars"
        ) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DatasetError(f"dataset {dataset!r}: cannot unpickle annotation file {path}: {exc}") from exc


def load_pickle(path: str, dataset: str) -> Any:
    """A pickled annotation file (RefCOCO's ``refs(unc).p``), plain data only (:func:`loads_plain_pickle`)."""
    return loads_plain_pickle(_read_bytes(path, dataset, "annotation file"), path, dataset)


def read_text_lines(path: str, what: str) -> List[str]:
    """Non-empty, non-comment (``#``) stripped lines of a text file."""
    try:
        with path_manager.open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as exc:
        raise MissingDataError(f"{what} not found: {path}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def expand_shards(patterns: Union[str, Sequence[str]], root: Optional[str], dataset: str) -> List[str]:
    """Tar shard paths from brace (``train-{00000..00019}.tar``) and glob (``train-*.tar``) patterns.

    Patterns are relative to ``root``. Local brace-expanded names must exist and a local glob
    must match at least one file; URIs are passed through brace expansion only (no listing).
    """
    import braceexpand  # a webdataset dependency

    if isinstance(patterns, str):
        patterns = [patterns]
    urls: List[str] = []
    for pattern in patterns:
        for name in braceexpand.braceexpand(str(pattern)):
            full = resolve_path(root, name)
            if _is_uri(full):
                urls.append(full)
            elif glob.has_magic(full):
                matches = sorted(glob.glob(full))
                if not matches:
                    raise MissingDataError(f"dataset {dataset!r}: shard pattern {full} matches no file")
                urls.extend(matches)
            elif not path_manager.exists(full):
                raise MissingDataError(f"dataset {dataset!r}: shard not found: {full}")
            else:
                urls.append(full)
    if not urls:
        raise MissingDataError(f"dataset {dataset!r}: no shards given (patterns {list(patterns)})")
    return urls


def as_list(value: Union[None, str, Iterable[str]]) -> List[str]:
    """``None`` -> [], a string -> [it], any other iterable -> a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def write_atomically(path: str, write: Callable[[str], None], prefix: str = ".") -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which is fsynced and renamed over ``path``.

    A reader sees the old file or the whole new one, never a part; on any failure the temporary
    file is removed and the error propagates. ``prefix`` starts the temporary name (hidden, and
    outside any ``shard-*`` style pattern a reader globs for).
    """
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f"{prefix}{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
