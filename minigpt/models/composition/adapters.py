"""Adapters: small trainable modules placed on named sub-modules of the LLM or a vision encoder.

A model's ``adapters:`` YAML list places them; each entry names a registered adapter kind
(``registry.list_adapters()``), the part it goes into (``part: llm | vision_encoder | projector``),
an ``fnmatch`` pattern over that part's sub-module names as checkpoints spell them (``targets``,
e.g. ``model.model.layers.*.mlp``; LoRA wrappers left out), and ``where`` it acts: on the
target's ``output`` or on its first positional ``input``. Every other key goes to the adapter's
constructor. Adapters live under ``model.adapters`` (checkpoint names ``adapters.<slot>.*``), train
unless ``freeze: true``, and save and load alone (``MultimodalLLM.save_adapters``).

Before each forward the model hands every adapter the batch context (``set_context``): which
samples carry media, so an adapter may route text-only and multimodal samples differently.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry
from minigpt.models.weights.names import canonical_name

PLACEMENT_KEYS = ("name", "part", "targets", "where", "freeze")


class Adapter(nn.Module):
    """Base class of registered adapters: ``adapt(x) -> x'`` on a target's input or output tensor.

    ``dim`` is the width of the tensor adapted (read from the target, see :func:`target_width`).
    ``context`` holds what the model set for the current batch (``has_media``: ``[B]`` bool).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.context: Dict[str, Any] = {}

    def set_context(self, **context: Any) -> None:
        self.context = context

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BottleneckAdapter(Adapter):
    """``x + scale * up(act(down(dropout(x))))``, ``up`` zero-initialised: the identity at start. YAML ``bottleneck``."""

    def __init__(self, dim: int, bottleneck: int = 8, dropout: float = 0.0, scale: float = 1.0) -> None:
        super().__init__(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = float(scale)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(nn.functional.gelu(self.down(self.dropout(x))))


def target_width(module: nn.Module, where: str) -> int:
    """The feature width at ``module``'s input or output, read from its weights."""
    if isinstance(module, nn.Linear):
        return module.in_features if where == "input" else module.out_features
    if isinstance(module, (nn.LayerNorm,)) and module.normalized_shape:
        return int(module.normalized_shape[-1])
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    for attr in ("hidden_size", "embed_dim", "dim", "width"):
        value = getattr(module, attr, None) or getattr(getattr(module, "config", None), attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"cannot tell the width of a {type(module).__name__} target; place the adapter on a Linear or norm layer"
    )


def _slot_name(index: int, part: str, target: str) -> str:
    return f"{index}_{part}_{re.sub(r'[^0-9A-Za-z]+', '_', target)}"


def _apply_to_first(value: Any, fn) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return (fn(value[0]),) + tuple(value[1:])
    raise TypeError(f"an adapter acts on a tensor (or a tuple starting with one), got {type(value).__name__}")


def place_adapters(parts: Dict[str, nn.Module], specs: Optional[List[Any]]) -> nn.ModuleDict:
    """Build the ``adapters:`` entries, hook each onto its targets, and return them by slot name."""
    out = nn.ModuleDict()
    for index, spec in enumerate(specs or []):
        if isinstance(spec, DictConfig):
            spec = OmegaConf.to_container(spec, resolve=True)
        spec = dict(spec)
        where = spec.get("where", "output")
        if where not in ("input", "output"):
            raise ValueError(f"adapters[{index}].where must be 'input' or 'output', got {where!r}")
        part = spec.get("part", "llm")
        if part not in parts:
            raise ValueError(f"adapters[{index}].part must be one of {', '.join(parts)}, got {part!r}")
        cls = registry.get_adapter_class(spec["name"])
        kwargs = {k: v for k, v in spec.items() if k not in PLACEMENT_KEYS}
        pattern = str(spec.get("targets", ""))
        matched = [
            (n, m) for n, m in parts[part].named_modules() if n and fnmatch.fnmatchcase(canonical_name(n), pattern)
        ]
        if not matched:
            raise ValueError(f"adapters[{index}]: no sub-module of {part} matches targets={pattern!r}")
        for name, module in matched:
            adapter = cls(target_width(module, where), **kwargs)
            if spec.get("freeze", False):
                adapter.requires_grad_(False)
            _hook(module, adapter, where)
            out[_slot_name(index, part, name)] = adapter
    return out


def _hook(module: nn.Module, adapter: Adapter, where: str) -> None:
    if where == "output":
        module.register_forward_hook(lambda m, args, output: _apply_to_first(output, adapter.adapt))
    else:
        module.register_forward_pre_hook(lambda m, args: _apply_to_first(args, adapter.adapt))
