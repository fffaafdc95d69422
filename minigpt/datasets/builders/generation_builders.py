"""Builders of the image-generation data: PhotoChat dialogues, MMC4 documents, (caption, image) pairs.

Their synthetic twins read what ``python -m minigpt.datasets.synthetic --easygen`` writes (the pairs
read the generator's COCO-caption JSON, which every synthetic dataset has).
"""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder, default_yaml
from minigpt.datasets.datasets.generation_datasets import (
    MMC4InterleavedDataset,
    PhotoChatDialogueDataset,
    TextToImagePairDataset,
)


class PhotoChatBuilder(BaseDatasetBuilder):
    """PhotoChat photo-sharing dialogues as EasyGen conversations (photo turn -> ``<Img>description</Img>``), registered as ``photochat``."""

    DATASET_CONFIG_DICT = default_yaml("photochat")
    TASK = "conversation"
    FORMAT = "PhotoChat JSON [{dialogue_id, photo_url, photo_description, dialogue: [{user_id, message, share_photo}]}], a file or a folder of them"
    APPROX_SIZE = "12k dialogues (10.9k train / 1k dev / 1k test)"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(PhotoChatDialogueDataset, split)


class MMC4Builder(BaseDatasetBuilder):
    """MMC4 interleaved documents, each image before its matched sentence, registered as ``mmc4``."""

    DATASET_CONFIG_DICT = default_yaml("mmc4")
    TASK = "interleaved"
    FORMAT = "MMC4 JSON Lines {url, text_list, image_info: [{image_name, matched_text_index, matched_sim}]} + an image folder"
    APPROX_SIZE = "101M documents, 571M images (full); 22M documents (core)"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(
            MMC4InterleavedDataset, split,
            min_similarity=self.config.get("min_similarity"), max_images=self.config.get("max_images"),
        )


class TextToImagePairsBuilder(BaseDatasetBuilder):
    """(caption, image) pairs for creation-only training, the image as ``target_image``, registered as ``t2i_pairs``."""

    DATASET_CONFIG_DICT = default_yaml("t2i_pairs")
    TASK = "text_to_image"
    FORMAT = "LAVIS caption JSON [{image, caption}] (COCO Karpathy's, CC-3M converted alike) + an image folder"
    APPROX_SIZE = "whatever caption set it names (COCO Karpathy train: 567k pairs)"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(
            TextToImagePairDataset, split, prompts=self.prompts(slot=True), answer_template=self.config.answer_template
        )


SyntheticPhotoChatBuilder = declare_builder(__name__, "SyntheticPhotoChatBuilder", PhotoChatBuilder, "synthetic_photochat", "Synthetic drawing dialogues in PhotoChat's JSON", FORMAT="PhotoChat JSON under synthetic/photochat/<split>/ (written with --easygen)", APPROX_SIZE="one dialogue per generated image")
SyntheticMMC4Builder = declare_builder(__name__, "SyntheticMMC4Builder", MMC4Builder, "synthetic_mmc4", "Synthetic interleaved documents in MMC4's layout", FORMAT="MMC4 JSON Lines under synthetic/mmc4/ (written with --easygen)", APPROX_SIZE="one document per two generated images")
SyntheticTextToImagePairsBuilder = declare_builder(__name__, "SyntheticTextToImagePairsBuilder", TextToImagePairsBuilder, "synthetic_t2i_pairs", "Synthetic (caption, image) pairs for creation-only training", FORMAT="LAVIS caption JSON under synthetic/coco_caption/", APPROX_SIZE="one pair per generated image")
