"""Real-size models with random weights, without weight files: for shapes, speed and memory checks.

A real-size preset built on the meta device (``load_model(name, type, device="meta")``) has every
shape and dtype of the real model but no storage. :func:`materialize_random` allocates it on a
device with ``to_empty`` and fills it: norm weights 1 and norm biases 0, every other parameter from
one repeated pseudo-random block, and the buffers (rotary tables, EVA's fixed zero key bias,
BatchNorm statistics) set as a fresh build sets them. The result runs the real code paths at the
real sizes and dtypes; its outputs mean nothing. :func:`build_random` does both steps for a
registered model name.

Used by the full-size slow test (``tests/models/test_full_size.py``) and
``benchmarks/bench_full_size.py``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from torch import nn

# a prime length, so the block's period lines up with no weight's rows
_BLOCK = 1_000_003


def _norm_parameters(model: nn.Module) -> set:
    """Names of the 1-D parameters of normalisation layers (LayerNorm, RMSNorm, BatchNorm, ``ln_vision``)."""
    names = set()
    for mod_name, module in model.named_modules():
        is_norm = (
            "norm" in type(module).__name__.lower() or "norm" in mod_name.lower() or "ln_vision" in mod_name
        )
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p.ndim == 1 and (is_norm or "norm" in p_name.lower()):
                names.add(full)
    return names


def fill_pseudo_random(model: nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Norm weights 1 and norm biases 0; every other parameter copied from one repeated random block.

    ``normal_`` over billions of elements takes minutes on a small CPU; copying a block is
    memory-bound and takes seconds. The block is made on the CPU (the same values on every device).
    """
    block = torch.randn(_BLOCK, generator=torch.Generator().manual_seed(seed)) * std
    norms = _norm_parameters(model)
    on_device: Dict[Any, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in norms:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            key = (p.device, p.dtype)
            if key not in on_device:
                on_device[key] = block.to(device=p.device, dtype=p.dtype)
            src = on_device[key]
            flat = p.view(-1)
            for start in range(0, flat.numel(), _BLOCK):
                n = min(_BLOCK, flat.numel() - start)
                flat[start : start + n].copy_(src[:n])


def rebuild_buffers(model: nn.Module) -> None:
    """Set the buffers ``to_empty`` left uninitialised; an unknown buffer is an error naming its module."""
    for mod_name, module in model.named_modules():
        own = dict(module.named_buffers(recurse=False))
        if not own:
            continue
        if "inv_freq" in own:  # rotary tables: computed from the config, as the module's __init__ does
            fresh = type(module)(config=module.config)
            for name, value in fresh.named_buffers(recurse=False):
                getattr(module, name).copy_(value)
        elif set(own) == {"k_bias"}:  # EVA's fixed zero key bias (q and v have learned ones)
            module.k_bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            module.reset_running_stats()  # mean 0, variance 1, no batches seen: a fresh BatchNorm's
        else:
            raise ValueError(
                f"{mod_name or '<model>'}: no rule to initialise buffers {sorted(own)} of a meta-built "
                f"{type(module).__name__} (minigpt/models/weights/random_init.py rebuild_buffers)"
            )


def materialize_random(
    model: nn.Module, device: Union[str, torch.device] = "cpu", std: float = 0.02, seed: int = 0
) -> nn.Module:
    """A meta-built ``model`` allocated on ``device`` and filled with pseudo-random weights (in place).

    Tied parameters (one tensor under several names, e.g. a LoRA A shared by q/k/v) stay tied:
    ``to_empty`` allocates each name anew, so the ties are put back after it.
    """
    ties = _tied_names(model)
    model.to_empty(device=torch.device(device))
    for first, others in ties:
        for name in others:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, model.get_parameter(first))
    fill_pseudo_random(model, std=std, seed=seed)
    rebuild_buffers(model)
    return model


def _tied_names(model: nn.Module) -> list:
    """``[(first name, [other names])]`` of every parameter reachable under more than one name."""
    groups: dict = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [(names[0], names[1:]) for names in groups.values() if len(names) > 1]


def build_random(
    name: str,
    model_type: str,
    device: Union[str, torch.device] = "cpu",
    overrides: Optional[Dict[str, Any]] = None,
    is_eval: bool = False,
) -> nn.Module:
    """``load_model(name, model_type)`` at its real size with random weights, built on the meta device first.

    No weight file and no checkpoint is read: the meta build takes its shapes from the preset (or from
    an existing ``llm.pretrained`` directory's config and tokenizer); ``overrides`` change shapes or dtypes.
    """
    from minigpt.models import load_model

    model = load_model(name, model_type, device="meta", overrides=overrides or {})
    materialize_random(model, device)
    return model.eval() if is_eval else model.train()
