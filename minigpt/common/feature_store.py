"""Precomputed media features on disk: safetensors shards keyed by media id, and the reader datasets use.

A feature folder (written by ``python -m minigpt.features extract``) holds

- ``features.json``: what was extracted (encoder, dataset, embedding shape) and the shard files in order;
- ``features-<i>-of-<n>.safetensors``: one tensor per media item (``[dim]`` or ``[tokens, dim]``),
  named by the item's *media id*: its file's path relative to the dataset's media root, ``/``-separated
  (``videos/clip_0001.mp4``, ``COCO_train2014_000000000009.jpg``).

:class:`FeatureStore` maps a media id to its tensor. A dataset given ``features_dir`` hands it each
item's media id instead of decoding pixels (:meth:`FeatureStore.lookup`); a missing id is a
:class:`~minigpt.common.io.MissingDataError` naming the dataset, the sample, the id and the folder.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import torch

from minigpt.common.io import DatasetError, MissingDataError

FEATURES_MANIFEST = "features.json"
FEATURES_FORMAT = "minigpt.features/1"


def shard_file_name(index: int, count: int) -> str:
    """The file name of shard ``index`` of ``count`` (zero-based)."""
    return f"features-{index:05d}-of-{count:05d}.safetensors"


def media_id(path: str, root: Optional[str]) -> str:
    """The media id of the file at ``path``: its path under ``root`` with ``/`` separators.

    A webdataset member (``<shard>#<member>``) is named ``<shard file name>#<member>``; a path
    outside ``root`` (or no root) keeps its file name only.
    """
    path, sep, member = str(path).partition("#")
    if sep:
        return f"{os.path.basename(path)}#{member}"
    if root:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(str(root)))
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return os.path.basename(path)


def read_manifest(folder: str) -> Dict[str, Any]:
    """``features.json`` of ``folder``; ``MissingDataError`` when absent, ``DatasetError`` when not a manifest."""
    path = os.path.join(folder, FEATURES_MANIFEST)
    if not os.path.isfile(path):
        raise MissingDataError(
            f"features_dir {folder}: no {FEATURES_MANIFEST} (write one with python -m minigpt.features extract)",
            path=path,
        )
    with open(path) as fh:
        try:
            manifest = json.load(fh)
        except ValueError as exc:
            raise DatasetError(f"features_dir {folder}: {FEATURES_MANIFEST} is not JSON ({exc})", path=path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FEATURES_FORMAT:
        raise DatasetError(
            f"features_dir {folder}: {FEATURES_MANIFEST} is not a {FEATURES_FORMAT} manifest", path=path
        )
    return manifest


class FeatureStore:
    """Read-only access to one feature folder: ``store[media_id]`` -> ``FloatTensor[dim]`` (or ``[tokens, dim]``).

    The shards' headers are indexed on first use (in each process: the store pickles without its
    tensors, so DataLoader workers open their own). A shard's tensors are read the first time one
    of its ids is asked for and kept.
    """

    def __init__(self, folder: str) -> None:
        self.folder = str(folder)
        self.manifest = read_manifest(self.folder)
        self.shards: List[str] = [str(s) for s in self.manifest.get("shards", [])]
        missing = [s for s in self.shards if not os.path.isfile(os.path.join(self.folder, s))]
        if missing:
            raise MissingDataError(
                f"features_dir {self.folder}: {len(missing)} of {len(self.shards)} shards missing "
                f"(first: {missing[0]}); rerun the extraction, which writes only the missing ones",
                path=os.path.join(self.folder, missing[0]),
            )
        self._index: Optional[Dict[str, int]] = None
        self._loaded: Dict[int, Dict[str, torch.Tensor]] = {}

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_index": None, "_loaded": {}}

    def _build_index(self) -> Dict[str, int]:
        from safetensors import safe_open

        index: Dict[str, int] = {}
        for i, name in enumerate(self.shards):
            with safe_open(os.path.join(self.folder, name), framework="pt") as fh:
                for key in fh.keys():
                    index[key] = i
        return index

    @property
    def ids(self) -> List[str]:
        """Every stored media id."""
        if self._index is None:
            self._index = self._build_index()
        return list(self._index)

    def __contains__(self, key: str) -> bool:
        if self._index is None:
            self._index = self._build_index()
        return key in self._index

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: str) -> torch.Tensor:
        if self._index is None:
            self._index = self._build_index()
        shard = self._index.get(key)
        if shard is None:
            raise KeyError(key)
        if shard not in self._loaded:
            from safetensors.torch import load_file

            self._loaded[shard] = load_file(os.path.join(self.folder, self.shards[shard]))
        return self._loaded[shard][key]

    def lookup(self, key: str, dataset: str, sample_id: str) -> torch.Tensor:
        """The features of media ``key`` for ``sample_id`` of ``dataset``; an error naming the sample when it has none."""
        try:
            return self[key]
        except KeyError:
            raise MissingDataError(
                f"dataset {dataset!r}, sample {sample_id!r}: no stored features for media {key!r} in "
                f"features_dir {self.folder} ({len(self)} ids; extracted from dataset "
                f"{self.manifest.get('dataset')!r})",
                sample_id=sample_id,
            ) from None

    def __repr__(self) -> str:
        return f"FeatureStore({self.folder!r}, shards={len(self.shards)})"
