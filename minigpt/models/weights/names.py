"""Parameter names that survive adding or removing LoRA, and copying named tensors into a model.

peft wraps the LLM (``base_model.model.`` prefix, ``.base_layer`` infix), so the same weight has
different names with and without LoRA. Checkpoints store canonical names (wrappers removed); on
load the canonical names are mapped back onto whatever the current model calls them.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Tuple

import torch

_PEFT_PREFIX = re.compile(r"(^|\.)base_model\.model\.")
_BASE_LAYER = re.compile(r"\.base_layer(?=\.)")


def canonical_name(name: str) -> str:
    """Parameter name with peft's wrapper parts removed (LoRA's own weights keep theirs)."""
    name = _PEFT_PREFIX.sub(r"\1", name)
    return _BASE_LAYER.sub("", name)


def copy_into_model(
    model: torch.nn.Module, state: Dict[str, torch.Tensor], source: str
) -> Tuple[List[str], List[str]]:
    """Copy tensors named by canonical names into ``model``; return (loaded names, names not in the model).

    A tensor whose shape differs from the model's is an error naming ``source`` and the key.
    """
    current = {canonical_name(n): n for n, _ in _named_tensors(model)}
    own = dict(_named_tensors(model))
    loaded, unexpected = [], []
    with torch.no_grad():
        for cname, value in state.items():
            target = current.get(cname)
            if target is None:
                unexpected.append(cname)
                continue
            dst = own[target]
            if dst.shape != value.shape:
                raise ValueError(
                    f"{source}: tensor {cname!r} has shape {tuple(value.shape)} but the model expects "
                    f"{tuple(dst.shape)} — was the checkpoint written by a different preset?"
                )
            dst.copy_(value.to(dtype=dst.dtype, device=dst.device))
            loaded.append(cname)
    return loaded, unexpected


def _named_tensors(model: torch.nn.Module) -> Iterable[Tuple[str, torch.Tensor]]:
    # every name of a tied parameter (e.g. a LoRA A shared by q/k/v): a file may name any of them
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers()
