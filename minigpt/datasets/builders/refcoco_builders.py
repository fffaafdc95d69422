"""Builders of the referring-expression datasets (refs pickle + COCO instances).

RefCOCO, RefCOCO+ and RefCOCOg share one reader and one builder; the registered names differ
only in their default YAML (which refer folder and pickle, which splits) and in the direction
of the task: ``refcoco*`` ask for the box of an expression (``[refer]``), ``invrefcoco*`` for
the expression of a box (``[identify]``).
"""

from __future__ import annotations

import os
from typing import List

from torch.utils.data import Dataset

from minigpt.common.io import as_list
from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.refcoco_datasets import InvRefCOCODataset, RefCOCODataset

_REFER_FORMAT = "refer toolkit: {refs} + instances.json, COCO train2014 images"


@registry.register_builder("refcoco")
class RefCOCOBuilder(BaseDatasetBuilder):
    """RefCOCO expression -> box (``[refer]``), registered as ``refcoco``.

    ``build_info.annotation_dir`` holds ``refs_file`` (``refs(unc).p``; ``refs(umd).p`` for
    RefCOCOg) and ``instances_file``; ``build_info.splits`` maps each of our splits to the
    refer-file splits it reads (``train: [train]``, ``test: [val]``). ``sentence_key`` picks the
    refer sentence text (``raw`` as typed, ``sent`` lower-cased and tokenised).
    """

    TASK = "refer"
    FORMAT = _REFER_FORMAT.format(refs="refs(unc).p")
    APPROX_SIZE = "142k expressions / 50k objects / 20k images"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/refcoco/defaults.yaml"}
    dataset_cls = RefCOCODataset

    def splits(self) -> List[str]:
        return [str(s) for s in (self.build_info.get("splits") or {}).keys()]

    def build_split(self, split: str) -> Dataset:
        vis, text = self.build_processors(split)
        info = self.build_info
        return self.dataset_cls(
            self.name(),
            self.path(os.path.join(info.annotation_dir, info.refs_file)),
            self.path(os.path.join(info.annotation_dir, info.instances_file)),
            as_list(info.splits[split]),
            vis,
            text,
            self.images_root(),
            task_tag=self.config.get("task_tag"),
            read_images=self.read_images,
            prompts=self.prompts(slot=True),
            # YAMLs written before the key existed read the toolkit's `sent`
            sentence_key=self.config.get("sentence_key", "sent"),
        )


@registry.register_builder("invrefcoco")
class InvRefCOCOBuilder(RefCOCOBuilder):
    """RefCOCO box -> expression (``[identify]``), registered as ``invrefcoco``."""

    TASK = "identify"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/invrefcoco/defaults.yaml"}
    dataset_cls = InvRefCOCODataset


@registry.register_builder("refcocop")
class RefCOCOPlusBuilder(RefCOCOBuilder):
    """RefCOCO+ expression -> box (``[refer]``; no location words), registered as ``refcocop``.

    Same layout as RefCOCO (``refcoco+/refs(unc).p``, splits train, val, testA, testB); its
    expressions were collected without words of absolute location ("left", "top").
    """

    APPROX_SIZE = "142k expressions / 50k objects / 20k images"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/refcocop/defaults.yaml"}


@registry.register_builder("invrefcocop")
class InvRefCOCOPlusBuilder(RefCOCOPlusBuilder):
    """RefCOCO+ box -> expression (``[identify]``), registered as ``invrefcocop``."""

    TASK = "identify"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/invrefcocop/defaults.yaml"}
    dataset_cls = InvRefCOCODataset


@registry.register_builder("refcocog")
class RefCOCOgBuilder(RefCOCOBuilder):
    """RefCOCOg expression -> box (``[refer]``; longer expressions), registered as ``refcocog``.

    Reads the UMD split (``refcocog/refs(umd).p``: train, val, test), as MiniGPT-v2 does; the
    Google split (``refs(google).p``: train, val) reads the same way with ``refs_file`` changed.
    """

    FORMAT = _REFER_FORMAT.format(refs="refs(umd).p")
    APPROX_SIZE = "95k expressions / 50k objects / 26k images (UMD split)"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/refcocog/defaults.yaml"}


@registry.register_builder("invrefcocog")
class InvRefCOCOgBuilder(RefCOCOgBuilder):
    """RefCOCOg box -> expression (``[identify]``), registered as ``invrefcocog``."""

    TASK = "identify"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/invrefcocog/defaults.yaml"}
    dataset_cls = InvRefCOCODataset
