"""Builders of the referring-expression datasets (refs pickle + COCO instances)."""

from __future__ import annotations

import os
from typing import List

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.io import as_list
from minigpt.datasets.datasets.refcoco_datasets import InvRefCOCODataset, RefCOCODataset


@registry.register_builder("refcoco")
class RefCOCOBuilder(BaseDatasetBuilder):
    """RefCOCO expression -> box (``[refer]``), registered as ``refcoco``.

    ``build_info.annotation_dir`` holds ``refs_file`` (``refs(unc).p``; ``refs(umd).p`` for
    RefCOCOg) and ``instances_file``; ``build_info.splits`` maps each of our splits to the
    refer-file splits it reads (``train: [train]``, ``test: [val]``).
    """

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
        )


@registry.register_builder("invrefcoco")
class InvRefCOCOBuilder(RefCOCOBuilder):
    """RefCOCO box -> expression (``[identify]``), registered as ``invrefcoco``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/invrefcoco/defaults.yaml"}
    dataset_cls = InvRefCOCODataset
