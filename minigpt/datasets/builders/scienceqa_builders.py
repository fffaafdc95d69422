"""Builder of ScienceQA training data in LaVIN's ``QCM -> ALE`` format (image and text-only problems)."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, default_yaml
from minigpt.datasets.datasets.scienceqa_datasets import ScienceQADataset


class ScienceQABuilder(BaseDatasetBuilder):
    """ScienceQA's released ``problems.json`` / ``pid_splits.json`` / ``images/``, registered as ``scienceqa``.

    ``build_info.splits`` maps each split this dataset builds to its key in ``pid_splits.json``.
    Problems without an image are text-only samples (``"image": None``); ``image_only`` keeps only
    those with one. Samples carry ``task: scienceqa``, so in-training evaluation scores them with the
    ScienceQA table (NAT/SOC/LAN, TXT/IMG/NO, G1-6/G7-12).
    """

    DATASET_CONFIG_DICT = default_yaml("scienceqa")
    SPLITS_KEY = "splits"
    TASK = "scienceqa"
    FORMAT = ("problems.json {pid: {question, choices, answer, hint, image, lecture, solution, subject, grade}} "
              "+ pid_splits.json {split: [pid]} + images/<split>/<pid>/image.png")
    APPROX_SIZE = "21k problems (12.7k train / 4.2k val / 4.2k test), about half with an image"

    def build_split(self, split: str) -> Dataset:
        vis, text = self.build_processors(split)
        info = self.build_info
        captions = info.get("captions_file")
        return ScienceQADataset(
            self.name(),
            self.path(info.problems_file),
            self.path(info.pid_splits_file),
            str(info.splits[split]),
            vis,
            text,
            self.images_root(),
            captions_path=self.path(captions) if captions else None,
            output_format=str(self.config.output_format),
            image_only=bool(self.config.image_only),
            image_path=str(info.image_path),
            task_tag=self.config.get("task_tag"),
            read_images=self.read_images,
        )
