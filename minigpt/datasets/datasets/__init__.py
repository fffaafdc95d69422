"""Dataset readers for the real on-disk formats; each yields the one sample schema.

See :mod:`minigpt.datasets.datasets.base_dataset` for the schema and
:mod:`minigpt.common.io` for file access and the errors raised.
"""

from minigpt.common.io import DatasetError, MissingDataError, path_manager
from minigpt.datasets.datasets.base_dataset import (
    IMAGE_PLACEHOLDER,
    BaseDataset,
    box_to_grid_text,
    load_prompts,
    make_instruction,
    most_frequent,
    pick,
)
from minigpt.datasets.datasets.caption_datasets import (
    CaptionDataset,
    CaptionWebDataset,
    CCSBUAlignDataset,
    COCOCaptionDataset,
)
from minigpt.datasets.datasets.llava_datasets import LlavaConversationDataset
from minigpt.datasets.datasets.refcoco_datasets import InvRefCOCODataset, RefCOCODataset
from minigpt.datasets.datasets.vqa_datasets import VQADataset

__all__ = [
    "IMAGE_PLACEHOLDER",
    "BaseDataset",
    "CaptionDataset",
    "CaptionWebDataset",
    "CCSBUAlignDataset",
    "COCOCaptionDataset",
    "DatasetError",
    "InvRefCOCODataset",
    "LlavaConversationDataset",
    "MissingDataError",
    "RefCOCODataset",
    "VQADataset",
    "box_to_grid_text",
    "load_prompts",
    "make_instruction",
    "most_frequent",
    "path_manager",
    "pick",
]
