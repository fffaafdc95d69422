"""Rank helpers for code that runs under ``torchrun`` (and in a single process alike).

Joining and leaving the process group is :mod:`minigpt.common.launch`'s.
"""

from __future__ import annotations

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
