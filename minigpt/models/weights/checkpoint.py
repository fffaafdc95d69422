"""Trained-parameter checkpoints in safetensors, under names that survive adding or removing LoRA
(:mod:`minigpt.models.weights.names`).
Released ``.pth`` files of TinyGPT-V / MiniGPT-4 / MiniGPT-v2 load through the same call, via the
key mapping in :mod:`minigpt.models.weights.released`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from minigpt.common.constants import (
    CHECKPOINT_MANIFEST,
    CHECKPOINTS_DIR,
    LATEST_POINTER,
    PIPELINE_FILE,
    TRAINED_FILE,
)
from minigpt.common.io import write_atomically
from minigpt.models.weights.names import canonical_name, copy_into_model

# Released checkpoints of the original projects (torch.save of {"model": state_dict, ...})
RELEASED_SUFFIXES = (".pth", ".pt")

# Names under which a stage-0 ``vision_pretrain`` checkpoint keeps its per-token label heads: the
# families load such a checkpoint for its ``vision_encoder.*`` and leave these out on purpose.
STAGE0_HEADS_PREFIX = "heads."

def trained_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The parameters that require grad, plus buffers of trained modules (e.g. BatchNorm stats).

    Non-persistent buffers (e.g. CLIP's ``position_ids``) are left out: the module rebuilds them and
    does not list them in its state dict.
    """
    out: Dict[str, torch.Tensor] = {}
    trained_modules = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[canonical_name(name)] = p.detach().cpu().contiguous()
            trained_modules.add(name.rsplit(".", 1)[0])
    persistent = set(model.state_dict(keep_vars=True))
    for name, b in model.named_buffers():
        if b is not None and name in persistent and name.rsplit(".", 1)[0] in trained_modules:
            out[canonical_name(name)] = b.detach().cpu().contiguous()
    return out


def save_trained(
    model: torch.nn.Module,
    directory: str,
    metadata: Dict[str, str] | None = None,
    only_prefix: str | Tuple[str, ...] | None = None,
) -> str:
    """Write the trained parameters to ``directory/trained.safetensors`` (via a temp file + rename).

    ``only_prefix`` keeps the names starting with it, or with one of a tuple of them (e.g. ``adapters.``:
    one part saved alone).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, TRAINED_FILE)
    state = trained_state_dict(model)
    if only_prefix is not None:
        state = {k: v for k, v in state.items() if k.startswith(only_prefix)}
    # safetensors refuses tensors that share storage; tied weights are saved once per name
    state = {k: v.clone() for k, v in state.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    write_atomically(path, lambda tmp: save_file(state, tmp, metadata=meta))
    return path


class CheckpointIntegrityError(ValueError):
    """A checkpoint folder whose files do not match its manifest (missing, resized or altered)."""


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """The hex sha256 of the file at ``path``, read in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint_dir(ckpt_dir: str, only: Optional[Iterable[str]] = None, hashes: bool = True) -> None:
    """Check a checkpoint folder against its ``manifest.json``; raise :class:`CheckpointIntegrityError` naming the file.

    Every file the manifest lists (or those of them in ``only``) must exist at the listed size
    and, with ``hashes``, the listed sha256 (manifests written before hashes were recorded are
    checked by size). A folder without a manifest passes: there is nothing to check it against.
    """
    manifest = os.path.join(ckpt_dir, CHECKPOINT_MANIFEST)
    if not os.path.isfile(manifest):
        return
    try:
        with open(manifest) as fh:
            data = json.load(fh)
        sizes, digests = dict(data["files"]), dict(data.get("sha256") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointIntegrityError(f"{manifest} is unreadable ({type(exc).__name__}: {exc})") from exc
    wanted = set(only) if only is not None else None
    for name, size in sizes.items():
        if wanted is not None and name not in wanted:
            continue
        path = os.path.join(ckpt_dir, name)
        if not os.path.isfile(path):
            raise CheckpointIntegrityError(f"checkpoint {ckpt_dir} is incomplete: {name} is missing")
        if os.path.getsize(path) != int(size):
            raise CheckpointIntegrityError(
                f"checkpoint {ckpt_dir} is incomplete: {name} has {os.path.getsize(path)} bytes, the manifest says {size}"
            )
        if hashes and name in digests and file_sha256(path) != digests[name]:
            raise CheckpointIntegrityError(
                f"checkpoint {ckpt_dir} is corrupt: {name} does not match the sha256 its manifest records"
            )


def resolve_checkpoint_file(path: str) -> str:
    """Accept the safetensors file, a checkpoint directory, or a run's output directory.

    A run's output directory resolves to the checkpoint its ``checkpoints/latest`` pointer names,
    which is how a stage finds the previous stage's result by the stage's name.
    """
    given = path
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, TRAINED_FILE)):
        pointer = os.path.join(path, CHECKPOINTS_DIR, LATEST_POINTER)
        if os.path.isfile(pointer):
            with open(pointer) as fh:
                path = os.path.join(path, CHECKPOINTS_DIR, fh.read().strip())
    if os.path.isdir(path):
        path = os.path.join(path, TRAINED_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint not found: {given} (looked for {TRAINED_FILE} or a checkpoints/latest pointer)"
        )
    return path


def pipeline_stage_dirs(path: str) -> List[str] | None:
    """The finished stages' output directories of the pipeline whose output directory is ``path``, in
    order; None when ``path`` is not such a directory (it holds no ``pipeline.json``)."""
    manifest = os.path.join(path, PIPELINE_FILE)
    if not os.path.isfile(manifest):
        return None
    try:
        with open(manifest) as fh:
            stages = json.load(fh)["stages"]
        dirs = [os.path.join(path, str(s["dir"])) for s in stages]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{manifest} is not a pipeline manifest ({type(exc).__name__}: {exc})") from exc
    if not dirs:
        raise FileNotFoundError(f"{manifest}: the pipeline has no finished stage yet, so no checkpoint")
    return dirs


def expand_checkpoints(ckpt: Any) -> List[str]:
    """``model.ckpt`` (None, one path or a list of paths) -> the checkpoints to load, in order.

    A pipeline's output directory (``output/quickstart``) stands for the checkpoints of all its
    finished stages in stage order, later stages over earlier ones: the model the pipeline trained,
    whichever stages froze which parts. Any other path is kept as given.
    """
    if not ckpt:
        return []
    paths = [ckpt] if isinstance(ckpt, (str, os.PathLike)) else list(ckpt)
    out: List[str] = []
    for path in paths:
        stages = pipeline_stage_dirs(str(path))
        out.extend(stages if stages is not None else [str(path)])
    return out


def load_trained(model: torch.nn.Module, path: str, strict: bool = False) -> Tuple[List[str], List[str]]:
    """Load a trained-parameter checkpoint; return (loaded names, unexpected names).

    ``path`` is a ``trained.safetensors`` file, a checkpoint or run directory, or a released
    TinyGPT-V / MiniGPT-4 / MiniGPT-v2 ``.pth`` file, which goes through the explicit key mapping
    of :mod:`minigpt.models.weights.released` (its report of missing keys is logged there). Every name in
    the file must exist in the model unless ``strict`` is False, in which case the unexpected ones
    are returned (and the caller reports them).
    """
    file = resolve_checkpoint_file(path)
    # a run's checkpoint folder carries a manifest: the weights must be the ones it records
    verify_checkpoint_dir(os.path.dirname(file), only=[os.path.basename(file)])
    if file.endswith(RELEASED_SUFFIXES):
        from minigpt.models.weights.released import load_released

        report = load_released(model, file)
        loaded, unexpected = report.loaded, report.unexpected
    else:
        try:
            state = load_file(file)
        except Exception as exc:  # safetensors raises its own error types for a file of another format
            raise ValueError(
                f"{file} is not a safetensors checkpoint ({type(exc).__name__}: {exc}); model.ckpt takes a "
                f"{TRAINED_FILE}, a checkpoint directory, or a released {'/'.join(RELEASED_SUFFIXES)} file"
            ) from exc
        loaded, unexpected = copy_into_model(model, state, file)
    if strict and unexpected:
        raise KeyError(f"{file}: keys not in the model: {unexpected[:10]}")
    return loaded, unexpected
