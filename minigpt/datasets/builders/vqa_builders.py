"""Builders of the VQA datasets: VQAv2, OK-VQA, A-OKVQA, GQA (LAVIS / official JSON) and OCR-VQA."""

from __future__ import annotations

from typing import List

from torch.utils.data import Dataset

from minigpt.common.io import DatasetError, as_list
from minigpt.common.registry import registry
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.vqa_datasets import (
    OCRVQA_SPLIT_CODES,
    AOKVQADataset,
    GQADataset,
    OCRVQADataset,
    VQADataset,
)


class _VQABuilder(BaseDatasetBuilder):
    """A VQA reader over ``build_info.annotations.<split>`` with ``{}`` prompt templates."""

    dataset_cls: type = VQADataset

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(self.dataset_cls, split, prompts=self.prompts(slot=True))


@registry.register_builder("coco_vqa")
class COCOVQABuilder(_VQABuilder):
    """VQAv2 on COCO images (LAVIS's ``vqa_train.json`` / ``vqa_val_eval.json``), registered as ``coco_vqa``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco_vqa/defaults.yaml"}
    TASK = "vqa"
    FORMAT = "LAVIS VQA JSON [{question_id, question, answer: [...], image}] + COCO 2014 images"
    APPROX_SIZE = "443k train QA / 83k images; 214k val QA / 41k images"


@registry.register_builder("okvqa")
class OKVQABuilder(_VQABuilder):
    """OK-VQA, questions needing outside knowledge, on COCO 2014 images; registered as ``okvqa``.

    LAVIS's ``okvqa_train.json`` / ``okvqa_val_eval.json`` have VQAv2's layout (ten answers per
    question), so the VQAv2 reader reads them.
    """

    DATASET_CONFIG_DICT = {"default": "configs/datasets/okvqa/defaults.yaml"}
    TASK = "vqa"
    FORMAT = "LAVIS VQA JSON [{question_id, question, answer: [10], image}] + COCO 2014 images"
    APPROX_SIZE = "9k train QA / 9k images; 5k val QA"


@registry.register_builder("aokvqa")
class AOKVQABuilder(_VQABuilder):
    """A-OKVQA, commonsense and world-knowledge questions on COCO images; registered as ``aokvqa``."""

    DATASET_CONFIG_DICT = {"default": "configs/datasets/aokvqa/defaults.yaml"}
    dataset_cls = AOKVQADataset
    TASK = "vqa"
    FORMAT = "A-OKVQA JSON [{question_id, question, direct_answers: [10], choices, image | image_id+split}]"
    APPROX_SIZE = "17k train QA; 1.1k val QA (COCO images)"


@registry.register_builder("gqa")
class GQABuilder(_VQABuilder):
    """GQA balanced questions on Visual Genome images (compositional reasoning); registered as ``gqa``.

    Reads LAVIS's list (what MiniGPT-v2 trains on) or the official object keyed by question id.
    """

    DATASET_CONFIG_DICT = {"default": "configs/datasets/gqa/defaults.yaml"}
    dataset_cls = GQADataset
    TASK = "vqa"
    FORMAT = (
        "GQA balanced questions JSON (LAVIS list or official {qid: {imageId, question, answer}}) + images"
    )
    APPROX_SIZE = "943k train QA / 72k images; 12.6k test-dev QA"


@registry.register_builder("ocrvqa")
class OCRVQABuilder(BaseDatasetBuilder):
    """OCR-VQA, questions about the text on book covers; registered as ``ocrvqa``.

    ``build_info.annotation_file`` is OCR-VQA's single ``dataset.json``; ``build_info.splits``
    maps each of our splits to the file's split codes it reads (1 train, 2 val, 3 test).
    """

    DATASET_CONFIG_DICT = {"default": "configs/datasets/ocrvqa/defaults.yaml"}
    TASK = "vqa"
    FORMAT = "OCR-VQA dataset.json {image_key: {imageURL, questions, answers, split}} + cover images"
    APPROX_SIZE = "800k train QA / 166k images (1M QA / 207k images in all)"

    def splits(self) -> List[str]:
        return [str(s) for s in (self.build_info.get("splits") or {}).keys()]

    def build_split(self, split: str) -> Dataset:
        codes = as_list(self.build_info.splits[split])
        unknown = [c for c in codes if c not in OCRVQA_SPLIT_CODES]
        if unknown or not codes:
            raise DatasetError(
                f"datasets.{self.name()}.build_info.splits.{split}: {codes!r} must list split codes out of "
                f"{', '.join(f'{c} ({n})' for c, n in OCRVQA_SPLIT_CODES.items())}"
            )
        vis, text = self.build_processors(split)
        return OCRVQADataset(
            self.name(),
            [self.path(self.build_info.annotation_file)],
            vis,
            text,
            self.images_root(),
            task_tag=self.config.get("task_tag"),
            read_images=self.read_images,
            prompts=self.prompts(slot=True),
            split_codes=codes,
        )
