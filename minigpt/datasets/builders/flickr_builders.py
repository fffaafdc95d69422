"""Builders of MiniGPT-v2's three Flickr30k Entities tasks (its preprocessed JSON + Flickr30k images).

``scripts/convert_flickr30k_entities.py`` writes the same JSON files from the official
Flickr30k Entities release when MiniGPT-v2's own files are not at hand.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.flickr_datasets import (
    FlickrCaptionToPhraseDataset,
    FlickrGroundedCaptionDataset,
    FlickrObjectToPhraseDataset,
)

_SIZE = "159k captions / 32k images (Flickr30k Entities; MiniGPT-v2's filtered files: a subset)"


class _FlickrEntitiesBuilder(BaseDatasetBuilder):
    dataset_cls: type
    prompt_slot = True  # the detection prompts take the caption or phrase in their `{}`

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(self.dataset_cls, split, prompts=self.prompts(slot=self.prompt_slot))


@registry.register_builder("flickr_grounded_caption")
class FlickrGroundedCaptionBuilder(_FlickrEntitiesBuilder):
    """Flickr30k grounded captions (``[grounding]``), registered as ``flickr_grounded_caption``.

    A caption with a box after each phrase it grounds. Reads MiniGPT-v2's
    ``groundedcaption.json`` (``{"image_id", "grounded_caption"}`` entries) with images at
    ``<images>/<image_id>.jpg``.
    """

    TASK = "grounded_caption"
    FORMAT = "MiniGPT-v2 filtered Flickr30k JSON (groundedcaption.json) + Flickr30k images"
    APPROX_SIZE = _SIZE
    DATASET_CONFIG_DICT = {"default": "configs/datasets/flickr_grounded_caption/defaults.yaml"}
    dataset_cls = FlickrGroundedCaptionDataset
    prompt_slot = False


@registry.register_builder("flickr_caption_to_phrase")
class FlickrCaptionToPhraseBuilder(_FlickrEntitiesBuilder):
    """Flickr30k caption -> its phrases with boxes (``[detection]``), as ``flickr_caption_to_phrase``.

    Reads MiniGPT-v2's ``captiontobbox.json`` (``{"image_id", "caption", "output"}`` entries).
    """

    TASK = "detection"
    FORMAT = "MiniGPT-v2 filtered Flickr30k JSON (captiontobbox.json) + Flickr30k images"
    APPROX_SIZE = _SIZE
    DATASET_CONFIG_DICT = {"default": "configs/datasets/flickr_caption_to_phrase/defaults.yaml"}
    dataset_cls = FlickrCaptionToPhraseDataset


@registry.register_builder("flickr_object_to_phrase")
class FlickrObjectToPhraseBuilder(_FlickrEntitiesBuilder):
    """Flickr30k phrase -> its boxes (``[detection]``), registered as ``flickr_object_to_phrase``.

    Reads MiniGPT-v2's ``phrasetobbox.json`` (``{"image_id", "phrase", "bbox"}`` entries).
    """

    TASK = "detection"
    FORMAT = "MiniGPT-v2 filtered Flickr30k JSON (phrasetobbox.json) + Flickr30k images"
    APPROX_SIZE = (
        "244k grounded entities (276k boxes) / 32k images (Flickr30k Entities; MiniGPT-v2's: a subset)"
    )
    DATASET_CONFIG_DICT = {"default": "configs/datasets/flickr_object_to_phrase/defaults.yaml"}
    dataset_cls = FlickrObjectToPhraseDataset
