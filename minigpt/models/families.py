"""The model families users know, as registered names over the one composition.

Each family's presets are ``configs/models/<family>/<model_type>.yaml``; ``tiny`` (the default
``model_type`` of every model) is the few-megabyte one the tests and the quickstart build; the
``released_*`` presets feed a released checkpoint the token ids its original code feeds it.
"""

from __future__ import annotations

from typing import Dict

import torch
from omegaconf import DictConfig, OmegaConf

from minigpt.common.registry import registry
from minigpt.models.composition.mllm import MultimodalLLM

MEDIA_INPUTS = ("pixels", "features")


def presets(family: str, *model_types: str) -> Dict[str, str]:
    """The ``PRETRAINED_MODEL_CONFIG_DICT`` of ``family``: each model type's YAML under ``configs/models/<family>/``."""
    return {t: f"configs/models/{family}/{t}.yaml" for t in model_types}


class TinyGPTV(MultimodalLLM):
    """TinyGPT-V: a vision encoder, projection layers and Phi-2. YAML name ``tinygptv``."""

    PRETRAINED_MODEL_CONFIG_DICT = presets("tinygptv", "tiny", "stage1_2_3", "stage4", "released_stage3", "released_stage4")


class MiniGPT4(MultimodalLLM):
    """MiniGPT-4: vision encoder + Q-Former, one linear layer, a Vicuna/Llama LLM. YAML name ``minigpt4``."""

    PRETRAINED_MODEL_CONFIG_DICT = presets("minigpt4", "tiny", "vicuna7b", "released_vicuna7b")


class MiniGPTv2(MultimodalLLM):
    """MiniGPT-v2: 4 adjacent visual tokens concatenated, one linear layer, Llama-2 chat. YAML name ``minigpt_v2``."""

    PRETRAINED_MODEL_CONFIG_DICT = presets("minigpt_v2", "tiny", "llama2_chat_7b", "released_llama2_chat_7b")


class MMLLaMA(MultimodalLLM):
    """MM-LLaMA: ImageBind embeddings -> one bias-free Linear with dropout -> Llama-2 chat with LoRA. YAML name ``mm_llama``.

    One LLM token per image or video (the ImageBind embedding, averaged over a video's views).
    ``media_input: features`` (model YAML key) swaps the configured encoder for the ``precomputed``
    one of the same output width, so samples carry stored embeddings instead of pixels (MM-LLaMA's
    own way: ImageBind runs once, offline).
    """

    PRETRAINED_MODEL_CONFIG_DICT = presets("mm_llama", "tiny", "llama2_chat_7b")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "MMLLaMA":
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        media_input = cfg.get("media_input", "pixels")
        if media_input not in MEDIA_INPUTS:
            raise ValueError(f"model.media_input must be one of {', '.join(MEDIA_INPUTS)}, got {media_input!r}")
        if media_input == "features" and cfg.vision_encoder.name != "precomputed":
            with torch.device("meta"):  # the encoder's output width, without building or reading its weights
                dim = registry.get_vision_encoder_class(cfg.vision_encoder.name).from_config(cfg.vision_encoder).out_dim
            cfg = OmegaConf.merge(cfg, {})
            cfg.vision_encoder = OmegaConf.create({"name": "precomputed", "dim": int(dim), "tokens": 1})
        model = super().from_config(cfg)
        n = model.num_image_tokens()
        if n != 1:
            raise ValueError(
                f"model.vision_encoder / model.projector: mm_llama puts one LLM token per image or video, "
                f"but {cfg.vision_encoder.name} + {cfg.projector.name} give {n}"
            )
        for kind, path in model.media_paths.items():
            if path.num_tokens() != 1:
                raise ValueError(
                    f"model.media_paths.{kind}: mm_llama puts one LLM token per item, but this chain gives "
                    f"{path.num_tokens()}"
                )
        return model
