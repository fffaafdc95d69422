"""Half-precision storage for frozen vision encoders, as LAVIS and MiniGPT-4 do it.

``precision: fp16`` (or ``bf16``) casts the weights of the Linear and Conv layers of a frozen
encoder after its checkpoint is loaded; norms, biases of fused projections, position embeddings
and the class token stay float32 (LAVIS's ``convert_weights_to_fp16`` rule). How the forward
then computes depends on the device:

* on an accelerator, under ``torch.autocast`` in that dtype: matmuls in half precision, norms and
  the residual stream in float32, the numerics of the original code;
* on a CPU, in float32: the half-precision weights are upcast on the fly, one module call at a
  time (CPU kernels for float16 are missing or slow on many builds). The weights stay stored in
  half precision, so memory is still halved.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

logger = logging.getLogger(__name__)

_MATMUL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def cast_matmul_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Store the weights and biases of every Linear/Conv layer of ``module`` in ``dtype``."""
    for layer in module.modules():
        if isinstance(layer, _MATMUL_LAYERS):
            layer.to(dtype)


def freeze_and_cast(module: nn.Module, freeze: bool, dtype: torch.dtype, part: str, precision: str) -> None:
    """Freeze ``module`` (eval mode, no grads) and, when frozen, store its matmul weights in ``dtype``.

    A trainable encoder keeps float32 master weights (autocast still computes in half on GPU), so
    a half ``precision`` on it only logs a warning.
    """
    if freeze:
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
    if dtype != torch.float32:
        if freeze:
            cast_matmul_weights(module, dtype)
        else:
            logger.warning(
                "%s: precision %s applies to a frozen encoder only; weights stay float32", part, precision
            )


def matmul_dtype(module: nn.Module) -> torch.dtype:
    """The dtype the Linear/Conv weights of ``module`` are stored in (float32 if it has none)."""
    for layer in module.modules():
        if isinstance(layer, _MATMUL_LAYERS):
            return layer.weight.dtype
    return torch.float32


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def call_in_float32(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` computed in float32 whatever dtype its parameters are stored in.

    Only the non-float32 parameters are upcast, and only for this call; gradients still flow
    back to the stored parameters.
    """
    upcast = {
        n: p.float()
        for n, p in module.named_parameters()
        if p.is_floating_point() and p.dtype != torch.float32
    }
    args = tuple(_upcast(a) for a in args)
    kwargs = {k: _upcast(v) for k, v in kwargs.items()}
    if not upcast:
        return module(*args, **kwargs)
    return functional_call(module, upcast, args, kwargs)


class PrecisionRunner:
    """Runs sub-modules of an encoder in the compute precision its stored weights call for.

    ``runner(module, *args)`` is a plain call when the module's weights are float32, a float32
    call with upcast weights on a CPU, and (inside ``with runner.autocast(device)``) an autocast
    call on an accelerator. Dtypes are read from the weights at each call, so a caller's
    ``module.to(...)`` is respected.
    """

    def __init__(self, owner: nn.Module) -> None:
        self._owner = [owner]  # a list, so the owner is not registered as a sub-module

    @property
    def weight_dtype(self) -> torch.dtype:
        return matmul_dtype(self._owner[0])

    def autocast(self, device: torch.device):
        """Autocast in the weights' dtype on an accelerator; a no-op on CPU or for float32 weights."""
        dtype = self.weight_dtype
        if device.type in ("cpu", "meta") or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def __call__(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        ref = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if ref is not None and ref.device.type == "cpu" and matmul_dtype(module) != torch.float32:
            return call_in_float32(module, *args, **kwargs)
        return module(*args, **kwargs)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input's dtype (BLIP-2's ``ln_vision``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)
