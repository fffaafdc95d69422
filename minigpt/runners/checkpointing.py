"""Checkpoint directories: trained parameters (safetensors) + resumable training state.

Layout of ``<output_dir>/checkpoints/``::

    step_000100/trained.safetensors   what was trained (canonical names, see models/checkpoint.py)
    step_000100/training_state.pt     optimizer, scheduler, step, RNG states, data position
    step_000100/config.yaml           the composed config that produced it
    latest                            the name of the newest complete checkpoint

A checkpoint is written to a temporary directory and renamed into place, and ``latest`` is
replaced atomically after that, so a crash never leaves ``latest`` pointing at a partial write.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from typing import Any, Dict, Optional

import torch

from minigpt.common import dist_utils
from minigpt.models.checkpoint import TRAINED_FILE, save_trained

logger = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
LATEST = "latest"
STATE_FILE = "training_state.pt"
DATA_STATE = "data"  # training_state key: {"world_size": W, "ranks": [MixedLoader.state_dict() of each rank]}


def _rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # plain tensors and numbers only, so the state loads with torch.load(weights_only=True)
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached)
    except ImportError:
        pass
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def save_checkpoint(
    output_dir: str,
    step: int,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    scheduler: Any,
    config_yaml: str,
    extra: Optional[Dict[str, Any]] = None,
) -> str:
    root = os.path.join(output_dir, CKPT_DIR)
    os.makedirs(root, exist_ok=True)
    name = f"step_{step:06d}"
    final = os.path.join(root, name)
    tmp = os.path.join(root, f".tmp_{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_trained(model, tmp, metadata={"step": step})
    state = {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_state(),
        **(extra or {}),
    }
    torch.save(state, os.path.join(tmp, STATE_FILE))
    with open(os.path.join(tmp, "config.yaml"), "w") as fh:
        fh.write(config_yaml)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer_tmp = os.path.join(root, f".{LATEST}.tmp")
    with open(pointer_tmp, "w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, os.path.join(root, LATEST))
    return final


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest complete checkpoint directory under ``output_dir``, or None."""
    pointer = os.path.join(output_dir, CKPT_DIR, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as fh:
        name = fh.read().strip()
    path = os.path.join(output_dir, CKPT_DIR, name)
    return path if os.path.isfile(os.path.join(path, TRAINED_FILE)) else None


def load_training_state(ckpt_dir: str) -> Dict[str, Any]:
    path = os.path.join(ckpt_dir, STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training state in checkpoint {ckpt_dir} (expected {STATE_FILE})")
    return torch.load(path, map_location="cpu", weights_only=True)


def gather_data_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """Every rank's data position (``MixedLoader.state_dict()``), for rank 0 to save. Call on all ranks.

    Ranks read different shards of a stream, so each rank's position is kept.
    """
    world = dist_utils.get_world_size()
    if not dist_utils.is_dist():
        return {"world_size": 1, "ranks": [state]}
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, state)
    return {"world_size": world, "ranks": parts}


def data_state_for_rank(saved: Optional[Dict[str, Any]], rank: int, world_size: int) -> Optional[Dict[str, Any]]:
    """This rank's data position from a saved ``gather_data_state()``, or None when there is none.

    With another world size than the checkpoint's, the map-style positions (the same on every
    rank) and the mixer carry over, and the webdataset streams, whose shard split changed, start
    a new pass.
    """
    if not saved or not saved.get("ranks"):
        return None
    if int(saved["world_size"]) == int(world_size):
        return saved["ranks"][rank]
    logger.warning(
        "the checkpoint was written by %s process(es), this run has %d: streaming datasets start from their "
        "beginning, map-style datasets continue at the same epoch and batch",
        saved["world_size"], world_size,
    )
    state = dict(saved["ranks"][0])
    state["loaders"] = {k: v for k, v in state.get("loaders", {}).items() if v.get("kind") != "stream"}
    return state
