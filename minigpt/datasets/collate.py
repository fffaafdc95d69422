"""Batching of schema samples for the DataLoader."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from minigpt.common.constants import READ_STATS_KEY
from minigpt.datasets.image_source import IMAGE_KEY, IMAGE_PIXEL_ROWS, IMAGE_PIXELS, ImageRef, split_refs

# columns holding each sample's media: one tensor, several (a list), or None for a text-only sample
MEDIA_KEYS = ("image", "target_image")  # target_image: the images a creation sample is to draw
MAX_REPORTED_ERRORS = 64  # skip records carried per batch (for the log); the counts are always complete


def _ids(samples: List[Dict[str, Any]], indices: List[int]) -> str:
    return ", ".join(str(samples[i].get("sample_id", f"#{i}")) for i in indices[:5]) + (
        " ..." if len(indices) > 5 else ""
    )


def collate_samples(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One batch dict from a list of sample dicts.

    Tensors under a key are stacked (``image``: ``[B, 3, H, W]``). A key that is ``None`` in
    every sample (text-only samples' ``image``) stays ``None``. A media column (``image``) that
    mixes text-only samples (``None``), one-image samples and several-image samples (a list of
    tensors) stays a list with one entry per sample, which the model reads as such, as does one
    mixing images ``[3, H, W]`` and videos ``[T, 3, H, W]`` of one frame size (all videos of one
    length stack to ``[B, T, 3, H, W]``); any other key
    holding tensors in some samples and not in others is an error naming the samples on each side,
    as is a shape mismatch. Every other key becomes a list with one entry per sample; samples
    that lack a key (batches mixing datasets with different evaluation keys) contribute
    ``None`` there. Images handed out as :class:`~minigpt.datasets.image_source.ImageRef` (the
    vision feature cache's data path) become ``image_key``/``image_pixels``/``image_pixel_rows``
    (see :func:`_collate_image_refs`). Read reports that skipping datasets attach (``_read_stats``) are not batched
    but summed into ``batch["data_stats"]`` (see :func:`read_stats`).
    """
    if not samples:
        raise ValueError("collate_samples got an empty list of samples")
    keys: List[str] = []
    for sample in samples:
        if not isinstance(sample, dict):
            raise TypeError(f"collate_samples expects dict samples, got {type(sample).__name__}")
        keys.extend(k for k in sample if k not in keys)
    stats = read_stats(samples)
    if stats is not None:
        samples = [{k: v for k, v in s.items() if k != READ_STATS_KEY} for s in samples]
        keys.remove(READ_STATS_KEY)

    batch: Dict[str, Any] = {}
    for key in keys:
        values = [sample.get(key) for sample in samples]
        if key == "image" and any(isinstance(v, ImageRef) for v in values):
            batch.update(_collate_image_refs(samples, values))
            continue
        tensors = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor)]
        mixed = any(v is None or isinstance(v, (list, tuple)) for v in values) or len(
            {tuple(values[i].shape) for i in tensors}
        ) > 1  # e.g. images [3, H, W] beside videos [T, 3, H, W]
        if key in MEDIA_KEYS and mixed and not all(v is None for v in values):
            batch[key] = _media_column(samples, key, values)
            continue
        if not tensors:
            batch[key] = None if all(v is None for v in values) else values
            continue
        if len(tensors) != len(values):
            others = [i for i in range(len(values)) if i not in set(tensors)]
            raise ValueError(
                f"cannot batch {key!r}: samples {_ids(samples, tensors)} hold tensors but samples "
                f"{_ids(samples, others)} hold {type(values[others[0]]).__name__} (e.g. image and text-only "
                "samples in one batch); keep them in separate batches"
            )
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            by_shape = {}
            for i, v in enumerate(values):
                by_shape.setdefault(tuple(v.shape), []).append(i)
            detail = "; ".join(f"{list(s)}: {_ids(samples, idx)}" for s, idx in by_shape.items())
            raise ValueError(f"cannot stack {key!r}: tensor shapes differ ({detail})")
        batch[key] = torch.stack(values)
    if stats is not None:
        batch["data_stats"] = stats
    return batch


def _frame_shape(t: torch.Tensor) -> tuple:
    """An image's ``[3, H, W]`` and a video's frames ``[T, 3, H, W]`` share ``(3, H, W)``; features keep their shape."""
    return tuple(t.shape[-3:]) if t.dim() >= 3 else tuple(t.shape)


def _media_column(samples: List[Dict[str, Any]], key: str, values: List[Any]) -> List[Any]:
    """A media column kept per sample: None, a tensor, or a list of tensors; images and video frames of one size."""
    shapes: Dict[tuple, List[int]] = {}
    for i, v in enumerate(values):
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"cannot batch {key!r}: sample {_ids(samples, [i])} holds a {type(t).__name__}")
            shapes.setdefault(_frame_shape(t), []).append(i)
    if len(shapes) > 1:
        detail = "; ".join(f"{list(s)}: {_ids(samples, idx)}" for s, idx in shapes.items())
        raise ValueError(f"cannot stack {key!r}: tensor shapes differ ({detail})")
    return [list(v) if isinstance(v, tuple) else v for v in values]


def _collate_image_refs(samples: List[Dict[str, Any]], values: List[Any]) -> Dict[str, Any]:
    """The image column of a batch read through the vision feature cache's image source.

    ``image`` is None (the cache puts the features there); ``image_key`` lists every sample's cache
    key; ``image_pixels`` stacks the pixels of the samples whose features are not cached yet (None
    when all are) and ``image_pixel_rows`` says which samples those are.
    """
    refs, others = split_refs(values)
    if others:
        raise ValueError(
            f"cannot batch 'image': samples {_ids(samples, refs)} hold images but samples "
            f"{_ids(samples, others)} hold {type(values[others[0]]).__name__} (e.g. image and text-only "
            "samples in one batch); keep them in separate batches"
        )
    rows = [i for i, v in enumerate(values) if v.pixels is not None]
    pixels = [values[i].pixels for i in rows]
    shapes = {tuple(p.shape) for p in pixels}
    if len(shapes) > 1:
        raise ValueError(f"cannot stack 'image': tensor shapes differ ({sorted(shapes)}) in samples {_ids(samples, rows)}")
    return {
        "image": None,
        IMAGE_KEY: [v.key for v in values],
        IMAGE_PIXELS: torch.stack(pixels) if pixels else None,
        IMAGE_PIXEL_ROWS: rows,
    }


def read_stats(samples: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The samples' read reports (``_read_stats``, from skipping datasets) summed for one batch.

    ``{"counts": {dataset: [samples, skipped]}, "kinds": {dataset: {kind: skipped}},
    "skipped": [up to 64 skip records], "stream": {dataset: {worker: [epoch, position]}}}``, or None when no sample carries a report.
    ``stream`` keeps the furthest position each stream worker reached, which is where a resumed
    run continues.
    """
    reports = [s.get(READ_STATS_KEY) for s in samples]
    if all(r is None for r in reports):
        return None
    counts: Dict[str, List[int]] = {}
    kinds: Dict[str, Dict[str, int]] = {}
    skipped: List[Dict[str, Any]] = []
    stream: Dict[str, Dict[int, List[int]]] = {}
    for report in reports:
        if report is None:
            continue
        name = str(report["dataset"])
        entry = counts.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += len(report.get("skipped") or ())
        skipped.extend(report.get("skipped") or ())
        for record in report.get("skipped") or ():
            by_kind = kinds.setdefault(name, {})
            by_kind[record.get("kind", "unreadable")] = by_kind.get(record.get("kind", "unreadable"), 0) + 1
        if report.get("stream") is not None:
            worker, epoch, position = (int(v) for v in report["stream"])
            best = stream.setdefault(name, {}).get(worker)
            if best is None or (epoch, position) > tuple(best):
                stream[name][worker] = [epoch, position]
    return {"counts": counts, "kinds": kinds, "skipped": skipped[-MAX_REPORTED_ERRORS:], "stream": stream}


def _rows(value: Any, n: int, key: str) -> List[Any]:
    """A collated column back as one entry per sample."""
    if value is None:
        return [None] * n
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    if isinstance(value, (list, tuple)) and len(value) == n:
        return list(value)
    raise ValueError(f"cannot join batches: column {key!r} holds {type(value).__name__} for {n} samples")


def _batch_len(batch: Dict[str, Any]) -> int:
    sizes = {len(v) for v in batch.values() if isinstance(v, (list, tuple, torch.Tensor))}
    if len(sizes) != 1:
        raise ValueError(f"cannot join batches: a batch's columns disagree on its size ({sorted(sizes)})")
    return sizes.pop()


def join_batches(batches: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Collated batches (e.g. one of each training dataset) as one batch, samples in batch order.

    A media column (``image``) becomes one entry per sample (None, a tensor, or a list), as
    :func:`collate_samples` keeps a mixed column, so pixel images, videos, stored features and
    text-only samples share the batch; another column is stacked when every sample holds a tensor
    of one shape, and is a per-sample list otherwise. Batches read through the vision feature cache
    (``image_key``) cannot be joined: their pixel rows index one batch.
    """
    if not batches:
        raise ValueError("join_batches got no batches")
    if len(batches) == 1:
        return batches[0]
    if any(IMAGE_KEY in b for b in batches):
        raise ValueError(
            "batches read through the vision feature cache cannot be joined (run.batch_mixing: every_dataset "
            "needs run.vision_feature_cache.enabled: false)"
        )
    sizes = [_batch_len(b) for b in batches]
    keys: List[str] = []
    for b in batches:
        keys.extend(k for k in b if k not in keys)
    out: Dict[str, Any] = {}
    for key in keys:
        values = [v for b, n in zip(batches, sizes) for v in _rows(b.get(key), n, key)]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if all(v is None for v in values):
            out[key] = None
        elif key not in MEDIA_KEYS and len(tensors) == len(values) and len({tuple(t.shape) for t in tensors}) == 1:
            out[key] = torch.stack(tensors)
        else:
            out[key] = values
    return out
