"""Builders of the synthetic dataset: the real readers pointed at ``<data_root>/synthetic/``.

The synthetic generator (``minigpt.datasets.synthetic``) writes the real formats, so each
builder here only swaps the default YAML: paths under ``synthetic/``, 64-pixel images, and
``image_eval`` for every split (random crops would move the shapes the answers describe).
"""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.builders.caption_builders import CCSBUAlignBuilder, CCSBUBuilder, COCOCaptionBuilder
from minigpt.datasets.builders.llava_builders import LlavaConversationBuilder
from minigpt.datasets.builders.refcoco_builders import InvRefCOCOBuilder, RefCOCOBuilder
from minigpt.datasets.builders.vqa_builders import COCOVQABuilder
from minigpt.datasets.datasets.region_label_datasets import SceneRegionDataset


@registry.register_builder("synthetic_caption_wds")
class SyntheticCaptionWdsBuilder(CCSBUBuilder):
    """Synthetic image-caption tar shards (stage-1 alignment), registered as ``synthetic_caption_wds``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_caption_wds/defaults.yaml"}
    TASK = "caption"
    FORMAT = "webdataset tar shards (cc_sbu format) under synthetic/cc_sbu/"
    APPROX_SIZE = "one pair per generated image (default 20k train / 1k test)"


@registry.register_builder("synthetic_cc_sbu_align")
class SyntheticCCSBUAlignBuilder(CCSBUAlignBuilder):
    """Synthetic detailed captions in the cc_sbu_align format, registered as ``synthetic_cc_sbu_align``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_cc_sbu_align/defaults.yaml"}
    TASK = "caption"
    FORMAT = "filter_cap.json (cc_sbu_align format) under synthetic/"
    APPROX_SIZE = "one description per generated train image (default 20k)"


@registry.register_builder("synthetic_coco_caption")
class SyntheticCOCOCaptionBuilder(COCOCaptionBuilder):
    """Synthetic captions in the COCO Karpathy JSON, registered as ``synthetic_coco_caption``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_coco_caption/defaults.yaml"}
    TASK = "caption"
    FORMAT = "LAVIS Karpathy JSON under synthetic/coco_caption/"
    APPROX_SIZE = "one caption per generated image (default 20k train / 1k test)"


@registry.register_builder("synthetic_vqa")
class SyntheticVQABuilder(COCOVQABuilder):
    """Synthetic questions in LAVIS's VQA JSON, registered as ``synthetic_vqa``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_vqa/defaults.yaml"}
    TASK = "vqa"
    FORMAT = "LAVIS VQA JSON under synthetic/vqa/"
    APPROX_SIZE = "up to 5 questions per generated image (default 20k train / 1k test images)"


@registry.register_builder("synthetic_refcoco")
class SyntheticRefCOCOBuilder(RefCOCOBuilder):
    """Synthetic referring expressions in the RefCOCO format, registered as ``synthetic_refcoco``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_refcoco/defaults.yaml"}
    TASK = "refer"
    FORMAT = "refs(unc).p + instances.json under synthetic/refcoco/"
    APPROX_SIZE = "one expression per shape, 1-3 shapes per generated image"


@registry.register_builder("synthetic_invrefcoco")
class SyntheticInvRefCOCOBuilder(InvRefCOCOBuilder):
    """Synthetic box -> expression samples from the RefCOCO format, registered as ``synthetic_invrefcoco``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_invrefcoco/defaults.yaml"}
    TASK = "identify"
    FORMAT = "refs(unc).p + instances.json under synthetic/refcoco/"
    APPROX_SIZE = "one box per shape, 1-3 shapes per generated image"


@registry.register_builder("synthetic_llava")
class SyntheticLlavaBuilder(LlavaConversationBuilder):
    """Synthetic multi-turn conversations in the LLaVA JSON, registered as ``synthetic_llava``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_llava/defaults.yaml"}
    TASK = "conversation"
    FORMAT = "LLaVA conversation JSON under synthetic/llava/"
    APPROX_SIZE = "one conversation per generated image (default 20k train / 1k test)"


@registry.register_builder("synthetic_scene_labels")
class SyntheticSceneLabelsBuilder(BaseDatasetBuilder):
    """The synthetic scenes' labelled boxes (stage 0 of tiny presets), registered as ``synthetic_scene_labels``.

    Reads the generator's own scene files (``scenes_<split>.jsonl``): the kind and colour of every
    shape and its box, for :class:`minigpt.models.vision_pretrain.VisionPretrain`.
    """

    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic_scene_labels/defaults.yaml"}
    TASK = "region_labels"
    FORMAT = "scenes_<split>.jsonl under synthetic/ (one {image, width, height, objects} a line)"
    APPROX_SIZE = "one line per generated image (default 20k train / 1k test)"

    def build_split(self, split: str) -> Dataset:
        vis, _ = self.build_processors(split)
        return SceneRegionDataset(
            self.name(),
            self.split_paths("annotations", split),
            vis,
            self.images_root(),
            fields=[str(f) for f in self.config.label_fields],
        )
