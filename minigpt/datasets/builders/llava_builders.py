"""Builder of the LLaVA instruction-tuning conversations."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.llava_datasets import LlavaConversationDataset


@registry.register_builder("llava_conversation")
class LlavaConversationBuilder(BaseDatasetBuilder):
    """LLaVA-Instruct multi-turn conversations on COCO images, registered as ``llava_conversation``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/llava_conversation/defaults.yaml"}

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(LlavaConversationDataset, split)
