"""The tensors an export writes: LoRA merged or split off, under canonical names, safe to serialise.

Shared by the minigpt export format (:mod:`minigpt.models.weights.export`) and the Hugging Face one
(:mod:`minigpt.models.weights.hf_export`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from typing import Dict, Iterator

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


def check_export_target(model: nn.Module, out_dir: str) -> str:
    """``out_dir`` made absolute, after checking that ``model`` has weights and ``out_dir`` is new or empty."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("cannot export a model built on the meta device: it has shapes but no weights")
    out_dir = os.path.abspath(str(out_dir))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"export directory {out_dir} exists and is not empty; choose a new one")
    return out_dir


@contextlib.contextmanager
def staged_export(out_dir: str) -> Iterator[str]:
    """A temporary directory next to ``out_dir`` to write an export into.

    When the block completes it gets the usual permissions and is renamed to ``out_dir``; when the
    block raises it is removed, so a failed export leaves no half-written directory.
    """
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        usual_permissions(tmp)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked by check_export_target); os.replace cannot replace a directory
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def usual_permissions(root: str) -> None:
    """mkdtemp makes a private directory and safetensors private files; an export is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for dirpath, _, names in os.walk(root):
        os.chmod(dirpath, 0o777 & ~umask)
        for name in names:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~umask)
