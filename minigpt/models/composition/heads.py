"""Output heads: registered outputs beyond the LM head, each with its own loss added to the LM loss.

A model's ``heads:`` YAML mapping names each head (``registry.list_heads()``) with its ``weight`` in
the total loss, its ``scale`` rule, ``freeze`` (true: none of its weights train) and its constructor keys. A head reads the LLM's last hidden states
and the batch; it returns its loss, or None when the batch holds nothing for it, and then the model
adds the head's parameters times zero so that data-parallel training sees every parameter used in
every step. Heads live under ``model.output_heads`` (checkpoint names ``output_heads.<name>.*``) and
save and load one at a time (``MultimodalLLM.save_head``), so a stage may take its heads from other
stages than its LLM.

The ``scale`` rule says what a head's loss is averaged over:

* ``items`` (default): the mean over the items the head scored (e.g. the images to generate), so a
  batch with one image and one with thirty weigh the same;
* ``samples``: that mean times ``items / batch size``, so the head weighs in proportion to how much of
  the batch it had something to say about.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry

HEADS_PREFIX = "output_heads."
SCALE_RULES = ("items", "samples")


class OutputHead(nn.Module):
    """Base class of registered heads. ``hidden_size`` is the LLM's; ``weight`` scales the head's loss,
    ``scale`` (:data:`SCALE_RULES`) says what it is averaged over."""

    def __init__(self, hidden_size: int, weight: float = 1.0, scale: str = "items") -> None:
        super().__init__()
        if scale not in SCALE_RULES:
            raise ValueError(f"heads.<name>.scale must be one of {', '.join(SCALE_RULES)}, got {scale!r}")
        self.hidden_size = int(hidden_size)
        self.weight = float(weight)
        self.scale = scale

    def loss(self, hidden: torch.Tensor, batch: Dict[str, torch.Tensor], samples: Dict[str, Any]) -> Optional[torch.Tensor]:
        """``hidden`` ``[B, T, D]``: the loss for this batch, or None when it holds nothing for this head."""
        raise NotImplementedError

    def count_items(self, batch: Dict[str, torch.Tensor], samples: Dict[str, Any]) -> int:
        """How many items the last ``loss`` averaged over (the ``samples`` scale rule reads it); default: every sample."""
        return int(batch["input_ids"].shape[0])

    def weighted(self, loss: torch.Tensor, batch: Dict[str, torch.Tensor], samples: Dict[str, Any]) -> torch.Tensor:
        """``loss`` as it enters the total: times ``weight``, and under ``scale: samples`` times items / batch size."""
        factor = self.weight
        if self.scale == "samples":
            factor *= self.count_items(batch, samples) / max(1, int(batch["input_ids"].shape[0]))
        return loss * factor


def build_heads(hidden_size: int, specs: Any) -> nn.ModuleDict:
    """The ``heads:`` mapping as modules, by name; a head whose block says ``freeze: true`` trains nothing."""
    if isinstance(specs, DictConfig):
        specs = OmegaConf.to_container(specs, resolve=True)
    out = nn.ModuleDict()
    for name, kwargs in dict(specs or {}).items():
        kwargs = dict(kwargs or {})
        freeze = bool(kwargs.pop("freeze", False))
        try:
            out[name] = registry.get_head_class(name)(hidden_size, **kwargs)
        except TypeError as e:
            raise ValueError(f"model.heads.{name}: {e}") from e
        if freeze:
            out[name].requires_grad_(False)
    return out


def zero_touch(module: nn.Module) -> Optional[torch.Tensor]:
    """``0 * sum`` of the trainable parameters of ``module`` (None when it has none): a term that adds
    nothing to a loss but gives every one of them a (zero) gradient."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return None
    return sum(p.sum() for p in params) * 0.0
