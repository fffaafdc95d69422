"""Builders of the caption datasets: webdataset shards (CC/SBU, LAION), CC-SBU-Align, COCO Karpathy."""

from __future__ import annotations

from typing import List

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.caption_datasets import (
    CaptionWebDataset,
    CCSBUAlignDataset,
    COCOCaptionDataset,
)
from minigpt.datasets.datasets.io import expand_shards


class WebDatasetCaptionBuilder(BaseDatasetBuilder):
    """Shared logic of the tar-shard caption builders.

    ``build_info.shards`` maps a split to a brace (``train-{00000..00019}.tar``) or glob
    (``train-*.tar``) pattern, or a list of them, relative to the data root. The train split
    repeats forever with shuffling; other splits are read once, in order.
    """

    def splits(self) -> List[str]:
        return [str(s) for s in (self.build_info.get("shards") or {}).keys()]

    def build_split(self, split: str) -> Dataset:
        patterns = self.build_info.shards[split]
        vis, text = self.build_processors(split)
        training = split == "train"
        return CaptionWebDataset(
            self.name(),
            expand_shards(
                list(patterns) if not isinstance(patterns, str) else patterns, self.data_root, self.name()
            ),
            vis,
            text,
            task_tag=self.config.get("task_tag"),
            read_images=self.read_images,
            prompts=self.prompts(),
            repeat=training,
            shuffle_buffer=int(self.build_info.get("shuffle_buffer", 1000)),
            seed=int(self.build_info.get("shuffle_seed", 0)),
            eval_mode=not training,
        )


@registry.register_builder("cc_sbu")
class CCSBUBuilder(WebDatasetCaptionBuilder):
    """Conceptual Captions + SBU in webdataset shards (MiniGPT-4 stage 1), registered as ``cc_sbu``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/cc_sbu/defaults.yaml"}


@registry.register_builder("laion")
class LaionBuilder(WebDatasetCaptionBuilder):
    """LAION image-text pairs in webdataset shards (MiniGPT-4 stage 1), registered as ``laion``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/laion/defaults.yaml"}


class _AnnotationCaptionBuilder(BaseDatasetBuilder):
    dataset_cls = COCOCaptionDataset

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(
            self.dataset_cls, split, prompts=self.prompts(), eval_mode=split != "train"
        )


@registry.register_builder("cc_sbu_align")
class CCSBUAlignBuilder(_AnnotationCaptionBuilder):
    """MiniGPT-4's curated detailed descriptions (``filter_cap.json``), registered as ``cc_sbu_align``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/cc_sbu_align/defaults.yaml"}
    dataset_cls = CCSBUAlignDataset


@registry.register_builder("coco_caption")
class COCOCaptionBuilder(_AnnotationCaptionBuilder):
    """COCO captions, Karpathy splits in LAVIS's JSON, registered as ``coco_caption``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco_caption/defaults.yaml"}
    dataset_cls = COCOCaptionDataset
