"""The tensors an export writes: LoRA merged or split off, under canonical names, safe to serialise.

Shared by the minigpt export format (:mod:`minigpt.models.weights.export`) and the Hugging Face one
(:mod:`minigpt.models.weights.hf_export`).
"""

from __future__ import annotations

import copy
import os
from typing import Dict

import torch
from torch import nn

from minigpt.models.weights.names import canonical_name


def is_lora_key(name: str) -> bool:
    """Whether a parameter name is one of LoRA's own tensors (peft's ``lora_A`` / ``lora_B``)."""
    return ".lora_" in name


def storage_safe(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Contiguous CPU tensors, with any tensor whose storage another one already uses cloned.

    safetensors refuses tensors that share memory (tied embeddings, views); each name keeps its own copy.
    """
    seen = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            tensor = tensor.clone()
        else:
            seen.add(ptr)
        out[name] = tensor.contiguous()
    return out


def export_state_dicts(
    model: nn.Module, merge_lora: bool
) -> tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(base tensors, LoRA tensors)`` under canonical names; with ``merge_lora`` the second is empty.

    Merging runs peft's ``merge_and_unload`` on a deep copy of the LLM, so ``model`` keeps its LoRA.
    """
    full = model.state_dict()
    if merge_lora and any(is_lora_key(k) for k in full):
        base = {k: v for k, v in full.items() if not k.startswith("llm.")}
        merged = copy.deepcopy(model.llm.model).merge_and_unload()
        base.update({f"llm.model.{k}": v for k, v in merged.state_dict().items()})
    else:
        base = {canonical_name(k): v for k, v in full.items()}
    lora = {k: base.pop(k) for k in [k for k in base if is_lora_key(k)]}
    return base, lora


def save_safetensors(state: Dict[str, torch.Tensor], path: str) -> None:
    """Write ``state`` to the safetensors file ``path`` (shared storage split, as safetensors needs)."""
    from safetensors.torch import save_file

    save_file(storage_safe(state), path, metadata={"format": "pt"})


def usual_permissions(root: str) -> None:
    """mkdtemp makes a private directory and safetensors private files; an export is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _, names in os.walk(root):
        os.chmod(dirpath, 0o777 & ~umask)
        for name in names:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~umask)
