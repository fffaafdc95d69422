"""Builders of LLaVA-Instruct-150K: conversations, detailed descriptions and complex reasoning."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.llava_datasets import LlavaConversationDataset


@registry.register_builder("llava_conversation")
class LlavaConversationBuilder(BaseDatasetBuilder):
    """LLaVA-Instruct multi-turn conversations on COCO images, registered as ``llava_conversation``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_conversation/defaults.yaml"}
    TASK = "conversation"
    FORMAT = "LLaVA JSON [{id, image, conversations: [{from: human|gpt, value}]}] + COCO 2017 train images"
    APPROX_SIZE = "58k multi-turn conversations"
    single_turn = False

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(LlavaConversationDataset, split, single_turn=self.single_turn)


@registry.register_builder("llava_detail")
class LlavaDetailBuilder(LlavaConversationBuilder):
    """LLaVA-Instruct detailed image descriptions (``detail_23k.json``), registered as ``llava_detail``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_detail/defaults.yaml"}
    FORMAT = "LLaVA JSON (detail_23k.json: one human/gpt pair per image) + COCO 2017 train images"
    APPROX_SIZE = "23k descriptions"
    single_turn = True


@registry.register_builder("llava_reason")
class LlavaReasonBuilder(LlavaConversationBuilder):
    """LLaVA-Instruct complex reasoning questions (``complex_reasoning_77k.json``), registered as ``llava_reason``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_reason/defaults.yaml"}
    FORMAT = "LLaVA JSON (complex_reasoning_77k.json: one human/gpt pair per image) + COCO 2017 train images"
    APPROX_SIZE = "77k question-answer pairs"
    single_turn = True
