"""Builders of MiniGPT-v2's three Flickr30k Entities tasks (its preprocessed JSON + Flickr30k images).

``scripts/convert_flickr30k_entities.py`` writes the same JSON files from the official
Flickr30k Entities release when MiniGPT-v2's own files are not at hand.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder
from minigpt.datasets.datasets.flickr_datasets import (
    FlickrCaptionToPhraseDataset,
    FlickrGroundedCaptionDataset,
    FlickrObjectToPhraseDataset,
)

_FORMAT = "MiniGPT-v2 filtered Flickr30k JSON ({file}) + Flickr30k images"


class _FlickrEntitiesBuilder(BaseDatasetBuilder):
    """A Flickr30k Entities reader (``dataset_cls``) over ``build_info.annotations.<split>``."""

    dataset_cls: type
    TASK = "detection"
    APPROX_SIZE = "159k captions / 32k images (Flickr30k Entities; MiniGPT-v2's filtered files: a subset)"
    prompt_slot = True  # the detection prompts take the caption or phrase in their `{}`

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(self.dataset_cls, split, prompts=self.prompts(slot=self.prompt_slot))


# groundedcaption.json: {"image_id", "grounded_caption"} entries, a box after each phrase it grounds; images at
# <images>/<image_id>.jpg. Its prompts ask for the caption and take no `{}`.
FlickrGroundedCaptionBuilder = declare_builder(__name__, "FlickrGroundedCaptionBuilder", _FlickrEntitiesBuilder, "flickr_grounded_caption", "Flickr30k grounded captions (``[grounding]``)", TASK="grounded_caption", FORMAT=_FORMAT.format(file="groundedcaption.json"), dataset_cls=FlickrGroundedCaptionDataset, prompt_slot=False)
# captiontobbox.json: {"image_id", "caption", "output"} entries.
FlickrCaptionToPhraseBuilder = declare_builder(__name__, "FlickrCaptionToPhraseBuilder", _FlickrEntitiesBuilder, "flickr_caption_to_phrase", "Flickr30k caption -> its phrases with boxes (``[detection]``)", FORMAT=_FORMAT.format(file="captiontobbox.json"), dataset_cls=FlickrCaptionToPhraseDataset)
# phrasetobbox.json: {"image_id", "phrase", "bbox"} entries.
FlickrObjectToPhraseBuilder = declare_builder(__name__, "FlickrObjectToPhraseBuilder", _FlickrEntitiesBuilder, "flickr_object_to_phrase", "Flickr30k phrase -> its boxes (``[detection]``)", FORMAT=_FORMAT.format(file="phrasetobbox.json"), dataset_cls=FlickrObjectToPhraseDataset, APPROX_SIZE="244k grounded entities (276k boxes) / 32k images (Flickr30k Entities; MiniGPT-v2's: a subset)")
