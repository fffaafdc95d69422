"""The vision feature cache: the frozen start of the image path computed once per image, reused every epoch.

In stages where the vision encoder is frozen (and, deeper, a frozen Q-Former or a frozen
projector), its output for an image never changes, yet without a cache it is recomputed every time
the image comes round. With ``run.vision_feature_cache.enabled`` the runner stores that output
(:meth:`MultimodalLLM.vision_prefix`, up to :meth:`MultimodalLLM.vision_cache_point`) per image and
hands the model the stored features instead of pixels; a cached image is not even decoded (the
readers' image-source hook, :mod:`minigpt.datasets.image_source`).

Keys: an image's location made stable (absolute path, or ``<shard>#<member>``, plus the file's size
and modification time) together with its dataset's image processor and settings. Only
deterministic processors are accepted (``image_eval``); ``image_train``'s random crop, or a vision
encoder that trains, is an error before any work (``ConfigError`` from the config checks, or
``ValueError`` here naming the dataset or the key).

Storage (``run.vision_feature_cache.storage``): ``memory`` keeps the features in RAM for this run;
``disk`` writes them as safetensors shards under ``<dir>/<fingerprint>/`` (``dir`` defaults to
``<output_dir>/vision_feature_cache``), each shard written to a temporary file and renamed into
place, and a later run reuses them. The fingerprint hashes every frozen weight and buffer of the
cached parts, their classes, the cache point, the storage dtype and the autocast setting, so
features of other weights are never reused: a changed encoder gets a new, empty folder (the old
one is left for the user to delete). Disk shards are written when ``shard_size`` features are
pending, at every checkpoint and at the end of training, so after a crash a resumed run finds what
the uninterrupted run had at that point (exact resume on one process; see the README).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minigpt.common import dist_utils
from minigpt.common.io import write_atomically
from minigpt.common.registry import registry
from minigpt.datasets.image_source import (
    IMAGE_KEY,
    IMAGE_PIXEL_ROWS,
    IMAGE_PIXELS,
    CachedFeatureSource,
    is_deterministic_processor,
    processor_fingerprint,
    supports_image_source,
    with_image_source,
)

logger = logging.getLogger(__name__)

FORMAT = "minigpt.vision_feature_cache.v1"
STORAGES = ("memory", "disk")
DTYPES: Dict[Optional[str], Optional[torch.dtype]] = {
    None: None,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
MANIFEST = "manifest.json"
MAX_OPEN_SHARDS = 64


def _frozen_parts(model, point: str) -> List[Tuple[str, torch.nn.Module]]:
    parts = [("vision_encoder", model.vision_encoder)]
    if point in ("projector", "projector_prefix"):
        parts.append(("projector", model.projector))
    return parts


def vision_fingerprint(
    model, point: str, dtype: Optional[str] = None, amp: str = "none"
) -> Tuple[str, Dict[str, Any]]:
    """``(sha256 hex, description)`` of what the cached features depend on.

    Hashes, for each part up to ``point``, its class and every frozen parameter and buffer (name,
    dtype, shape, bytes); trainable parameters (a Q-Former projector's linear layers) are left out,
    as the cached prefix does not use them. ``dtype`` (storage) and ``amp`` (autocast) go in too.
    """
    h = hashlib.sha256()
    desc: Dict[str, Any] = {"format": FORMAT, "point": point, "dtype": dtype, "amp": amp, "parts": {}}
    h.update(json.dumps({k: desc[k] for k in ("format", "point", "dtype", "amp")}, sort_keys=True).encode())
    for name, module in _frozen_parts(model, point):
        cls = f"{type(module).__module__}.{type(module).__qualname__}"
        h.update(f"part {name} {cls}\n".encode())
        trainable = {n for n, p in module.named_parameters() if p.requires_grad}
        n_tensors = n_values = 0
        for key, tensor in module.state_dict().items():
            if key in trainable:
                continue
            t = tensor.detach()
            h.update(f"{key} {t.dtype} {tuple(t.shape)}\n".encode())
            if t.device.type == "meta":
                raise ValueError(f"vision feature cache: {name}.{key} has no data (a meta-device model)")
            flat = t.to("cpu").contiguous().reshape(-1)
            if flat.numel():
                h.update(flat.view(torch.uint8).numpy())  # the bytes, hashed in place
            n_tensors += 1
            n_values += t.numel()
        desc["parts"][name] = {"class": cls, "tensors": n_tensors, "values": n_values}
    return h.hexdigest(), desc


class VisionFeatureCache:
    """Stores the frozen start of the image path per image and swaps it in for pixels in training batches.

    Not a registered component; the runner builds it from ``run.vision_feature_cache``
    (:meth:`from_run_config`). Life cycle: :meth:`attach` gives each training dataset an image
    source (before its loader is built), :meth:`open` fingerprints the model and reads the disk index
    (after any checkpoint is loaded, before the first batch), :meth:`apply` turns each collated
    batch into one whose ``image`` holds features, :meth:`flush` writes pending features (disk).

    ``model`` must have a frozen vision encoder (:meth:`MultimodalLLM.vision_cache_point` not None);
    the cache sets ``model.vision_feature_point`` so that the model reads 3-D ``image`` tensors as
    these features. ``autocast`` is the runner's autocast context factory: features are computed
    under the same precision the model's own forward would use.
    """

    def __init__(
        self,
        model,
        storage: str = "memory",
        directory: Optional[str] = None,
        dtype: Optional[str] = None,
        shard_size: int = 1024,
        autocast: Optional[Callable[[], Any]] = None,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(
                f"run.vision_feature_cache.storage={storage!r}: expected one of {', '.join(STORAGES)}"
            )
        if dtype not in DTYPES:
            raise ValueError(
                f"run.vision_feature_cache.dtype={dtype!r}: expected null or one of "
                f"{', '.join(k for k in DTYPES if k)}"
            )
        if storage == "disk" and not directory:
            raise ValueError("run.vision_feature_cache: storage disk needs a directory")
        if int(shard_size) < 1:
            raise ValueError(f"run.vision_feature_cache.shard_size={shard_size!r} must be >= 1")
        was_training = model.training
        model.train()  # judged as the model runs in training (dropout, batch statistics active where they train)
        point = model.vision_cache_point()
        model.train(was_training)
        if point is None:
            raise ValueError(
                "run.vision_feature_cache.enabled=true needs a frozen vision encoder (model.vision_encoder.freeze: "
                "true, no trainable encoder parameter, no active dropout/batch statistics): the features of an "
                "encoder that trains change every step and cannot be cached"
            )
        self.model = model
        self.point = point
        self.storage = storage
        self.base_dir = directory
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.shard_size = int(shard_size)
        self.autocast = autocast or contextlib.nullcontext
        model.vision_feature_point = point
        # the keys whose features are stored: shared (by reference) with the datasets' image sources
        self.known: set = set()
        self._mem: Dict[str, torch.Tensor] = {}  # memory storage; with disk, the features not yet flushed
        self._index: Dict[str, str] = {}  # disk: key -> shard file
        self._handles: "OrderedDict[str, Any]" = OrderedDict()
        self.fingerprint: Optional[str] = None
        self.directory: Optional[str] = None
        self.hits = 0
        self.computed = 0
        self.loaded_from_disk = 0

    @classmethod
    def from_run_config(
        cls, run_cfg, model, output_dir: str, autocast=None
    ) -> Optional["VisionFeatureCache"]:
        """The cache ``run.vision_feature_cache`` describes, or None when it is off."""
        block = run_cfg.get("vision_feature_cache") or {}
        if not block.get("enabled"):
            return None
        if str(run_cfg.get("distributed", "ddp")) == "fsdp" and dist_utils.is_dist():
            raise ValueError(
                "run.vision_feature_cache.enabled=true with run.distributed=fsdp: the cache runs the frozen vision "
                "encoder outside the sharded forward; use run.distributed=ddp or turn the cache off"
            )
        storage = str(block.get("storage") or "memory")
        directory = block.get("dir") or os.path.join(str(output_dir), "vision_feature_cache")
        return cls(
            model,
            storage=storage,
            directory=str(directory) if storage == "disk" else None,
            dtype=block.get("dtype"),
            shard_size=int(block.get("shard_size") or 1024),
            autocast=autocast,
        )

    # -- datasets --------------------------------------------------------------------------------
    def attach(self, name: str, dataset):
        """``dataset`` reading its images through this cache (a copy), or unchanged when it has none to cache.

        A dataset whose training image processor is random (``image_train``) is an error naming it;
        one whose processor is not known to be deterministic (no ``deterministic = True``), a video
        reader, or a text-only dataset keeps handing out pixels (warned for the unknown processor).
        """
        if not supports_image_source(dataset):
            return dataset
        proc = getattr(dataset, "vis_processor", None)
        if proc is None:
            return dataset
        from minigpt.processors.image import ImageTrainProcessor

        if isinstance(proc, ImageTrainProcessor):
            CachedFeatureSource(self.known, proc, name)  # raises the error naming the dataset
        if not is_deterministic_processor(proc):
            if str(registry.name_of(type(proc)) or "").startswith("video_"):
                return dataset  # video readers hand out frame stacks, never through an image source
            logger.warning(
                "vision feature cache: dataset %s's image processor %s is not known to be deterministic (no "
                "`deterministic = True`); its images are not cached",
                name,
                processor_fingerprint(proc),
            )
            return dataset
        return with_image_source(dataset, CachedFeatureSource(self.known, proc, name))

    # -- storage ---------------------------------------------------------------------------------
    def _amp(self) -> str:
        device = self.model.device
        with self.autocast():
            enabled = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if enabled else None
        return f"{device.type}:{dtype}" if enabled else f"{device.type}:none"

    def open(self) -> None:
        """Fingerprint the model's frozen parts and, with disk storage, index the shards written for them.

        Call once the model holds its final weights (after checkpoints are loaded) and before the
        first batch; repeated calls do nothing.
        """
        if self.fingerprint is not None:
            return
        point = self.model.vision_cache_point()
        if point != self.point:
            raise ValueError(
                f"vision feature cache: the model's cacheable image path changed from {self.point!r} to {point!r} "
                "since the cache was set up (a part was unfrozen or switched to training mode)"
            )
        t0 = time.time()
        self.fingerprint, desc = vision_fingerprint(self.model, self.point, self.dtype_name, self._amp())
        logger.info(
            "vision feature cache: %s storage, features after %s, fingerprint %s (%.1fs)",
            self.storage,
            self.point,
            self.fingerprint[:20],
            time.time() - t0,
        )
        if self.storage != "disk":
            return
        self.directory = os.path.join(str(self.base_dir), self.fingerprint[:20])
        os.makedirs(self.directory, exist_ok=True)
        manifest = os.path.join(self.directory, MANIFEST)
        if not os.path.exists(manifest):
            _write_atomically(
                manifest, json.dumps({**desc, "fingerprint": self.fingerprint}, indent=1).encode()
            )
        others = [
            d
            for d in glob.glob(os.path.join(str(self.base_dir), "*", MANIFEST))
            if os.path.dirname(d) != self.directory
        ]
        if others:
            logger.info(
                "vision feature cache: %d folder(s) in %s hold features of other vision weights or "
                "settings; they are not used (delete them to free the space)",
                len(others),
                self.base_dir,
            )
        for path in sorted(glob.glob(os.path.join(self.directory, "shard-*.safetensors"))):
            self._index_shard(path)
        self.known.update(self._index)
        self.loaded_from_disk = len(self._index)
        logger.info(
            "vision feature cache: %d image(s) already cached in %s", len(self._index), self.directory
        )

    def _index_shard(self, path: str) -> None:
        try:
            with safe_open(path, framework="pt") as fh:
                meta = fh.metadata() or {}
                keys = list(fh.keys())
        except (
            OSError,
            ValueError,
            RuntimeError,
        ) as exc:  # safetensors raises SafetensorError (a ValueError)
            logger.warning("vision feature cache: unreadable shard %s is ignored (%s)", path, exc)
            return
        if meta.get("fingerprint") != self.fingerprint or meta.get("format") != FORMAT:
            logger.warning(
                "vision feature cache: shard %s was written for other vision weights (fingerprint %s); "
                "ignored",
                path,
                str(meta.get("fingerprint"))[:20],
            )
            return
        for key in keys:
            self._index.setdefault(key, path)

    def __contains__(self, key: str) -> bool:
        return key in self.known

    def __len__(self) -> int:
        return len(self.known)

    def get(self, key: str) -> torch.Tensor:
        """The stored features of ``key`` (CPU); ``KeyError`` when not cached."""
        feats = self._mem.get(key)
        if feats is not None:
            return feats
        path = self._index.get(key)
        if path is None:
            raise KeyError(key)
        handle = self._handles.get(path)
        if handle is None:
            handle = safe_open(path, framework="pt")
            self._handles[path] = handle
            while len(self._handles) > MAX_OPEN_SHARDS:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(path)
        return handle.get_tensor(key)

    def put(self, key: str, feats: torch.Tensor) -> None:
        """Store ``feats`` (one image's ``[N, C]``) under ``key``, in the storage dtype, on the CPU."""
        feats = feats.detach().to("cpu", dtype=self.dtype or feats.dtype).contiguous().clone()
        self._mem[key] = feats
        self.known.add(key)

    def flush(self) -> Optional[str]:
        """Disk storage: write every pending feature as one shard (temporary file, fsync, rename); returns its path."""
        if self.storage != "disk" or not self._mem or self.directory is None:
            return None
        name = f"shard-r{dist_utils.get_rank()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.safetensors"
        path = os.path.join(self.directory, name)
        metadata = {"format": FORMAT, "fingerprint": str(self.fingerprint), "point": self.point}
        write_atomically(path, lambda tmp: save_file(self._mem, tmp, metadata=metadata), prefix=".tmp-")
        for key in self._mem:
            self._index[key] = path
        self._mem = {}
        return path

    def stats(self) -> Dict[str, Any]:
        """Counts for the log and the training summary."""
        rows = self.hits + self.computed
        return {
            "storage": self.storage,
            "point": self.point,
            "images": len(self.known),
            "loaded_from_disk": self.loaded_from_disk,
            "rows_from_cache": self.hits,
            "rows_computed": self.computed,
            "hit_rate": round(self.hits / rows, 4) if rows else 0.0,
            "directory": self.directory,
        }

    # -- batches ---------------------------------------------------------------------------------
    def compute(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen prefix's output for ``[K, 3, H, W]`` pixels, under the training precision."""
        model = self.model
        with self.autocast():
            return model.vision_prefix(pixels.to(model.device), self.point)

    def apply(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """A collated batch with ``image`` holding each sample's cached features (computing and storing new ones).

        Batches without ``image_key`` (text-only, video, datasets not cached) come back unchanged.
        The pixels of the samples not cached yet are encoded together, in batch order, so a batch
        of all-new images gives exactly the features the model would have computed itself.
        """
        keys = batch.get(IMAGE_KEY)
        if keys is None:
            return batch
        self.open()
        batch = dict(batch)
        batch.pop(IMAGE_KEY)
        pixels, rows = batch.pop(IMAGE_PIXELS, None), list(batch.pop(IMAGE_PIXEL_ROWS, None) or [])
        todo = [j for j, row in enumerate(rows) if keys[row] not in self.known]
        if todo:
            feats = self.compute(pixels if len(todo) == len(rows) else pixels[todo])
            for j, f in zip(todo, feats):
                if keys[rows[j]] not in self.known:  # the same image twice in one batch: stored once
                    self.put(keys[rows[j]], f)
        self.computed += len(todo)
        self.hits += len(keys) - len(todo)
        missing = [i for i, k in enumerate(keys) if k not in self.known]
        if missing:
            ids = batch.get("sample_id") or [f"#{i}" for i in range(len(keys))]
            raise RuntimeError(
                f"vision feature cache: samples {', '.join(str(ids[i]) for i in missing[:5])} came without pixels "
                "but their features are not in the cache (was the cache folder changed during the run?)"
            )
        batch["image"] = torch.stack([self.get(k) for k in keys])
        if self.storage == "disk" and len(self._mem) >= self.shard_size:
            self.flush()
        return batch


def _write_atomically(path: str, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    write_atomically(path, write, prefix=".tmp-")
