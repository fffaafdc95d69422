"""The model families users know, as registered names over the one composition.

Each family's presets are ``configs/models/<family>/<model_type>.yaml``; ``tiny`` (the default
``model_type`` of every model) is the few-megabyte one the tests and the quickstart build; the
``released_*`` presets feed a released checkpoint the token ids its original code feeds it.
"""

from __future__ import annotations

from typing import Dict

from minigpt.models.composition.mllm import MultimodalLLM


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
