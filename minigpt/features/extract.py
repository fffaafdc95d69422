"""Feature extraction: one embedding per media item of a dataset, in safetensors shards, sharded over ranks, resumable.

The dataset's distinct media ids (:func:`minigpt.common.feature_store.media_id`) are listed in
sample order (a first pass that decodes nothing) and cut into shards of ``shard_size`` ids; shard
``i`` is computed by rank ``i % world_size``, in batches of ``batch_size`` ids in shard order, and
written to ``<name>.tmp`` then renamed, so a shard file is whole or absent. A rerun (after a crash or
``kill -9``) finds the manifest it wrote, checks it describes the same extraction, and computes only
the shards whose files are missing; with the same settings the bytes are the same as an
uninterrupted run's. Rank 0 writes ``features.json`` before any shard (atomically, too).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from minigpt.common import dist_utils
from minigpt.common.feature_store import FEATURES_FORMAT, FEATURES_MANIFEST, shard_file_name


@dataclass(frozen=True)
class MediaItem:
    """One distinct media item: its id, and where to read it (the sample index and its position among the sample's media)."""

    key: str
    split: str
    index: int
    position: int


class _MediaKey:
    """What a probing reader returns for a media item in place of its pixels: the item's id."""

    def __init__(self, key: str) -> None:
        self.key = key


class _Probe:
    """A stand-in feature store that answers every lookup with the media id, so listing the media decodes nothing."""

    def lookup(self, key: str, dataset: str, sample_id: str) -> _MediaKey:
        return _MediaKey(key)


def _flat(entry: Any) -> List[Any]:
    if isinstance(entry, (list, tuple)):
        return [x for item in entry for x in _flat(item)]
    return [] if entry is None else [entry]


def list_media(datasets: Dict[str, Any]) -> List[MediaItem]:
    """Every distinct media id of ``datasets`` (``{split: map-style dataset}``), in split and sample order."""
    seen: Dict[str, MediaItem] = {}
    for split, dataset in datasets.items():
        if not hasattr(dataset, "feature_store") or not hasattr(dataset, "__len__"):
            raise ValueError(
                f"split {split!r} ({type(dataset).__name__}) is not a map-style reader of image or video files; "
                "feature extraction needs one"
            )
        probe = copy.copy(dataset)
        probe.feature_store = _Probe()
        for i in range(len(probe)):
            for pos, item in enumerate(_flat(probe[i]["image"])):
                if not isinstance(item, _MediaKey):
                    raise ValueError(f"split {split!r}, sample {i}: the reader did not look its media up by id")
                if item.key not in seen:
                    seen[item.key] = MediaItem(item.key, split, i, pos)
    return list(seen.values())


def plan_shards(items: Sequence[MediaItem], shard_size: int) -> List[List[MediaItem]]:
    """``items`` cut into shards of ``shard_size`` in order (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [list(items[i : i + shard_size]) for i in range(0, len(items), shard_size)]


def ids_digest(items: Sequence[MediaItem]) -> str:
    return hashlib.sha256("\n".join(i.key for i in items).encode()).hexdigest()


def _write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    with open(path + ".tmp", "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(path + ".tmp", path)


def prepare_manifest(out_dir: str, describe: Dict[str, Any], shards: List[List[MediaItem]], dim: int) -> Dict[str, Any]:
    """The manifest of this extraction; a folder holding another extraction's manifest is an error naming what differs."""
    items = [i for s in shards for i in s]
    manifest = {
        "format": FEATURES_FORMAT,
        **describe,
        "dim": dim,
        "count": len(items),
        "ids_sha256": ids_digest(items),
        "shards": [shard_file_name(i, len(shards)) for i in range(len(shards))],
    }
    path = os.path.join(out_dir, FEATURES_MANIFEST)
    if os.path.isfile(path):
        with open(path) as fh:
            old = json.load(fh)
        differ = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        if differ:
            raise ValueError(
                f"{out_dir} holds features of another extraction (differs in {', '.join(differ)}); "
                "give a new --out folder or remove this one"
            )
    return manifest


def _read_item(datasets: Dict[str, Any], item: MediaItem) -> torch.Tensor:
    media = _flat(datasets[item.split][item.index]["image"])
    return media[item.position]


def extract(
    embedder: Callable[[torch.Tensor], torch.Tensor],
    datasets: Dict[str, Any],
    out_dir: str,
    describe: Dict[str, Any],
    dim: int,
    shard_size: int = 512,
    batch_size: int = 64,
    progress: bool = True,
) -> Dict[str, Any]:
    """Write the features of every media item of ``datasets`` under ``out_dir``; return counts (this rank's work).

    ``embedder`` maps a batch of processed media (``[B, 3, H, W]`` or ``[B, T, 3, H, W]``) to
    ``[B, dim]``; ``describe`` (encoder, dataset, settings) goes into the manifest and must match a
    rerun's.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    items = list_media(datasets)
    if not items:
        raise ValueError(f"dataset {describe.get('dataset')!r} has no media to extract features from")
    shards = plan_shards(items, shard_size)
    manifest = prepare_manifest(out_dir, describe, shards, dim)
    if dist_utils.is_main_process():
        os.makedirs(out_dir, exist_ok=True)
        _write_json_atomic(os.path.join(out_dir, FEATURES_MANIFEST), manifest)
    dist_utils.barrier()
    mine = [i for i in range(len(shards)) if i % world == rank]
    done = [i for i in mine if os.path.isfile(os.path.join(out_dir, manifest["shards"][i]))]
    todo = [i for i in mine if i not in set(done)]
    bar = tqdm(
        total=sum(len(shards[i]) for i in mine), initial=sum(len(shards[i]) for i in done), unit="media",
        desc=f"features (rank {rank})" if world > 1 else "features", disable=not progress, dynamic_ncols=True,
        smoothing=0.1,
    )
    t0 = time.perf_counter()
    for i in todo:
        tensors: Dict[str, torch.Tensor] = {}
        for start in range(0, len(shards[i]), batch_size):
            batch = shards[i][start : start + batch_size]
            media = torch.stack([_read_item(datasets, item) for item in batch])
            out = embedder(media)
            if tuple(out.shape) != (len(batch), dim):
                raise ValueError(f"the embedder gave {tuple(out.shape)} for {len(batch)} items, expected [{len(batch)}, {dim}]")
            for item, row in zip(batch, out):
                tensors[item.key] = row.detach().to("cpu", torch.float32).contiguous().clone()
            bar.update(len(batch))
        final = os.path.join(out_dir, manifest["shards"][i])
        # one metadata key: safetensors writes a map of several in no fixed order
        save_file(tensors, final + ".tmp", metadata={"shard": f"{i}/{len(shards)}"})
        os.replace(final + ".tmp", final)
        bar.set_postfix(shards=f"{len(done) + todo.index(i) + 1}/{len(mine)}")
    bar.close()
    dist_utils.barrier()
    return {"items": len(items), "shards": len(shards), "computed_shards": len(todo), "skipped_shards": len(done),
            "seconds": round(time.perf_counter() - t0, 2), "rank": rank, "world_size": world}


def resolve_splits(available: Sequence[str], wanted: Optional[Sequence[str]]) -> List[str]:
    """``wanted`` checked against ``available`` (all of them when None)."""
    if not wanted:
        return list(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise ValueError(f"split(s) {unknown} not in the dataset (it has {', '.join(available) or 'none'})")
    return list(wanted)

