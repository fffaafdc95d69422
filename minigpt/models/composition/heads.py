"""Output heads: registered outputs beyond the LM head, each with its own loss added to the LM loss.

A model's ``heads:`` YAML mapping names each head (``registry.list_heads()``) with its ``weight`` in
the total loss and its constructor keys. A head reads the LLM's last hidden states and the batch;
it returns its loss, or None when the batch holds nothing for it, and then the model adds the head's
parameters times zero so that data-parallel training sees every parameter used in every step.
Heads live under ``model.output_heads`` (checkpoint names ``output_heads.<name>.*``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry


class OutputHead(nn.Module):
    """Base class of registered heads. ``hidden_size`` is the LLM's; ``weight`` scales the head's loss."""

    def __init__(self, hidden_size: int, weight: float = 1.0) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.weight = float(weight)

    def loss(self, hidden: torch.Tensor, batch: Dict[str, torch.Tensor], samples: Dict[str, Any]) -> Optional[torch.Tensor]:
        """``hidden`` ``[B, T, D]``: the loss for this batch, or None when it holds nothing for this head."""
        raise NotImplementedError


def build_heads(hidden_size: int, specs: Any) -> nn.ModuleDict:
    """The ``heads:`` mapping as modules, by name."""
    if isinstance(specs, DictConfig):
        specs = OmegaConf.to_container(specs, resolve=True)
    out = nn.ModuleDict()
    for name, kwargs in dict(specs or {}).items():
        kwargs = dict(kwargs or {})
        out[name] = registry.get_head_class(name)(hidden_size, **kwargs)
    return out


def zero_touch(module: nn.Module) -> Optional[torch.Tensor]:
    """``0 * sum`` of the trainable parameters of ``module`` (None when it has none): a term that adds
    nothing to a loss but gives every one of them a (zero) gradient."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return None
    return sum(p.sum() for p in params) * 0.0
