"""Process set-up for training, evaluation and the demo: device, process group, threads, determinism, seed.

Each comes from ``run:`` (``run.device``, ``run.dist_backend``, ``run.num_threads``,
``run.deterministic``, ``run.seed``). :func:`set_up_process` does all of them in the order they
must happen; the single steps are here for the entry points that need only some of them.
The rank helpers that code uses once the process group exists live in :mod:`minigpt.common.dist_utils`.
"""

from __future__ import annotations

import atexit
import datetime
import os
import random
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from minigpt.common import dist_utils


def resolve_device(name: str, index: Optional[int] = None) -> torch.device:
    """``run.device`` (auto | cpu | cuda) -> a device for training, evaluation and the demo alike.

    ``auto`` is a GPU when there is one, else the CPU. The GPU is ``index`` when given (the demo's
    ``--gpu-id``), else this rank's (``LOCAL_RANK``); one the machine lacks is an error.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"run.device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("run.device is cuda but no CUDA device is visible; use run.device=cpu")
    index = int(os.environ.get("LOCAL_RANK", 0)) if index is None else int(index)
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(f"CUDA device {index}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def init_distributed(device: torch.device, backend: str = "auto") -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return whether distributed.

    ``backend`` is ``run.dist_backend`` (``auto``: nccl on CUDA, gloo on CPU). The group this call
    creates is destroyed at interpreter exit (:func:`shutdown_distributed`) unless the caller does it first.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist_utils.is_dist():
        return dist_utils.is_dist()
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    atexit.register(shutdown_distributed)
    return True


def shutdown_distributed() -> None:
    """Leave the process group, when there is one (a no-op otherwise)."""
    if dist_utils.is_dist():
        dist.destroy_process_group()


def finish_distributed() -> None:
    """After a run that ended normally: every rank waits for the others, then leaves the group.

    Leaving in step, before the interpreter tears down, keeps a rank from exiting while gloo's
    threads still serve a peer (seen as "terminate called without an active exception").
    """
    if dist_utils.is_dist():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (``run.seed``; training adds the rank)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic() -> None:
    """Deterministic kernels everywhere (``run.deterministic``), so a run and its resume repeat bitwise."""
    # cuBLAS needs this workspace setting for deterministic matmuls; it is read when CUDA initialises
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def set_up_process(run_cfg, seed_per_rank: bool = True) -> torch.device:
    """Device, process group, ``run.num_threads``, ``run.deterministic`` and the seed; returns the device.

    ``seed_per_rank``: seed ``run.seed + rank`` (training: dropout and sampling differ per rank)
    rather than ``run.seed`` everywhere.
    """
    device = resolve_device(str(run_cfg.device))
    init_distributed(device, str(run_cfg.dist_backend))
    if run_cfg.get("num_threads"):
        torch.set_num_threads(int(run_cfg.num_threads))
    if run_cfg.get("deterministic"):
        set_deterministic()
    seed_everything(int(run_cfg.seed) + (dist_utils.get_rank() if seed_per_rank else 0))
    return device
