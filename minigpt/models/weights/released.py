"""Released TinyGPT-V, MiniGPT-4 and MiniGPT-v2 ``.pth`` checkpoints, loaded through explicit key maps.

The original projects save ``torch.save({"model": state_dict, "optimizer": ..., ...})`` where the
state dict holds only what their stage trained (LAVIS's runner drops frozen parameters):

* MiniGPT-4 (``Vision-CAIR/MiniGPT-4``, ``minigpt4.py``): ``llama_proj.{weight,bias}``, the one
  Linear from the Q-Former's 768 (or, without Q-Former, 4 x 1408) to the LLM width.
* MiniGPT-v2 (same repo, ``minigpt_v2.py``): ``llama_proj.*`` (Linear(5632 -> 4096)) plus LoRA on the
  Llama-2 attention, ``llama_model.base_model.model.model.layers.N.self_attn.{q,v}_proj.lora_{A,B}[.default].weight``
  (peft 0.2, which the original pins, writes no adapter name; later peft writes ``.default``).
* TinyGPT-V (``DLYuanGod/TinyGPT-V``, ``minigpt4.py`` / ``minigpt_v2.py`` / ``base_model.py``):
  ``llama_proj.*`` (Linear(768 -> 4096)) and ``llama_proj2.*`` (Linear(4096 -> 2560)); LoRA on the
  fused ``self_attn.query_key_value`` and on ``self_attn.dense``; and the norms its recipe trains:
  ``self_attn.{q,k}_layernorm``, ``post_layernorm``, ``input_layernorm`` and ``model.final_layernorm``.
  A stage trained without LoRA saves the LLM keys without peft's ``base_model.model.`` prefix.

The file is read by :func:`minigpt.models.weights.files.read_state_dict` (``torch.load(weights_only=True)``,
the ``{"model": ...}`` wrapper removed). Each key is renamed by the tables below onto this package's
canonical parameter names (see :mod:`minigpt.models.weights.checkpoint`); fused QKV tensors are split with
:func:`minigpt.models.parts.llms.tinygptv_phi.convert_fused_phi_state_dict`. The load reports what was
loaded, which trained parameters of the model the file did not provide (``missing``) and which
file keys have no place in the model (``unexpected``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from minigpt.models.parts.llms.tinygptv_phi import HEADS_3_DIM, convert_fused_phi_state_dict
from minigpt.models.weights.files import read_state_dict
from minigpt.models.weights.names import canonical_name, copy_into_model

logger = logging.getLogger(__name__)

PART = "released checkpoint"

# Original top-level module -> which of the projector's linear layers it is (in forward order)
_PROJECTOR_KEYS = {"llama_proj": 0, "llama_proj2": 1}
_PROJ = re.compile(r"^(?P<module>llama_proj2?)\.(?P<param>weight|bias)$")
_LLM_PREFIX = "llama_model."
_PEFT_PREFIX = "base_model.model."
# peft 0.2 names LoRA weights lora_A.weight; later versions insert the adapter name (".default")
_LORA_NO_ADAPTER = re.compile(r"\.lora_(A|B)\.weight$")
# Frozen parts the original runner never saves; a file that has them still loads, they are reported
_FROZEN_ORIGINAL = ("visual_encoder.", "ln_vision.", "Qformer.", "query_tokens")


@dataclass
class ReleasedLoadReport:
    """What loading a released ``.pth`` did: names are this package's canonical names, except
    ``unexpected``, which lists the file's own keys that have no place in the model."""

    path: str
    layout: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)


def detect_layout(keys: List[str]) -> str:
    """``"tinygptv"``, ``"minigpt_v2"`` or ``"minigpt4"`` from a released state dict's keys (for the report)."""
    if any(k.startswith("llama_proj2.") or ".query_key_value." in k or ".post_layernorm." in k for k in keys):
        return "tinygptv"
    if any(".lora_A" in k for k in keys):
        return "minigpt_v2"
    if any(k.startswith("llama_proj.") for k in keys):
        return "minigpt4"
    raise ValueError(
        "not a TinyGPT-V / MiniGPT-4 / MiniGPT-v2 checkpoint, whose 'model' state dict has llama_proj, "
        f"llama_model or LoRA keys (first keys found: {sorted(keys)[:5]})"
    )


def projector_linears(projector: nn.Module) -> List[str]:
    """Names (inside the projector) of the linear layers the originals call ``llama_proj``, ``llama_proj2``.

    Explicit per projector class; a projector whose layers are not plain linear maps in sequence
    (an MLP with an activation between, an output LayerNorm) does not compute what the original
    did and is refused.
    """
    kind = type(projector).__name__
    names = _PROJECTOR_LINEAR_NAMES.get(kind)
    if names is None:
        raise ValueError(
            f"released checkpoints map llama_proj onto a {', '.join(sorted(_PROJECTOR_LINEAR_NAMES))} projector, "
            f"not {kind}"
        )
    names = names(projector)
    norm = getattr(projector, "norm", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        raise ValueError(
            f"{kind} has an output LayerNorm (out_norm: true) that the original projection lacks; "
            "set projector.out_norm: false to load a released checkpoint"
        )
    return names


def _single_proj(projector: nn.Module) -> List[str]:
    if not isinstance(projector.proj, nn.Linear):
        raise ValueError(
            f"{type(projector).__name__} has a hidden layer (hidden_dim set); the original llama_proj is one "
            "Linear, so set projector.hidden_dim: null"
        )
    return ["proj"]


def _qformer_proj(projector: nn.Module) -> List[str]:
    # proj is a Sequential of Linear layers with nothing between them (see projectors/qformer.py)
    return [f"proj.{i}" for i in range(len(projector.proj))]


_PROJECTOR_LINEAR_NAMES = {
    "LinearProjector": _single_proj,
    "ConcatLinearProjector": _single_proj,
    "QFormerLinearProjector": _qformer_proj,
}


def _llm_name(rest: str) -> str:
    """A key below ``llama_model.`` -> the canonical name below ``llm.model.``."""
    if rest.startswith(_PEFT_PREFIX):
        rest = rest[len(_PEFT_PREFIX) :]
    rest = _LORA_NO_ADAPTER.sub(r".lora_\1.default.weight", rest)
    return "llm.model." + rest


def convert_released_state_dict(
    state: Dict[str, torch.Tensor],
    projector: nn.Module,
    num_heads: int,
    fused_layout: str = HEADS_3_DIM,
) -> tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a released state dict onto canonical names; return (tensors, original keys not mapped).

    ``projector`` decides where ``llama_proj`` / ``llama_proj2`` go; ``num_heads`` (the LLM's) splits
    a fused ``query_key_value``.
    """
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    llm: Dict[str, torch.Tensor] = {}
    linears: Optional[List[str]] = None
    for key, value in state.items():
        m = _PROJ.match(key)
        if m is not None:
            if linears is None:
                linears = projector_linears(projector)
            idx = _PROJECTOR_KEYS[m.group("module")]
            if idx >= len(linears):
                raise ValueError(
                    f"checkpoint key {key!r}: this projector has {len(linears)} linear layer(s), the checkpoint "
                    f"{idx + 1}; pick the preset the checkpoint was trained with"
                )
            out[f"projector.{linears[idx]}.{m.group('param')}"] = value
        elif key.startswith(_LLM_PREFIX):
            llm[_llm_name(key[len(_LLM_PREFIX) :])] = value
        else:
            unmapped.append(key)
    out.update(convert_fused_phi_state_dict(llm, num_heads, fused_layout))
    return out, unmapped


def load_released(model: nn.Module, path: str, fused_layout: str = HEADS_3_DIM) -> ReleasedLoadReport:
    """Load a released ``.pth`` into a multimodal model (``vision_encoder`` / ``projector`` / ``llm``).

    Logs and returns the report; a tensor of the wrong shape is an error naming the key.
    """
    path = str(path)
    try:
        state = read_state_dict(path, PART)
    except RuntimeError as exc:  # unreadable or tensor-less: a wrong model.ckpt value, as a bad safetensors file is
        raise ValueError(str(exc)) from exc
    try:
        layout = detect_layout(list(state))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    num_heads = int(model.llm.model.config.num_attention_heads)
    mapped, unmapped = convert_released_state_dict(state, model.projector, num_heads, fused_layout)
    loaded, not_in_model = copy_into_model(model, mapped, path)
    trained = [canonical_name(n) for n, p in model.named_parameters() if p.requires_grad]
    done = set(loaded)
    report = ReleasedLoadReport(
        path=path,
        layout=layout,
        loaded=loaded,
        missing=[n for n in trained if n not in done],
        unexpected=unmapped + not_in_model,
    )
    frozen = [k for k in report.unexpected if k.startswith(_FROZEN_ORIGINAL)]
    if frozen:
        logger.warning(
            "%s: %d keys of frozen parts (vision encoder, Q-Former) are not loaded from a released stage "
            "checkpoint; those parts load from their own `pretrained` files",
            path,
            len(frozen),
        )
    if report.missing:
        logger.warning(
            "%s (%s layout): %d trained parameters of this model are not in the file, e.g. %s",
            path,
            layout,
            len(report.missing),
            report.missing[:5],
        )
    if report.unexpected:
        logger.warning(
            "%s: %d keys have no place in this model, e.g. %s",
            path,
            len(report.unexpected),
            report.unexpected[:5],
        )
    logger.info("%s (%s layout): loaded %d tensors", path, layout, len(loaded))
    return report
