"""Builders of the VQA datasets: VQAv2, OK-VQA, A-OKVQA, GQA (LAVIS / official JSON) and OCR-VQA."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.common.io import DatasetError, as_list
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder, default_yaml
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
    TASK = "vqa"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(
            self.dataset_cls, split, prompts=self.prompts(slot=True), image_last=bool(self.config.image_last)
        )


COCOVQABuilder = declare_builder(__name__, "COCOVQABuilder", _VQABuilder, "coco_vqa", "VQAv2 on COCO images (LAVIS's ``vqa_train.json`` / ``vqa_val_eval.json``)", FORMAT="LAVIS VQA JSON [{question_id, question, answer: [...], image}] + COCO 2014 images", APPROX_SIZE="443k train QA / 83k images; 214k val QA / 41k images")
# LAVIS's okvqa_train.json / okvqa_val_eval.json have VQAv2's layout (ten answers a question): VQAv2's reader.
OKVQABuilder = declare_builder(__name__, "OKVQABuilder", _VQABuilder, "okvqa", "OK-VQA, questions needing outside knowledge, on COCO 2014 images", FORMAT="LAVIS VQA JSON [{question_id, question, answer: [10], image}] + COCO 2014 images", APPROX_SIZE="9k train QA / 9k images; 5k val QA")
AOKVQABuilder = declare_builder(__name__, "AOKVQABuilder", _VQABuilder, "aokvqa", "A-OKVQA, commonsense and world-knowledge questions on COCO images", dataset_cls=AOKVQADataset, FORMAT="A-OKVQA JSON [{question_id, question, direct_answers: [10], choices, image | image_id+split}]", APPROX_SIZE="17k train QA; 1.1k val QA (COCO images)")
# Reads LAVIS's list (what MiniGPT-v2 trains on) or the official object keyed by question id.
GQABuilder = declare_builder(__name__, "GQABuilder", _VQABuilder, "gqa", "GQA balanced questions on Visual Genome images (compositional reasoning)", dataset_cls=GQADataset, FORMAT="GQA balanced questions JSON (LAVIS list or official {qid: {imageId, question, answer}}) + images", APPROX_SIZE="943k train QA / 72k images; 12.6k test-dev QA")


class OCRVQABuilder(BaseDatasetBuilder):
    """OCR-VQA, questions about the text on book covers; registered as ``ocrvqa``.

    ``build_info.annotation_file`` is OCR-VQA's single ``dataset.json``; ``build_info.splits``
    maps each of our splits to the file's split codes it reads (1 train, 2 val, 3 test).
    """

    DATASET_CONFIG_DICT = default_yaml("ocrvqa")
    SPLITS_KEY = "splits"
    TASK = "vqa"
    FORMAT = "OCR-VQA dataset.json {image_key: {imageURL, questions, answers, split}} + cover images"
    APPROX_SIZE = "800k train QA / 166k images (1M QA / 207k images in all)"

    def build_split(self, split: str) -> Dataset:
        codes = as_list(self.build_info.splits[split])
        unknown = [c for c in codes if c not in OCRVQA_SPLIT_CODES]
        if unknown or not codes:
            raise DatasetError(
                f"datasets.{self.name()}.build_info.splits.{split}: {codes!r} must list split codes out of "
                f"{', '.join(f'{c} ({n})' for c, n in OCRVQA_SPLIT_CODES.items())}"
            )
        return self.annotation_dataset(
            OCRVQADataset,
            split,
            [self.path(self.build_info.annotation_file)],
            prompts=self.prompts(slot=True),
            split_codes=codes,
        )
