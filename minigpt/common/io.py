"""File access for every reader: annotations, images, shards (datasets, processors and evaluation alike).

Every annotation file, image and tar shard is read through one iopath ``PathManager``
(:data:`path_manager`), so a local path and a path served by a registered handler (e.g. a
remote store) read the same way. The helpers raise :class:`DatasetError` subclasses whose
message names the dataset, the sample and the path, instead of returning ``None``.
"""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

from iopath.common.file_io import PathManager
from PIL import Image, UnidentifiedImageError

path_manager = PathManager()

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")


class DatasetError(RuntimeError):
    """A sample or annotation file that cannot be read; the message names dataset, sample and path."""


class MissingDataError(DatasetError, FileNotFoundError):
    """An annotation file, shard or image that does not exist."""


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


def open_image(path: str, dataset: str, sample_id: Optional[str] = None) -> Image.Image:
    """The image at ``path`` as a fully loaded RGB PIL image."""
    try:
        with path_manager.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise MissingDataError(f"{_where(dataset, sample_id)}: image file not found: {path}") from exc
    except OSError as exc:
        raise DatasetError(f"{_where(dataset, sample_id)}: cannot read image {path}: {exc}") from exc
    return decode_image(data, path, dataset, sample_id)


def decode_image(data: bytes, path: str, dataset: str, sample_id: Optional[str] = None) -> Image.Image:
    """Encoded image bytes (read from ``path``, named in errors) as an RGB PIL image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now, so a truncated file fails here and not inside a transform
        return image.convert("RGB")
    except UnidentifiedImageError as exc:
        # PIL's own message names only the in-memory buffer
        raise DatasetError(
            f"{_where(dataset, sample_id)}: unreadable or corrupt image {path}: not a recognised image format"
        ) from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"{_where(dataset, sample_id)}: unreadable or corrupt image {path}: {exc}"
        ) from exc


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
