"""Numeric precision: the one place that maps ``run.precision`` to dtypes and autocast.

Training, evaluation, the demo and the benchmarks all enter :func:`autocast` with the run's
precision; the model itself never chooses a compute dtype.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Dict, Optional, Union

import torch

PRECISIONS: Dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str, what: str = "run.precision") -> torch.dtype:
    """``"fp32" | "bf16" | "fp16"`` -> the torch dtype; anything else is an error naming ``what``."""
    key = str(precision).lower()
    if key not in PRECISIONS:
        raise ValueError(f"{what}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[key]


def autocast_dtype(precision: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in for ``precision``; None for fp32 (no autocast)."""
    dtype = precision_dtype(precision)
    return None if dtype is torch.float32 else dtype


def check_precision_device(precision: str, device: Union[str, torch.device]) -> None:
    """fp16 only on CUDA: it needs loss scaling, and CPU autocast gains nothing from it. Silently
    computing in another precision than asked would make runs irreproducible, so this is an error."""
    kind = torch.device(device).type
    if precision_dtype(precision) is torch.float16 and kind != "cuda":
        raise ValueError(
            f"run.precision=fp16 needs a CUDA device (this run is on {kind}); use run.precision=bf16 "
            "on CPU, or fp32"
        )


def autocast(precision: str, device: Union[str, torch.device]) -> ContextManager:
    """Autocast to ``precision`` on ``device`` (CPU included); a no-op context for fp32."""
    check_precision_device(precision, device)
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=dtype)
