"""Process-group set-up for ``torchrun`` (gloo on CPU, nccl on GPU) and rank helpers."""

from __future__ import annotations

import datetime
import os
from typing import Any, List

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's GPU when there is one, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("run.device is 'cuda' but no CUDA device is visible; use run.device=cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def init_distributed(device: torch.device, backend: str = "auto") -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return whether distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_dist():
        return is_dist()
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / get_world_size()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process); all ranks must call."""
    if not is_dist():
        return [obj]
    parts: List[Any] = [None] * get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def broadcast_object(obj):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
