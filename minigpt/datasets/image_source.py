"""Image sources: how a training reader obtains a sample's image when the training data path asks for more than pixels.

A reader normally opens, decodes and transforms each image. The training data path may attach an
*image source* to a copy of a reader (:func:`with_image_source`); the reader then hands the source
the image's location (a file path, or ``<shard url>#<member>`` for webdataset shards) and a
``read()`` callable that does the decode and transform, and puts whatever the source returns under
``"image"``. Two sources exist:

- :class:`CachedFeatureSource` (the vision feature cache, ``run.vision_feature_cache``) returns an
  :class:`ImageRef` holding the image's cache key, and the pixels only when the key is not cached
  yet, so a cached image is never decoded;
- :class:`ScanImageSource` (length-grouped batching, ``run.group_by_length``) returns an
  :class:`ImageRef` without pixels: a pass over a dataset's texts that only needs to know
  whether a sample has an image.

:func:`minigpt.datasets.collate.collate_samples` turns a batch of :class:`ImageRef` into
``image_key`` / ``image_pixels`` / ``image_pixel_rows`` (see there). Readers that support sources:
every :class:`~minigpt.datasets.datasets.base_dataset.BaseDataset` that reads images through
``load_image`` (captions, VQA, LLaVA, Flickr, RefCOCO) and the webdataset caption stream; video
readers do not (their samples keep their pixels).
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, Optional, Tuple

import torch

# batch keys collate_samples writes for a batch of ImageRef (and the vision feature cache reads)
IMAGE_KEY = "image_key"
IMAGE_PIXELS = "image_pixels"
IMAGE_PIXEL_ROWS = "image_pixel_rows"


@dataclass
class ImageRef:
    """A sample's image as a cache key, with its processed pixels when they were read (``None`` when not)."""

    key: str
    pixels: Optional[torch.Tensor] = None


def location_identity(location: str) -> str:
    """``location`` made stable across runs: an absolute path plus the file's size and modification time.

    ``<shard>#<member>`` locations take the shard's identity. A replaced or rewritten file gets a
    new identity, so features cached for the old content are not reused. URIs (``s3://...``) are
    kept as they are.
    """
    path, sep, member = location.partition("#")
    if "://" in path:
        return location
    path = os.path.abspath(os.path.expanduser(path))
    try:
        st = os.stat(path)
        stamp = f"|{st.st_size}|{st.st_mtime_ns}"
    except OSError:  # the reader reports the missing file when it reads it
        stamp = "|missing"
    return f"{path}{stamp}{sep}{member}"


def processor_fingerprint(processor: Any) -> str:
    """A processor's class and settings as text, e.g. ``ImageEvalProcessor(image_size=64, mean=..., std=...)``.

    The settings are the processor's ``CONFIG_KEYS`` read back from its attributes (the values it
    resolved, such as the default mean and std), else its instance attributes.
    """
    if processor is None:
        return "None"
    keys = list(getattr(processor, "CONFIG_KEYS", {}) or {})
    if keys:
        items = {k: getattr(processor, k, None) for k in keys}
    else:
        items = {
            k: v for k, v in sorted(vars(processor).items()) if not k.startswith("_") and k != "transform"
        }
    return (
        f"{type(processor).__module__}.{type(processor).__qualname__}("
        + ", ".join(f"{k}={v!r}" for k, v in items.items())
        + ")"
    )


def is_deterministic_processor(processor: Any) -> bool:
    """Whether ``processor`` maps the same image to the same tensor every time.

    ``image_eval`` is; ``image_train`` (random resized crop) is not; any other processor counts only
    when it says so with a class attribute ``deterministic = True``.
    """
    from minigpt.processors.image import ImageEvalProcessor, ImageTrainProcessor

    if isinstance(processor, ImageTrainProcessor):
        return False
    if isinstance(processor, ImageEvalProcessor):
        return True
    return getattr(processor, "deterministic", False) is True


def supports_image_source(dataset: Any) -> bool:
    """Whether the reader ``dataset`` consults an attached image source (it has the ``image_source`` hook)."""
    return hasattr(dataset, "image_source") and bool(getattr(dataset, "read_images", True))


def with_image_source(dataset: Any, source: Callable[[str, Callable[[], Any]], Any]) -> Any:
    """A shallow copy of the reader ``dataset`` that obtains its images through ``source``.

    The copy shares the records; the original stays as it was (evaluation and sample generation
    read it unchanged). ``ValueError`` when the reader has no image-source hook.
    """
    if not supports_image_source(dataset):
        raise ValueError(
            f"dataset {getattr(dataset, 'name', type(dataset).__name__)!r} cannot take an image source"
        )
    other = copy.copy(dataset)
    other.image_source = source
    return other


class ScanImageSource:
    """Never reads an image: returns ``ImageRef(location)`` so a pass over the samples sees which have one."""

    def __call__(self, location: str, read: Callable[[], Any]) -> ImageRef:
        return ImageRef(location)


class CachedFeatureSource:
    """The vision feature cache's image source for one dataset: an image's key, and its pixels unless cached.

    ``known`` is the collection of cache keys whose features are stored (the cache's live set in
    this process; a DataLoader worker sees the set as it was when the worker started).
    ``processor`` is the dataset's image processor, which must be deterministic; its fingerprint
    is part of every key, so the same file processed two ways has two entries.
    """

    def __init__(self, known: Collection[str], processor: Any, dataset: str = "?") -> None:
        if not is_deterministic_processor(processor):
            raise ValueError(
                f"dataset {dataset!r}: the vision feature cache needs a deterministic image processor, but its "
                f"training processor {processor_fingerprint(processor)} is not (random augmentation would be "
                "frozen into the cache); use image_eval for this dataset or turn run.vision_feature_cache off"
            )
        self.known = known
        self.processor_id = processor_fingerprint(processor)
        self._shards: Dict[str, str] = {}  # shard path -> identity (stat once per shard)

    def key_of(self, location: str) -> str:
        """The cache key of the image at ``location`` under this dataset's processor (40 hex digits)."""
        path, sep, member = location.partition("#")
        if sep:  # one stat per shard, not per member
            ident = self._shards.get(path)
            if ident is None:
                ident = self._shards[path] = location_identity(path)
            ident = f"{ident}#{member}"
        else:
            ident = location_identity(location)
        return hashlib.sha1(f"{self.processor_id}\n{ident}".encode()).hexdigest()

    def __call__(self, location: str, read: Callable[[], Any]) -> ImageRef:
        key = self.key_of(location)
        if key in self.known:
            return ImageRef(key)
        return ImageRef(key, read())


def split_refs(values: list) -> Tuple[list, list]:
    """``(rows holding an ImageRef, other rows)`` of a batch column."""
    refs = [i for i, v in enumerate(values) if isinstance(v, ImageRef)]
    others = [i for i in range(len(values)) if not isinstance(values[i], ImageRef)]
    return refs, others
