"""Registered dataset builders: a ``datasets.<name>`` config block in, ``{split: Dataset}`` out.

Real formats: ``cc_sbu``, ``laion`` (webdataset shards), ``cc_sbu_align``, ``coco_caption``,
``coco_vqa``, ``refcoco``, ``invrefcoco``, ``llava_conversation``. The ``synthetic_*`` builders
read the same formats from the synthetic generator's layout under ``<data_root>/synthetic/``.
"""

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder
from minigpt.datasets.builders.caption_builders import (
    CCSBUAlignBuilder,
    CCSBUBuilder,
    COCOCaptionBuilder,
    LaionBuilder,
    WebDatasetCaptionBuilder,
)
from minigpt.datasets.builders.llava_builders import LlavaConversationBuilder
from minigpt.datasets.builders.refcoco_builders import InvRefCOCOBuilder, RefCOCOBuilder
from minigpt.datasets.builders.synthetic_builders import (
    SyntheticCaptionWdsBuilder,
    SyntheticCCSBUAlignBuilder,
    SyntheticCOCOCaptionBuilder,
    SyntheticInvRefCOCOBuilder,
    SyntheticLlavaBuilder,
    SyntheticRefCOCOBuilder,
    SyntheticVQABuilder,
)
from minigpt.datasets.builders.vqa_builders import COCOVQABuilder

__all__ = [
    "BaseDatasetBuilder",
    "CCSBUAlignBuilder",
    "CCSBUBuilder",
    "COCOCaptionBuilder",
    "COCOVQABuilder",
    "InvRefCOCOBuilder",
    "LaionBuilder",
    "LlavaConversationBuilder",
    "RefCOCOBuilder",
    "SyntheticCCSBUAlignBuilder",
    "SyntheticCOCOCaptionBuilder",
    "SyntheticCaptionWdsBuilder",
    "SyntheticInvRefCOCOBuilder",
    "SyntheticLlavaBuilder",
    "SyntheticRefCOCOBuilder",
    "SyntheticVQABuilder",
    "WebDatasetCaptionBuilder",
]
