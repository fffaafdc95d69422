"""Builders of the caption datasets: webdataset shards (CC/SBU, LAION), CC-SBU-Align, COCO Karpathy, TextCaps."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.io import expand_shards
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder
from minigpt.datasets.datasets.caption_datasets import (
    CaptionWebDataset,
    CCSBUAlignDataset,
    COCOCaptionDataset,
    TextCapsDataset,
)

_SHARDS_FORMAT = "webdataset tar shards: KEY.jpg + KEY.json {caption} (img2dataset)"


class WebDatasetCaptionBuilder(BaseDatasetBuilder):
    """Shared logic of the tar-shard caption builders.

    ``build_info.shards`` maps a split to a brace (``train-{00000..00019}.tar``) or glob
    (``train-*.tar``) pattern, or a list of them, relative to the data root. The train split
    repeats forever with shuffling; other splits are read once, in order.
    """

    TASK = "caption"
    SPLITS_KEY = "shards"

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


CCSBUBuilder = declare_builder(__name__, "CCSBUBuilder", WebDatasetCaptionBuilder, "cc_sbu", "Conceptual Captions + SBU in webdataset shards (MiniGPT-4 stage 1)", FORMAT=_SHARDS_FORMAT, APPROX_SIZE="~4M image-text pairs (CC3M + SBU 1M, as downloaded)")
LaionBuilder = declare_builder(__name__, "LaionBuilder", WebDatasetCaptionBuilder, "laion", "LAION image-text pairs in webdataset shards (MiniGPT-4 stage 1)", FORMAT=_SHARDS_FORMAT, APPROX_SIZE="~115M image-text pairs (BLIP's filtered LAION-115M), 10,489 shards")


class _AnnotationCaptionBuilder(BaseDatasetBuilder):
    """A caption reader (``dataset_cls``) over ``build_info.annotations.<split>``; eval mode off ``train``."""

    dataset_cls: type = COCOCaptionDataset
    TASK = "caption"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(
            self.dataset_cls, split, prompts=self.prompts(), eval_mode=split != "train"
        )


CCSBUAlignBuilder = declare_builder(__name__, "CCSBUAlignBuilder", _AnnotationCaptionBuilder, "cc_sbu_align", "MiniGPT-4's curated detailed descriptions (``filter_cap.json``)", dataset_cls=CCSBUAlignDataset, FORMAT="MiniGPT-4 filter_cap.json {annotations: [{image_id, caption}]} + image/{image_id}.jpg", APPROX_SIZE="3.4k image-description pairs")
COCOCaptionBuilder = declare_builder(__name__, "COCOCaptionBuilder", _AnnotationCaptionBuilder, "coco_caption", "COCO captions, Karpathy splits in LAVIS's JSON", dataset_cls=COCOCaptionDataset, FORMAT="LAVIS Karpathy JSON [{image, caption, image_id}] + COCO 2014 images", APPROX_SIZE="567k train captions / 113k images; 5k test images")
TextCapsBuilder = declare_builder(__name__, "TextCapsBuilder", _AnnotationCaptionBuilder, "textcaps", "TextCaps, captions that read the text in the image", dataset_cls=TextCapsDataset, FORMAT="TextCaps JSON {data: [{image_id, caption_str, reference_strs, ...}]} + TextVQA train_images", APPROX_SIZE="110k train captions / 22k images; 16k val captions / 3.2k images")
