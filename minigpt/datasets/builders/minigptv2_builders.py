"""Builders of MiniGPT-v2's multi-task conversations and Visual Genome referring regions (its stage 3)."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, default_yaml
from minigpt.datasets.builders.llava_builders import LlavaConversationBuilder
from minigpt.datasets.datasets.minigptv2_datasets import MultiTaskConversationDataset, RefVGDataset


class MultiTaskConversationBuilder(LlavaConversationBuilder):
    """MiniGPT-v2's multi-task conversations on COCO images, registered as ``multitask_conversation``."""

    DATASET_CONFIG_DICT = default_yaml("multitask_conversation")
    FORMAT = "MiniGPT-v2 JSON [{id, conversations: [{from: human|gpt, value}]}] + COCO 2014 train images (COCO_train2014_{id}.jpg)"
    APPROX_SIZE = "multi-turn conversations mixing captions, VQA and grounding (MiniGPT-v2's own file)"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(MultiTaskConversationDataset, split)


class RefVGBuilder(BaseDatasetBuilder):
    """Visual Genome region descriptions as ``[refer]`` samples (phrase -> box), registered as ``refvg``.

    ``build_info.annotations`` maps a split to ``region_descriptions.json`` file(s);
    ``build_info.image_data`` is Visual Genome's ``image_data.json``; ``max_region_area`` keeps
    only smaller regions, as MiniGPT-v2 does.
    """

    DATASET_CONFIG_DICT = default_yaml("refvg")
    TASK = "refer"
    FORMAT = "Visual Genome region_descriptions.json + image_data.json + images at the URLs' last two parts"
    APPROX_SIZE = "5.4M regions / 108k images (fewer under max_region_area)"

    def build_split(self, split: str) -> Dataset:
        area = self.config.max_region_area
        return self.annotation_dataset(
            RefVGDataset,
            split,
            self.split_paths("annotations", split),
            self.path(self.build_info.image_data),
            prompts=self.prompts(slot=True),
            max_region_area=None if area is None else float(area),
        )
