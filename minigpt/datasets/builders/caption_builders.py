"""Builders of the caption datasets: webdataset shards (CC/SBU, LAION), CC-SBU-Align, COCO Karpathy, TextCaps."""

from __future__ import annotations

from typing import List

from torch.utils.data import Dataset

from minigpt.common.io import expand_shards
from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.caption_datasets import (
    CaptionWebDataset,
    CCSBUAlignDataset,
    COCOCaptionDataset,
    TextCapsDataset,
)


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
    TASK = "caption"
    FORMAT = "webdataset tar shards: KEY.jpg + KEY.json {caption} (img2dataset)"
    APPROX_SIZE = "~4M image-text pairs (CC3M + SBU 1M, as downloaded)"


@registry.register_builder("laion")
class LaionBuilder(WebDatasetCaptionBuilder):
    """LAION image-text pairs in webdataset shards (MiniGPT-4 stage 1), registered as ``laion``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/laion/defaults.yaml"}
    TASK = "caption"
    FORMAT = "webdataset tar shards: KEY.jpg + KEY.json {caption} (img2dataset)"
    APPROX_SIZE = "~115M image-text pairs (BLIP's filtered LAION-115M), 10,489 shards"


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
    TASK = "caption"
    FORMAT = "MiniGPT-4 filter_cap.json {annotations: [{image_id, caption}]} + image/{image_id}.jpg"
    APPROX_SIZE = "3.4k image-description pairs"


@registry.register_builder("coco_caption")
class COCOCaptionBuilder(_AnnotationCaptionBuilder):
    """COCO captions, Karpathy splits in LAVIS's JSON, registered as ``coco_caption``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco_caption/defaults.yaml"}
    dataset_cls = COCOCaptionDataset
    TASK = "caption"
    FORMAT = "LAVIS Karpathy JSON [{image, caption, image_id}] + COCO 2014 images"
    APPROX_SIZE = "567k train captions / 113k images; 5k test images"


@registry.register_builder("textcaps")
class TextCapsBuilder(_AnnotationCaptionBuilder):
    """TextCaps, captions that read the text in the image, registered as ``textcaps``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/textcaps/defaults.yaml"}
    dataset_cls = TextCapsDataset
    TASK = "caption"
    FORMAT = "TextCaps JSON {data: [{image_id, caption_str, reference_strs, ...}]} + TextVQA train_images"
    APPROX_SIZE = "110k train captions / 22k images; 16k val captions / 3.2k images"
