"""Toy-width twins: ``model.scale: toy`` shrinks a preset's widths, depths, heads and vocabulary only.

A twin keeps everything else of the model block it is applied to: the part classes, image size and
patch size, number of query tokens, projector layout, template, ``max_txt_len``, freezing and LoRA
targets, precision and dtypes; the datasets and the ``run:`` section are untouched. So a shipped
real-size config (``train_configs/tinygptv_stage4.yaml``) runs every code path its real run takes,
at 448 px, in seconds on a CPU::

    python train.py --cfg-path train_configs/tinygptv_stage4.yaml --options model.scale=toy

A twin reads no weight file: ``pretrained`` of every part is null (real weights do not fit toy
shapes), so the parts start from random init, and the LLM uses the small tokenizer shipped with
minigpt (its vocabulary sets the embedding size; the token ids of the config follow it).
``model.ckpt`` is kept, so stages of a toy pipeline still find each other's checkpoints.

:func:`toy_twin` is applied to the preset before the user's ``model:`` block is laid over it, so
the config file and ``--options`` still win over the toy widths. The widths per registered part
name are in :data:`TOY_PART_WIDTHS`; a part it does not list (``tiny_vit``, ``concat_linear``,
``linear``, ...) is already small or has no width of its own and is kept as it is.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping

from minigpt.common.config.errors import ConfigError

SCALES = ("real", "toy")
SCALE_KEY = "scale"
# what source_of() names for a value the twin set
TOY_SOURCE = "minigpt.common.config.toy (model.scale=toy)"

# LoRA rank of a twin whose real LLM has LoRA (a twin without LoRA keeps none: that is policy)
TOY_LORA_R = 4
# width of each hidden Linear of a projector (TinyGPT-V's Linear(768->4096) -> Linear(4096->LLM))
TOY_PROJ_HIDDEN = 48

# registered part name -> the keys a twin sets in its block (nested blocks are laid over, not replaced)
TOY_PART_WIDTHS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "vision_encoder": {
        # EVA ViT-g/14 (timm's Eva): 39 blocks of 1408 -> 2 of 32; image and patch size kept
        "eva_vit_g": {"width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 48, "pretrained": None},
        # CLIP ViT-L/14: 24 blocks of 1024 -> 8 of 32 (LaVIN's every-4th class-token states: 6 -> 2 tokens)
        "clip_vit": {
            "pretrained": None,
            "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 8, "num_attention_heads": 2},
        },
        # ImageBind-Huge's vision branch: 32 blocks of 1280 -> 2 of 32; the 1024-d output space kept
        "imagebind_vit": {"width": 32, "depth": 2, "num_heads": 4, "pretrained": None},
        "clip_vit_cls": {
            "pretrained": None,
            "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 8, "num_attention_heads": 2},
        },
    },
    "projector": {
        # BLIP-2's Q-Former: 12 BERT-base layers of 768 -> 2 of 16 (cross-attention every 2nd, as BLIP-2)
        "qformer_linear": {
            "pretrained": None,
            "qformer": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32},
        },
    },
    "llm": {
        # Phi-2 / Llama: 32 layers of 2560 or 4096 -> 2 of 32; norms, rotary fraction and activations kept
        "hf_causal_lm": {
            "pretrained": None,
            "tokenizer": None,
            "config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                # null: the shipped tokenizer's size and ids (minigpt/models/parts/llms/hf_causal_lm.py)
                "vocab_size": None,
                "bos_token_id": None,
                "eos_token_id": None,
            },
        },
    },
}

# registered head name -> the keys a twin sets in its block (`heads.<name>`); a null `vae` stays null.
# DreamLLM's SD UNet (4 levels of 320-1280) -> 2 levels of 8-16; its VAE keeps its 4 levels (8x
# downsampling, so the latents keep their size) at width 4; the number of dream queries is kept.
TOY_HEAD_WIDTHS: Dict[str, Dict[str, Any]] = {
    "dream_diffusion": {
        "unet": {
            "pretrained": None,
            "config": {
                "block_out_channels": [8, 16],
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                "layers_per_block": 1,
                "attention_head_dim": 4,
                "cross_attention_dim": 16,
                "norm_num_groups": 4,
            },
        },
        "vae": {"pretrained": None, "config": {"block_out_channels": [4, 4, 4, 4], "layers_per_block": 1,
                                               "norm_num_groups": 2}},
        "scheduler": {"pretrained": None},
    },
}


def _overlay(base: Dict[Any, Any], over: Mapping) -> Dict[Any, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _overlay(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_scale(scale: Any, where: str) -> str:
    """``scale`` if it is one of :data:`SCALES`; else a :class:`ConfigError` starting with ``where``."""
    if scale not in SCALES:
        raise ConfigError(f"{where}: model.scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return str(scale)


def _toy_head(name: str, block: Any) -> Any:
    widths = TOY_HEAD_WIDTHS.get(str(name))
    if widths is None or not isinstance(block, Mapping):
        return block
    if block.get("vae") is None:
        widths = {k: v for k, v in widths.items() if k != "vae"}
    return _overlay(dict(block), widths)


def toy_twin(model: Mapping) -> Dict[Any, Any]:
    """The ``model:`` block ``model`` at toy width (a new dict; ``scale`` set to ``toy``).

    Keys a part's block lacks are only set where the part's constructor takes them; the hidden
    Linear layers of a ``qformer_linear`` projector keep their number, each ``TOY_PROJ_HIDDEN``
    wide; an LLM with LoRA gets rank ``TOY_LORA_R``.
    """
    out = copy.deepcopy(dict(model))
    for part, by_name in TOY_PART_WIDTHS.items():
        block = out.get(part)
        if not isinstance(block, Mapping):
            continue
        widths = by_name.get(str(block.get("name")))
        if widths is not None:
            block = _overlay(dict(block), widths)
        if part == "projector" and block.get("name") == "qformer_linear" and block.get("hidden_dims"):
            block["hidden_dims"] = [TOY_PROJ_HIDDEN] * len(block["hidden_dims"])
        if part == "llm" and (block.get("lora_r") or 0) > 0:
            block["lora_r"] = TOY_LORA_R
        out[part] = block
    heads = out.get("heads")
    if isinstance(heads, Mapping):
        out["heads"] = {name: _toy_head(name, block) for name, block in heads.items()}
    out[SCALE_KEY] = "toy"
    return out
