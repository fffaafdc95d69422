"""Builders of the text-only instruction datasets (no image is ever read)."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, default_yaml
from minigpt.datasets.datasets.text_datasets import AlpacaDataset, UnnaturalInstructionDataset


class UnnaturalInstructionBuilder(BaseDatasetBuilder):
    """Unnatural Instructions, text-only instruction following; registered as ``unnatural_instruction``.

    Mixed into MiniGPT-v2's and TinyGPT-V's last stage so the LLM keeps following plain-text
    instructions. ``data_type`` must stay ``text``: the samples have ``"image": None``.
    """

    DATASET_CONFIG_DICT = {"default": "configs/datasets/unnatural_instruction/defaults.yaml"}
    TASK = "text_instruction"
    FORMAT = "JSON list or JSONL [{instances: [{instruction_with_input, constraints, output}]}], text only"
    APPROX_SIZE = "up to 68k instructions (the core set; MiniGPT-v2's filtered copy drops the longest)"

    def build_split(self, split: str) -> Dataset:
        if self.read_images:
            raise ValueError(f"datasets.{self.name()}.data_type must be 'text': this dataset has no images")
        _, text = self.build_processors(split)
        return UnnaturalInstructionDataset(
            self.name(),
            self.split_paths("annotations", split),
            text_processor=text,
            task_tag=self.config.get("task_tag"),
        )


class AlpacaBuilder(BaseDatasetBuilder):
    """Stanford Alpaca's 52k text-only instructions in LaVIN's wording, registered as ``alpaca``.

    LaVIN mixes them with image instructions so the LLM keeps following plain text. ``data_type``
    must stay ``text``: the samples have ``"image": None``.
    """

    DATASET_CONFIG_DICT = default_yaml("alpaca")
    TASK = "text_instruction"
    FORMAT = "alpaca_data.json [{instruction, input, output}] (a JSON list; .jsonl also reads), text only"
    APPROX_SIZE = "52k instructions"

    def build_split(self, split: str) -> Dataset:
        if self.read_images:
            raise ValueError(f"datasets.{self.name()}.data_type must be 'text': this dataset has no images")
        _, text = self.build_processors(split)
        return AlpacaDataset(
            self.name(),
            self.split_paths("annotations", split),
            text_processor=text,
            task_tag=self.config.get("task_tag"),
        )
