"""Compositions that transformers already has a class for, and the exact weight maps onto them.

* **BLIP-2** (``Blip2ForConditionalGeneration``): MiniGPT-4's composition, an ``eva_vit_g`` encoder
  (class token kept, no ``ln_vision`` of its own), a ``qformer_linear`` projector with one Linear
  (MiniGPT-4's ``llama_proj``) and a stock causal LM. EVA ViT-g/14 *is* BLIP-2's vision model:
  timm's fused ``qkv`` with ``q_bias``/``v_bias`` becomes one ``qkv.bias`` ``[q_bias; 0; v_bias]``;
  the projector's ``ln_vision`` becomes the vision model's ``post_layernorm``; the query tokens, the
  Q-Former (already transformers' ``Blip2QFormerModel`` here) and the Linear
  (``language_projection``) move over as they are. One number differs: BLIP-2's config has one
  ``layer_norm_eps`` for the blocks (1e-6, EVA's) and the ``post_layernorm``, whose LAVIS original
  (``ln_vision``) uses 1e-5; the export keeps 1e-6 (the logits move by well under 1e-4).
* **LLaVA** (``LlavaForConditionalGeneration``): a ``clip_vit`` tower, a two-layer ``mlp`` projector
  whose hidden width is the LLM's (no ``out_norm``) and a stock causal LM without an LM-head bias
  (``select_layer`` is LLaVA's ``vision_feature_layer``, ``drop_cls`` its ``"default"`` strategy).

:func:`hf_layout` says which applies to a model (or why neither does); :func:`blip2_model` and
:func:`llava_model` build the transformers model, on the meta device, and assign the exported
tensors to it, so nothing is allocated twice.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from minigpt.models.weights.export_state import storage_safe

BLIP2 = "blip2"
LLAVA = "llava"
REMOTE = "remote_code"
StateDict = Dict[str, torch.Tensor]


def _cfg(model: nn.Module, part: str) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = getattr(model, "cfg", None)
    block = cfg.get(part) if cfg is not None else None
    return OmegaConf.to_container(block, resolve=True) if block is not None else {}


def _common_blockers(model: nn.Module) -> List[str]:
    """What keeps any stock transformers class from holding ``model`` exactly."""
    out = []
    if len(getattr(model, "adapters", [])):
        out.append("model.adapters places adapters inside the parts")
    if len(getattr(model, "output_heads", {}) or {}):
        out.append("model.heads adds output heads")
    if _cfg(model, "llm").get("low_resource"):
        out.append("llm.low_resource: a quantised LLM cannot be exported; load it without low_resource first")
    if _cfg(model, "llm").get("phi_variant"):
        out.append("llm.phi_variant changes the LLM's layers")
    return out


def _blip2_blockers(model: nn.Module) -> List[str]:
    from minigpt.models.parts.projectors.qformer import QFormerLinearProjector
    from minigpt.models.parts.vision_encoders.eva_vit import EVAViTEncoder

    out = []
    venc, proj = model.vision_encoder, model.projector
    if type(venc) is not EVAViTEncoder:
        out.append(f"the vision encoder is {type(venc).__name__}, not eva_vit_g")
    elif venc.drop_cls or venc.ln_vision is not None:
        out.append(
            "vision_encoder.drop_cls / ln_vision are set (BLIP-2 keeps the class token, norms in the projector)"
        )
    if type(proj) is not QFormerLinearProjector:
        out.append(f"the projector is {type(proj).__name__}, not qformer_linear")
    elif len(proj.proj) != 1:
        out.append("projector.hidden_dims adds Linear layers (BLIP-2 has one language_projection)")
    return out


def _llava_blockers(model: nn.Module) -> List[str]:
    from minigpt.models.parts.projectors.mlp import MLPProjector
    from minigpt.models.parts.vision_encoders.clip_vit import CLIPViTEncoder

    out = []
    venc, proj = model.vision_encoder, model.projector
    if type(venc) is not CLIPViTEncoder:
        out.append(f"the vision encoder is {type(venc).__name__}, not clip_vit")
    if type(proj) is not MLPProjector:
        out.append(f"the projector is {type(proj).__name__}, not mlp")
    else:
        if not isinstance(proj.norm, nn.Identity):
            out.append("projector.out_norm adds a LayerNorm")
        if proj.net[0].out_features != proj.net[2].out_features:
            out.append("projector.hidden_dim differs from the LLM width")
    head = model.llm.causal_lm.get_output_embeddings()
    if getattr(head, "bias", None) is not None and bool(head.bias.detach().abs().max() > 0):
        out.append("the LLM's LM head has a bias, which LLaVA's has not")
    return out


def hf_layout(model: nn.Module) -> Tuple[str, Dict[str, List[str]]]:
    """``(layout, reasons)``: BLIP2, LLAVA or REMOTE, and for each stock class why it does not fit."""
    common = _common_blockers(model)
    reasons = {BLIP2: common + _blip2_blockers(model), LLAVA: common + _llava_blockers(model)}
    for layout in (BLIP2, LLAVA):
        if not reasons[layout]:
            return layout, reasons
    return REMOTE, reasons


def _llm_config(model: nn.Module, dtype: torch.dtype, vocab_size: Optional[int] = None):
    config = model.llm.causal_lm.config.__class__.from_dict(model.llm.causal_lm.config.to_dict())
    config.dtype = dtype
    if vocab_size is not None:  # rows added for an image token (hf_export.image_slot)
        config.vocab_size = vocab_size
    return config


def _take(state: StateDict, prefix: str, to: str) -> StateDict:
    """The tensors of ``state`` under ``prefix``, renamed to start with ``to`` instead."""
    return {to + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _assign(hf_model: nn.Module, state: StateDict, what: str) -> nn.Module:
    """Load ``state`` into the meta-built ``hf_model`` by assignment; every tensor must be covered."""
    own = hf_model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{what}: the weight map does not cover the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ValueError(
                f"{what}: {key} has shape {tuple(value.shape)}, the model wants {tuple(own[key].shape)}"
            )
    # non-persistent buffers (rotary tables, position ids) stay on meta: they are not saved, and
    # from_pretrained rebuilds them; the model returned is for save_pretrained only
    hf_model.load_state_dict(state, strict=True, assign=True)
    return hf_model


def _on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return build()


def eva_to_blip2_vision(state: StateDict, prefix: str, to: str, depth: int) -> StateDict:
    """timm EVA ViT-g tensors under ``prefix`` as ``Blip2VisionModel`` tensors under ``to`` (no post_layernorm)."""
    v = {k[len(prefix) :]: t for k, t in state.items() if k.startswith(prefix)}
    out = {
        f"{to}embeddings.class_embedding": v["cls_token"],
        f"{to}embeddings.position_embedding": v["pos_embed"],
        f"{to}embeddings.patch_embedding.weight": v["patch_embed.proj.weight"],
        f"{to}embeddings.patch_embedding.bias": v["patch_embed.proj.bias"],
    }
    names = {
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "attn.proj": "self_attn.projection",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for i in range(depth):
        b, h = f"blocks.{i}.", f"{to}encoder.layers.{i}."
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                out[f"{h}{theirs}.{p}"] = v[f"{b}{ours}.{p}"]
        out[f"{h}self_attn.qkv.weight"] = v[f"{b}attn.qkv.weight"]
        q, vb = v[f"{b}attn.q_bias"], v[f"{b}attn.v_bias"]
        out[f"{h}self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), vb])  # EVA's K has no bias
    return out


def blip2_vision_config(venc: nn.Module) -> Dict[str, Any]:
    """``Blip2VisionConfig`` fields of an :class:`EVAViTEncoder`."""
    block = venc.vit.blocks[0]
    return dict(
        hidden_size=venc.width,
        intermediate_size=block.mlp.fc1.out_features,
        num_hidden_layers=venc.depth,
        num_attention_heads=block.attn.num_heads,
        image_size=venc.image_size,
        patch_size=venc.patch_size,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )


def blip2_model(
    model: nn.Module,
    state: StateDict,
    dtype: torch.dtype,
    image_token_id: int,
    vocab_size: Optional[int] = None,
):
    """``Blip2ForConditionalGeneration`` holding ``state`` (exported tensors under canonical names)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    proj = model.projector
    qcfg = proj.qformer.config.to_dict()
    config = Blip2Config(
        vision_config=blip2_vision_config(model.vision_encoder),
        qformer_config={k: v for k, v in qcfg.items() if k not in ("transformers_version", "model_type")},
        text_config=_llm_config(model, dtype, vocab_size).to_dict(),
        num_query_tokens=proj.num_query_token,
        image_token_index=image_token_id,
    )
    config.dtype = dtype
    mapped = eva_to_blip2_vision(state, "vision_encoder.vit.", "vision_model.", model.vision_encoder.depth)
    mapped.update(_take(state, "projector.ln_vision.", "vision_model.post_layernorm."))
    mapped["query_tokens"] = state["projector.query_tokens"]
    mapped.update(_take(state, "projector.qformer.", "qformer."))
    mapped.update(_take(state, "projector.proj.0.", "language_projection."))
    mapped.update(_take(state, "llm.model.", "language_model."))
    hf = _on_meta(lambda: Blip2ForConditionalGeneration(config))
    return _assign(hf, _cast(mapped, dtype), "BLIP-2 export")


def llava_config(
    model: nn.Module,
    dtype: torch.dtype,
    image_token_id: Optional[int] = None,
    vocab_size: Optional[int] = None,
):
    """The ``LlavaConfig`` of a model :func:`hf_layout` calls LLAVA."""
    from transformers import LlavaConfig

    venc, proj = model.vision_encoder, model.projector
    vcfg = venc.model.config.to_dict()
    config = LlavaConfig(
        vision_config={k: v for k, v in vcfg.items() if k != "transformers_version"},
        text_config=_llm_config(model, dtype, vocab_size).to_dict(),
        image_token_id=model.image_token_id if image_token_id is None else image_token_id,
        projector_hidden_act="gelu" if isinstance(proj.net[1], nn.GELU) else "silu",
        vision_feature_layer=venc.select_layer,
        vision_feature_select_strategy="default" if venc.drop_cls else "full",
        image_seq_length=venc.num_tokens,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(model.llm.causal_lm.config, "tie_word_embeddings", False)),
    )
    config.dtype = dtype
    return config


def llava_state_dict(state: StateDict) -> StateDict:
    """Exported tensors (canonical names) under ``LlavaForConditionalGeneration``'s names.

    The LM head's bias, which LLaVA has not, is left out (:func:`hf_layout` checked it is zero).
    """
    mapped = _take(state, "vision_encoder.model.", "model.vision_tower.")
    mapped.update(_take(state, "projector.net.0.", "model.multi_modal_projector.linear_1."))
    mapped.update(_take(state, "projector.net.2.", "model.multi_modal_projector.linear_2."))
    mapped.update(_take(state, "llm.model.model.", "model.language_model."))
    mapped["lm_head.weight"] = state["llm.model.lm_head.weight"]
    return mapped


def llava_model(
    model: nn.Module,
    state: StateDict,
    dtype: torch.dtype,
    image_token_id: int,
    vocab_size: Optional[int] = None,
):
    """``LlavaForConditionalGeneration`` holding ``state`` (exported tensors under canonical names)."""
    from transformers import LlavaForConditionalGeneration

    config = llava_config(model, dtype, image_token_id, vocab_size)
    hf = _on_meta(lambda: LlavaForConditionalGeneration(config))
    return _assign(hf, _cast(llava_state_dict(state), dtype), "LLaVA export")


def _cast(state: StateDict, dtype: Optional[torch.dtype]) -> StateDict:
    """Floating tensors in ``dtype`` (others as they are) on the CPU, no two sharing storage.

    Tensors already right are used as they are (a 7B model is not copied a second time); a tensor
    whose storage another one uses (tied weights) is cloned, which safetensors needs.
    """
    out = {}
    for k, v in state.items():
        v = v.detach()
        out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return storage_safe(out)


# -- remote code -------------------------------------------------------------------------------------
REMOTE_MODULE = "modeling_minigpt"  # the file name the remote code is written under in an export
REMOTE_CLASSES = {
    "AutoConfig": f"{REMOTE_MODULE}.MiniGPTConfig",
    "AutoModel": f"{REMOTE_MODULE}.MiniGPTForConditionalGeneration",
    "AutoModelForCausalLM": f"{REMOTE_MODULE}.MiniGPTForConditionalGeneration",
    "AutoModelForImageTextToText": f"{REMOTE_MODULE}.MiniGPTForConditionalGeneration",
}


def _remote_vision(model: nn.Module) -> Tuple[Dict[str, Any], Callable[[StateDict], StateDict]]:
    """The remote code's ``vision_config`` for ``model``'s encoder, and its tensor renaming."""
    from minigpt.models.parts.vision_encoders.clip_vit import CLIPViTEncoder
    from minigpt.models.parts.vision_encoders.eva_vit import EVAViTEncoder
    from minigpt.models.parts.vision_encoders.tiny_vit import TinyViTEncoder

    venc = model.vision_encoder
    keep = lambda s: _take(s, "vision_encoder.", "vision_encoder.")  # noqa: E731 (same names)
    if type(venc) is TinyViTEncoder:
        convs = [m for m in venc.stem if isinstance(m, nn.Conv2d)]
        block = venc.blocks[0]
        return {
            "kind": "tiny_vit",
            "image_size": venc.image_size,
            "patch_size": venc.image_size // venc.grid,
            "width": venc.width,
            "depth": len(venc.blocks),
            "num_heads": block.attn.num_heads,
            "mlp_ratio": block.mlp.fc1.out_features / venc.width,
            "stem_channels": convs[0].out_channels if len(convs) > 1 else None,
            "stem_norm": "batch" if isinstance(venc.stem[1], nn.BatchNorm2d) else "group",
        }, keep
    if type(venc) is EVAViTEncoder:

        def rename(s: StateDict) -> StateDict:
            out = eva_to_blip2_vision(s, "vision_encoder.vit.", "vision_encoder.", venc.depth)
            out.update(_take(s, "vision_encoder.ln_vision.", "vision_encoder.ln_vision."))
            return out

        cfg = {"kind": "eva_vit_g", "blip2": blip2_vision_config(venc), "drop_cls": venc.drop_cls}
        return {**cfg, "ln_vision": venc.ln_vision is not None}, rename
    if type(venc) is CLIPViTEncoder:
        clip = {k: v for k, v in venc.model.config.to_dict().items() if k != "transformers_version"}
        return {
            "kind": "clip_vit",
            "clip": clip,
            "select_layer": venc.select_layer,
            "drop_cls": venc.drop_cls,
        }, keep
    raise ValueError(
        f"export --format hf: the vision encoder {type(venc).__name__} has no Hugging Face form "
        "(remote code covers tiny_vit, eva_vit_g and clip_vit)"
    )


def _remote_projector(model: nn.Module) -> Dict[str, Any]:
    """The remote code's ``projector_config`` for ``model``'s projector (its tensor names are ours)."""
    from minigpt.models.parts.projectors.concat import ConcatLinearProjector
    from minigpt.models.parts.projectors.linear import LinearProjector
    from minigpt.models.parts.projectors.mlp import MLPProjector
    from minigpt.models.parts.projectors.qformer import QFormerLinearProjector

    proj = model.projector
    out_norm = isinstance(getattr(proj, "norm", None), nn.LayerNorm)
    if type(proj) is LinearProjector:
        return {
            "kind": "linear",
            "in_dim": proj.proj.in_features,
            "out_dim": proj.proj.out_features,
            "out_norm": out_norm,
        }
    if type(proj) is MLPProjector:
        a, b = proj.net[0], proj.net[2]
        act = "gelu" if isinstance(proj.net[1], nn.GELU) else "silu"
        return {
            "kind": "mlp",
            "in_dim": a.in_features,
            "hidden_dim": a.out_features,
            "out_dim": b.out_features,
            "activation": act,
            "out_norm": out_norm,
        }
    if type(proj) is ConcatLinearProjector:
        first = proj.proj[0] if isinstance(proj.proj, nn.Sequential) else proj.proj
        last = proj.proj[-1] if isinstance(proj.proj, nn.Sequential) else proj.proj
        hidden = first.out_features if isinstance(proj.proj, nn.Sequential) else None
        return {
            "kind": "concat_linear",
            "in_dim": first.in_features // proj.group,
            "out_dim": last.out_features,
            "group": proj.group,
            "layout": proj.layout,
            "hidden_dim": hidden,
            "out_norm": out_norm,
        }
    if type(proj) is QFormerLinearProjector:
        qcfg = {
            k: v
            for k, v in proj.qformer.config.to_dict().items()
            if k not in ("transformers_version", "model_type")
        }
        dims = [proj.proj[0].in_features] + [layer.out_features for layer in proj.proj]
        return {
            "kind": "qformer_linear",
            "in_dim": proj.ln_vision.normalized_shape[0],
            "qformer": qcfg,
            "num_query_token": proj.num_query_token,
            "dims": dims,
        }
    raise ValueError(
        f"export --format hf: the projector {type(proj).__name__} has no Hugging Face form "
        "(remote code covers linear, mlp, concat_linear and qformer_linear)"
    )


def remote_model(
    model: nn.Module,
    state: StateDict,
    dtype: torch.dtype,
    image_token_id: int,
    vocab_size: Optional[int] = None,
):
    """The remote-code model (:mod:`minigpt.models.weights.hf_remote_code`) holding ``state``."""
    from minigpt.models.weights.hf_remote_code import MiniGPTConfig, MiniGPTForConditionalGeneration

    blockers = _common_blockers(model)
    blockers = [b for b in blockers if not b.startswith("llm.phi_variant")]
    if blockers:
        raise ValueError("export --format hf cannot write this model: " + "; ".join(blockers))
    vision, rename = _remote_vision(model)
    variant = _cfg(model, "llm").get("phi_variant")
    config = MiniGPTConfig(
        vision_config=vision,
        projector_config=_remote_projector(model),
        text_config=_llm_config(model, dtype, vocab_size).to_dict(),
        text_variant=variant,
        image_token_id=image_token_id,
        image_seq_length=model.num_image_tokens(),
    )
    config.dtype = dtype
    config.auto_map = dict(REMOTE_CLASSES)
    config.architectures = ["MiniGPTForConditionalGeneration"]
    mapped = rename(state)
    mapped.update(_take(state, "projector.", "projector."))
    mapped.update(_take(state, "llm.model.", "language_model."))
    hf = _on_meta(lambda: MiniGPTForConditionalGeneration(config))
    return _assign(hf, _cast(mapped, dtype), "remote-code export")


# where each layout puts the LLM's modules (for LoRA adapter names)
LLM_PREFIX = {BLIP2: "language_model.", LLAVA: "model.language_model.", REMOTE: "language_model."}


def hf_llm_name(layout: str, name: str) -> str:
    """A canonical ``llm.model.*`` name as the exported model of ``layout`` calls it."""
    rest = name[len("llm.model.") :]
    if layout == LLAVA:
        return "lm_head" + rest[len("lm_head") :] if rest.startswith("lm_head") else "model.language_" + rest
    return LLM_PREFIX[layout] + rest
