"""Builders of the synthetic dataset: the real readers pointed at ``<data_root>/synthetic/``.

The synthetic generator (``minigpt.datasets.synthetic``) writes the real formats, so each
builder here only swaps the default YAML: paths under ``synthetic/``, 64-pixel images, and
``image_eval`` for every split (random crops would move the shapes the answers describe). The TASK
of each is its real-format parent's.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder, default_yaml
from minigpt.datasets.builders.caption_builders import CCSBUAlignBuilder, CCSBUBuilder, COCOCaptionBuilder
from minigpt.datasets.builders.llava_builders import LlavaConversationBuilder
from minigpt.datasets.builders.refcoco_builders import InvRefCOCOBuilder, RefCOCOBuilder
from minigpt.datasets.builders.scienceqa_builders import ScienceQABuilder
from minigpt.datasets.builders.text_builders import AlpacaBuilder
from minigpt.datasets.builders.vqa_builders import COCOVQABuilder
from minigpt.datasets.datasets.region_label_datasets import SceneRegionDataset

# Each reads with the real-format builder it extends; only the default YAML and the catalogue entry differ.
SyntheticCaptionWdsBuilder = declare_builder(__name__, "SyntheticCaptionWdsBuilder", CCSBUBuilder, "synthetic_caption_wds", "Synthetic image-caption tar shards (stage-1 alignment)", FORMAT="webdataset tar shards (cc_sbu format) under synthetic/cc_sbu/", APPROX_SIZE="one pair per generated image (default 20k train / 1k test)")
SyntheticCCSBUAlignBuilder = declare_builder(__name__, "SyntheticCCSBUAlignBuilder", CCSBUAlignBuilder, "synthetic_cc_sbu_align", "Synthetic detailed captions in the cc_sbu_align format", FORMAT="filter_cap.json (cc_sbu_align format) under synthetic/", APPROX_SIZE="one description per generated train image (default 20k)")
SyntheticCOCOCaptionBuilder = declare_builder(__name__, "SyntheticCOCOCaptionBuilder", COCOCaptionBuilder, "synthetic_coco_caption", "Synthetic captions in the COCO Karpathy JSON", FORMAT="LAVIS Karpathy JSON under synthetic/coco_caption/", APPROX_SIZE="one caption per generated image (default 20k train / 1k test)")
SyntheticVQABuilder = declare_builder(__name__, "SyntheticVQABuilder", COCOVQABuilder, "synthetic_vqa", "Synthetic questions in LAVIS's VQA JSON", FORMAT="LAVIS VQA JSON under synthetic/vqa/", APPROX_SIZE="up to 5 questions per generated image (default 20k train / 1k test images)")
SyntheticRefCOCOBuilder = declare_builder(__name__, "SyntheticRefCOCOBuilder", RefCOCOBuilder, "synthetic_refcoco", "Synthetic referring expressions in the RefCOCO format", FORMAT="refs(unc).p + instances.json under synthetic/refcoco/", APPROX_SIZE="one expression per shape, 1-3 shapes per generated image")
SyntheticInvRefCOCOBuilder = declare_builder(__name__, "SyntheticInvRefCOCOBuilder", InvRefCOCOBuilder, "synthetic_invrefcoco", "Synthetic box -> expression samples from the RefCOCO format", FORMAT="refs(unc).p + instances.json under synthetic/refcoco/", APPROX_SIZE="one box per shape, 1-3 shapes per generated image")
SyntheticScienceQABuilder = declare_builder(__name__, "SyntheticScienceQABuilder", ScienceQABuilder, "synthetic_scienceqa", "Synthetic ScienceQA-format problems: shape questions with an image and text-only questions", FORMAT="problems.json + pid_splits.json under synthetic/sqa/; an image problem names its generated image under synthetic/images/", APPROX_SIZE="one shape problem per generated image and as many text-only ones (train / val / test)")
SyntheticAlpacaBuilder = declare_builder(__name__, "SyntheticAlpacaBuilder", AlpacaBuilder, "synthetic_alpaca", "Synthetic text-only instructions in Alpaca's JSON", FORMAT="alpaca_data_<split>.json [{instruction, input, output}] under synthetic/alpaca/", APPROX_SIZE="one instruction per four generated train images (test: per four test images)")
SyntheticLlavaBuilder = declare_builder(__name__, "SyntheticLlavaBuilder", LlavaConversationBuilder, "synthetic_llava", "Synthetic multi-turn conversations in the LLaVA JSON", FORMAT="LLaVA conversation JSON under synthetic/llava/", APPROX_SIZE="one conversation per generated image (default 20k train / 1k test)")


class SyntheticSceneLabelsBuilder(BaseDatasetBuilder):
    """The synthetic scenes' labelled boxes (stage 0 of tiny presets), registered as ``synthetic_scene_labels``.

    Reads the generator's own scene files (``scenes_<split>.jsonl``): the kind and colour of every
    shape and its box, for :class:`minigpt.models.vision_pretrain.VisionPretrain`.
    """

    DATASET_CONFIG_DICT = default_yaml("synthetic_scene_labels")
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


class SyntheticVideoChatBuilder(BaseDatasetBuilder):
    """The synthetic clips (a shape moving or changing colour) in VideoChat-Instruct's layout, as ``synthetic_videochat``.

    Written by ``python -m minigpt.datasets.synthetic --videos`` under ``synthetic/videochat/``; samples
    hold the video processor's ``[T, 3, H, W]`` frames, or with ``features_dir`` each clip's stored embedding.
    """

    DATASET_CONFIG_DICT = default_yaml("synthetic_videochat")
    TASK = "vqa"
    FORMAT = "videochat_instruct_<split>.json [{video, QA: [{i, q, a}]}] + MJPEG mp4 clips under synthetic/videochat/"
    APPROX_SIZE = "one question per generated clip (default 4k train / 400 test)"

    def build_split(self, split: str) -> Dataset:
        from minigpt.datasets.datasets.videochat_datasets import VideoChatDataset

        return self.annotation_dataset(VideoChatDataset, split, samples=self.config.get("samples"))
