"""The model families users know, as registered names over the one composition."""

from __future__ import annotations

from minigpt.models.composition.mllm import MultimodalLLM


class TinyGPTV(MultimodalLLM):
    """TinyGPT-V: a vision encoder, projection layers and Phi-2. YAML name ``tinygptv``."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "tiny": "configs/models/tinygptv/tiny.yaml",
        "stage1_2_3": "configs/models/tinygptv/stage1_2_3.yaml",
        "stage4": "configs/models/tinygptv/stage4.yaml",
    }
    DEFAULT_MODEL_TYPE = "tiny"


class MiniGPT4(MultimodalLLM):
    """MiniGPT-4: vision encoder + Q-Former, one linear layer, a Vicuna/Llama LLM. YAML name ``minigpt4``."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "tiny": "configs/models/minigpt4/tiny.yaml",
        "vicuna7b": "configs/models/minigpt4/vicuna7b.yaml",
    }
    DEFAULT_MODEL_TYPE = "tiny"


class MiniGPTv2(MultimodalLLM):
    """MiniGPT-v2: 4 adjacent visual tokens concatenated, one linear layer, Llama-2 chat. YAML name ``minigpt_v2``."""

    PRETRAINED_MODEL_CONFIG_DICT = {
        "tiny": "configs/models/minigpt_v2/tiny.yaml",
        "llama2_chat_7b": "configs/models/minigpt_v2/llama2_chat_7b.yaml",
    }
    DEFAULT_MODEL_TYPE = "tiny"
