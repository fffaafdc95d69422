"""Builder of the VQA datasets in LAVIS's VQA JSON."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.vqa_datasets import VQADataset


@registry.register_builder("coco_vqa")
class COCOVQABuilder(BaseDatasetBuilder):
    """VQAv2 on COCO images (LAVIS's ``vqa_train.json`` / ``vqa_val_eval.json``), registered as ``coco_vqa``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco_vqa/defaults.yaml"}

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(VQADataset, split, prompts=self.prompts(slot=True))
