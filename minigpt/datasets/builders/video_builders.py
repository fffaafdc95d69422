"""Builders of the video instruction sets: Video-ChatGPT's VideoInstruct-100K, VideoChat-Instruct-11K."""

from __future__ import annotations

from typing import Any, Dict, Type

from torch.utils.data import Dataset

from minigpt.common.io import as_list
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.datasets.video_datasets import VideoInstructDataset
from minigpt.datasets.datasets.videochat_datasets import VideoChatDataset


class VideoInstructBuilder(BaseDatasetBuilder):
    """Video question answering / conversation (Video-ChatGPT's VideoInstruct-100K), as ``video_instruct``.

    ``build_info.annotations`` maps each split to VideoInstruct JSON files
    (``[{"video_id", "q", "a"}]``); ``build_info.videos`` is the folder of video files
    (``<video_id>.<ext>``, ``ext`` from ``build_info.video_extensions``). Samples hold the video
    processor's ``[T, 3, H, W]`` frames in ``"image"`` behind the usual image placeholder.
    """

    TASK = "video_conversation"
    FORMAT = "VideoInstruct-100K JSON (video_id, q, a) + ActivityNet video files, decoded with decord"
    APPROX_SIZE = "100k QA pairs / 13k videos"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/video_instruct/defaults.yaml"}

    dataset_cls: Type[VideoInstructDataset] = VideoInstructDataset

    def reader_options(self) -> Dict[str, Any]:
        """The reader's own switches from the config (none for VideoInstruct)."""
        return {}

    def build_split(self, split: str) -> Dataset:
        vis, text = self.build_processors(split)
        return self.dataset_cls(
            self.name(),
            self.split_paths("annotations", split),
            vis,
            text,
            self.path(self.build_info.videos),
            task_tag=self.config.get("task_tag"),
            video_extensions=as_list(self.build_info.video_extensions),
            **self.reader_options(),
        )


class VideoChatInstructBuilder(VideoInstructBuilder):
    """VideoChat-Instruct-11K conversations over WebVid clips, as ``videochat_instruct``.

    ``build_info.annotations`` maps each split to ``videochat_instruct_11k.json``-format files
    (``[{"video", "QA": [{"i", "q", "a"}]}]``); ``build_info.videos`` is the folder of the clips.
    ``samples`` (``conversation``: one sample per conversation; ``question``: one per QA turn),
    ``video_path`` and ``max_turns`` are the reader's switches
    (:class:`~minigpt.datasets.datasets.videochat_datasets.VideoChatDataset`).
    """

    TASK = "video_conversation"
    FORMAT = "VideoChat-Instruct JSON (video, QA: [{i, q, a}]) + WebVid-10M clips, decoded with decord"
    APPROX_SIZE = "7k descriptions + 4k conversations / 8k videos"
    DATASET_CONFIG_DICT = {"default": "configs/datasets/videochat_instruct/defaults.yaml"}

    dataset_cls = VideoChatDataset

    def reader_options(self) -> Dict[str, Any]:
        return {key: self.config.get(key) for key in ("samples", "video_path", "max_turns")}
