"""Checkpoint directories: trained parameters (safetensors) + resumable training state.

Layout of ``<output_dir>/checkpoints/``::

    step_000100/trained.safetensors   what was trained (canonical names, see models/weights/checkpoint.py)
    step_000100/training_state.pt     optimizer, scheduler, step, RNG states, data position
    step_000100/config.yaml           the composed config that produced it
    step_000100/fingerprint.json      what a resume compares (minigpt/runners/run_guard.py)
    step_000100/manifest.json         step + every file's name, size and sha256, written last
    latest                            the name of the newest complete checkpoint

A checkpoint is written to a temporary directory (each file fsynced), renamed into place, and
``latest`` is replaced atomically after that, so a crash never leaves ``latest`` pointing at a
partial write. A directory counts as complete when its manifest matches the files on disk
(sizes; a resume also checks the sha256 of each file); :func:`latest_checkpoint` falls back to the
newest complete ``step_*`` when the pointer's target is not. Re-saving a step that exists sets the
old folder aside (``.old_step_*``), moves the new one in, then removes the old, so a crash in
between leaves one whole copy, which :func:`clean_checkpoints` puts back at the next start.
``keep_last`` removes older complete checkpoints after a successful write, and with them
incomplete ``step_*`` folders and stale temporary ones.

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
from minigpt.common.constants import CHECKPOINT_MANIFEST, CHECKPOINTS_DIR, LATEST_POINTER, TRAINED_FILE
from minigpt.models.weights.checkpoint import (
    CheckpointIntegrityError,
    file_sha256,
    save_trained,
    verify_checkpoint_dir,
)

logger = logging.getLogger(__name__)

CKPT_DIR = CHECKPOINTS_DIR
LATEST = LATEST_POINTER
STATE_FILE = "training_state.pt"
DATA_STATE = "data"  # training_state key: {"world_size": W, "ranks": [MixedLoader.state_dict() of each rank]}
RNG_RANKS = "rng_ranks"  # training_state key: [rng_state() of each rank]
MANIFEST = CHECKPOINT_MANIFEST
TMP_PREFIX = ".tmp_"  # a checkpoint being written: .tmp_step_000100
OLD_PREFIX = ".old_"  # a checkpoint being replaced by a re-save of its step: .old_step_000100


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


def set_aside(final: str) -> Optional[str]:
    """Rename an existing ``final`` to ``.old_<name>`` (returned), or return None when there is none."""
    if not os.path.exists(final):
        return None
    root, name = os.path.split(final)
    aside = os.path.join(root, OLD_PREFIX + name)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    fsync_dir(root)
    return aside


def move_into_place(tmp: str, final: str) -> None:
    """Rename the finished temporary directory to its ``step_*`` name.

    An older folder of that name is renamed aside first and removed only once the new one is in
    place: at every moment one whole copy exists under one of the two names.
    """
    aside = set_aside(final)
    os.replace(tmp, final)
    fsync_dir(os.path.dirname(final))
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


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
    fingerprint: Optional[Dict[str, Any]] = None,
) -> str:
    """Write ``checkpoints/step_<step>`` atomically, move ``latest`` to it, then apply ``keep_last``.

    ``trained_state``/``optimizer_state`` replace ``model``'s and ``optimizer``'s own when given
    (FSDP gathers full tensors on every rank before rank 0 writes). ``fingerprint`` (what a resume
    compares, :func:`~minigpt.runners.run_guard.run_fingerprint`) goes to ``fingerprint.json``.
    """
    final = checkpoint_dir(output_dir, step)
    root, name = os.path.split(final)
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, TMP_PREFIX + name)
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
    if fingerprint is not None:
        from minigpt.runners.run_guard import write_fingerprint

        write_fingerprint(tmp, fingerprint)
    names = sorted(os.listdir(tmp))
    files = {f: os.path.getsize(os.path.join(tmp, f)) for f in names}
    digests = {f: file_sha256(os.path.join(tmp, f)) for f in names}
    with open(os.path.join(tmp, MANIFEST), "w") as fh:
        json.dump({"step": step, "files": files, "sha256": digests}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    move_into_place(tmp, final)
    point_latest(root, name)
    if keep_last:
        prune_checkpoints(output_dir, int(keep_last))
    return final


def is_complete(ckpt_dir: str, hashes: bool = False) -> bool:
    """Whether ``ckpt_dir`` holds every file its manifest lists, at the listed sizes (and sha256s with ``hashes``).

    A directory written before manifests existed counts when its trained weights are there.
    """
    if not os.path.isfile(os.path.join(ckpt_dir, MANIFEST)):
        return os.path.isfile(os.path.join(ckpt_dir, TRAINED_FILE))
    try:
        verify_checkpoint_dir(ckpt_dir, hashes=hashes)
    except CheckpointIntegrityError:
        return False
    return True


def check_resumable(ckpt_dir: str) -> None:
    """Refuse (:class:`CheckpointIntegrityError`, naming the file) a folder a run cannot resume from.

    It must hold the training state and match its manifest, sha256s included.
    """
    if not os.path.isfile(os.path.join(ckpt_dir, STATE_FILE)):
        raise CheckpointIntegrityError(
            f"{ckpt_dir} is not a checkpoint directory (no {STATE_FILE} in it); pass a checkpoints/step_N "
            "directory or 'auto'"
        )
    verify_checkpoint_dir(ckpt_dir, hashes=True)


def _step_dirs(root: str) -> List[str]:
    """The ``step_*`` directory names under ``root``, newest first."""
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if n.startswith("step_") and n[5:].isdigit()]
    return sorted(names, key=lambda n: int(n[5:]), reverse=True)


def _pointed(root: str) -> Optional[str]:
    """The folder name ``<root>/latest`` holds, or None."""
    pointer = os.path.join(root, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as fh:
        return fh.read().strip()


def clean_checkpoints(output_dir: str) -> List[str]:
    """Tidy ``<output_dir>/checkpoints`` after a crash; return the names removed. Rank 0, no write under way.

    A re-save interrupted between its halves left ``.old_step_N`` without a whole ``step_N``: the
    old copy goes back. Then stale temporary (``.tmp_*``, ``.old_*``) folders and incomplete
    ``step_*`` folders are removed.
    """
    root = os.path.join(output_dir, CKPT_DIR)
    if not os.path.isdir(root):
        return []
    removed = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(OLD_PREFIX) and os.path.isdir(path):
            final = os.path.join(root, name[len(OLD_PREFIX):])
            if is_complete(path) and not is_complete(final):
                shutil.rmtree(final, ignore_errors=True)
                os.replace(path, final)
                logger.warning("restored checkpoint %s from the copy an interrupted re-save left", final)
                continue
        if name.startswith((TMP_PREFIX, OLD_PREFIX)) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    for name in _step_dirs(root):
        if not is_complete(os.path.join(root, name)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    if removed:
        logger.info("removed incomplete or temporary checkpoint folders in %s: %s", root, ", ".join(removed))
        fsync_dir(root)
    return removed


def prune_checkpoints(output_dir: str, keep_last: int) -> List[str]:
    """Delete all but the ``keep_last`` newest complete checkpoints (never ``latest``'s), and the
    incomplete and temporary folders (:func:`clean_checkpoints`); return the removed names."""
    removed = clean_checkpoints(output_dir)
    root = os.path.join(output_dir, CKPT_DIR)
    current = _pointed(root)
    old = []
    for name in _step_dirs(root)[max(1, keep_last):]:
        if name == current:
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        old.append(name)
    if old:
        logger.info("run.keep_last=%d: removed %s", keep_last, ", ".join(old))
    return removed + old


def latest_checkpoint(output_dir: str, hashes: bool = False) -> Optional[str]:
    """The checkpoint ``latest`` names when it is complete, else the newest complete ``step_*``, else None.

    With ``hashes`` (a resume) each candidate's files must also match their recorded sha256s; one
    that does not is passed over with a warning naming the file.
    """
    root = os.path.join(output_dir, CKPT_DIR)
    pointed = _pointed(root)
    names = _step_dirs(root)
    if pointed is not None:
        names = [pointed] + [n for n in names if n != pointed]
    for name in names:
        path = os.path.join(root, name)
        if not os.path.isdir(path):
            continue
        if not os.path.isfile(os.path.join(path, MANIFEST)):
            if os.path.isfile(os.path.join(path, TRAINED_FILE)):  # written before manifests existed
                return path
            logger.warning("checkpoint %s has no %s; looking for an older one", path, MANIFEST)
            continue
        try:
            verify_checkpoint_dir(path, hashes=hashes)
            return path
        except CheckpointIntegrityError as exc:
            logger.warning("%s; looking for an older one", exc)
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
