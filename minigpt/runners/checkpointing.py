"""Checkpoint directories: trained parameters (safetensors) + resumable training state.

Layout of ``<output_dir>/checkpoints/``::

    step_000100/trained.safetensors   what was trained (canonical names, see models/weights/checkpoint.py)
    step_000100/training_state.pt     optimizer, scheduler, step, RNG states, data position
    step_000100/config.yaml           the composed config that produced it
    step_000100/manifest.json         step + every file's name and size, written last
    latest                            the name of the newest complete checkpoint

A checkpoint is written to a temporary directory (each file fsynced), renamed into place, and
``latest`` is replaced atomically after that, so a crash never leaves ``latest`` pointing at a
partial write. A directory counts as complete when its manifest matches the files on disk;
:func:`latest_checkpoint` falls back to the newest complete ``step_*`` when the pointer's target
is not. ``keep_last`` removes older complete checkpoints after a successful write.

The write goes in phases, each a function: :func:`write_trained_weights` into the temporary
directory, then the training state, config and manifest, :func:`move_into_place`, :func:`point_latest`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from typing import Any, Dict, List, Optional

import torch

from minigpt.common import dist_utils
from minigpt.common.constants import CHECKPOINTS_DIR, LATEST_POINTER, TRAINED_FILE
from minigpt.models.weights.checkpoint import save_trained

logger = logging.getLogger(__name__)

CKPT_DIR = CHECKPOINTS_DIR
LATEST = LATEST_POINTER
STATE_FILE = "training_state.pt"
DATA_STATE = "data"  # training_state key: {"world_size": W, "ranks": [MixedLoader.state_dict() of each rank]}
RNG_RANKS = "rng_ranks"  # training_state key: [rng_state() of each rank]
MANIFEST = "manifest.json"


def _fsync_file(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str) -> None:
    """Make a rename inside ``path`` durable (skipped where the platform cannot open a directory)."""
    # makes a rename durable; not every platform/filesystem allows opening a directory
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> Dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and this rank's CUDA device)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # plain tensors and numbers only, so the state loads with torch.load(weights_only=True)
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached)
    except ImportError:
        pass
    return state


def gather_rng_state() -> List[Dict[str, Any]]:
    """Every rank's :func:`rng_state`, for rank 0 to save (dropout and sampling differ per rank). All ranks call."""
    return dist_utils.all_gather_objects(rng_state())


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Put back the RNG states :func:`rng_state` took (CUDA only where a CUDA device is visible)."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def checkpoint_dir(output_dir: str, step: int) -> str:
    """Where the checkpoint of ``step`` lives: ``<output_dir>/checkpoints/step_<step, 6 digits>``."""
    return os.path.join(output_dir, CKPT_DIR, f"step_{step:06d}")


def write_trained_weights(
    tmp: str, step: int, model: torch.nn.Module, trained_state: Optional[Dict[str, torch.Tensor]] = None
) -> None:
    """Write ``trained.safetensors`` (``trained_state`` when given, else ``model``'s trained part) into ``tmp``."""
    if trained_state is None:
        save_trained(model, tmp, metadata={"step": step})
        return
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().clone() for k, v in trained_state.items()},
              os.path.join(tmp, TRAINED_FILE), metadata={"step": str(step)})
    _fsync_file(os.path.join(tmp, TRAINED_FILE))


def move_into_place(tmp: str, final: str) -> None:
    """Rename the finished temporary directory to its ``step_*`` name (replacing an older one)."""
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(final))


def point_latest(root: str, name: str) -> None:
    """Atomically make ``<root>/latest`` name the checkpoint directory ``name``."""
    pointer_tmp = os.path.join(root, f".{LATEST}.tmp")
    with open(pointer_tmp, "w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, os.path.join(root, LATEST))
    fsync_dir(root)


def save_checkpoint(
    output_dir: str,
    step: int,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    scheduler: Any,
    config_yaml: str,
    extra: Optional[Dict[str, Any]] = None,
    keep_last: Optional[int] = None,
    trained_state: Optional[Dict[str, torch.Tensor]] = None,
    optimizer_state: Optional[Dict[str, Any]] = None,
) -> str:
    """Write ``checkpoints/step_<step>`` atomically, move ``latest`` to it, then apply ``keep_last``.

    ``trained_state``/``optimizer_state`` replace ``model``'s and ``optimizer``'s own when given
    (FSDP gathers full tensors on every rank before rank 0 writes).
    """
    final = checkpoint_dir(output_dir, step)
    root, name = os.path.split(final)
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".tmp_{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_trained_weights(tmp, step, model, trained_state)
    if optimizer_state is None and optimizer is not None:
        optimizer_state = optimizer.state_dict()
    state = {
        "step": step,
        "optimizer": optimizer_state,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        **(extra or {}),
    }
    torch.save(state, os.path.join(tmp, STATE_FILE))
    _fsync_file(os.path.join(tmp, STATE_FILE))
    with open(os.path.join(tmp, "config.yaml"), "w") as fh:
        fh.write(config_yaml)
        fh.flush()
        os.fsync(fh.fileno())
    files = {f: os.path.getsize(os.path.join(tmp, f)) for f in sorted(os.listdir(tmp))}
    with open(os.path.join(tmp, MANIFEST), "w") as fh:
        json.dump({"step": step, "files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    move_into_place(tmp, final)
    point_latest(root, name)
    if keep_last:
        prune_checkpoints(output_dir, int(keep_last))
    return final


def is_complete(ckpt_dir: str) -> bool:
    """Whether ``ckpt_dir`` holds every file its manifest lists, at the listed sizes.

    A directory written before manifests existed counts when its trained weights are there.
    """
    manifest = os.path.join(ckpt_dir, MANIFEST)
    if not os.path.isfile(manifest):
        return os.path.isfile(os.path.join(ckpt_dir, TRAINED_FILE))
    try:
        with open(manifest) as fh:
            files = json.load(fh)["files"]
    except (OSError, ValueError, KeyError):
        return False
    for name, size in files.items():
        path = os.path.join(ckpt_dir, name)
        if not os.path.isfile(path) or os.path.getsize(path) != int(size):
            return False
    return True


def _step_dirs(root: str) -> List[str]:
    """The ``step_*`` directory names under ``root``, newest first."""
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if n.startswith("step_") and n[5:].isdigit()]
    return sorted(names, key=lambda n: int(n[5:]), reverse=True)


def prune_checkpoints(output_dir: str, keep_last: int) -> List[str]:
    """Delete all but the ``keep_last`` newest complete checkpoints (never ``latest``'s); return the removed."""
    root = os.path.join(output_dir, CKPT_DIR)
    pointer = os.path.join(root, LATEST)
    current = open(pointer).read().strip() if os.path.isfile(pointer) else None
    complete = [n for n in _step_dirs(root) if is_complete(os.path.join(root, n))]
    removed = []
    for name in complete[max(1, keep_last):]:
        if name == current:
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        removed.append(name)
    if removed:
        logger.info("run.keep_last=%d: removed %s", keep_last, ", ".join(removed))
    return removed


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The checkpoint ``latest`` names when it is complete, else the newest complete ``step_*``, else None."""
    root = os.path.join(output_dir, CKPT_DIR)
    pointer = os.path.join(root, LATEST)
    if os.path.isfile(pointer):
        with open(pointer) as fh:
            path = os.path.join(root, fh.read().strip())
        if is_complete(path):
            return path
        logger.warning("checkpoint %s named by %s is incomplete; looking for an older one", path, pointer)
    for name in _step_dirs(root):
        path = os.path.join(root, name)
        if is_complete(path):
            return path
    return None


def load_training_state(ckpt_dir: str) -> Dict[str, Any]:
    """The ``training_state.pt`` of a checkpoint directory, loaded with ``weights_only=True``."""
    path = os.path.join(ckpt_dir, STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training state in checkpoint {ckpt_dir} (expected {STATE_FILE})")
    return torch.load(path, map_location="cpu", weights_only=True)


def gather_data_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """Every rank's data position (``MixedLoader.state_dict()``), for rank 0 to save. Call on all ranks.

    Ranks read different shards of a stream, so each rank's position is kept.
    """
    return {"world_size": dist_utils.get_world_size(), "ranks": dist_utils.all_gather_objects(state)}


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
