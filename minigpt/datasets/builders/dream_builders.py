"""Builders of image-creation data (DreamLLM): requests whose answer is ``<dream>`` and the image to draw."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, default_yaml
from minigpt.datasets.datasets.creation_datasets import DrawingRequestDataset


class SyntheticDrawingBuilder(BaseDatasetBuilder):
    """The synthetic drawing requests ("draw a red circle in the top left"), registered as ``synthetic_drawing``."""

    DATASET_CONFIG_DICT = default_yaml("synthetic_drawing")
    TASK = "creation"
    FORMAT = "creation_<split>.json [{image, prompt, answer, colour, kind, quadrant}] + PNG targets under synthetic/creation/"
    APPROX_SIZE = "as many requests as the generator's creation option asks (off by default)"

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(DrawingRequestDataset, split)
