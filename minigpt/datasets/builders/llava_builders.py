"""Builders of LLaVA's instruction data: LLaVA-Instruct-150K (whole, or its three parts) and the CC3M-595K chat."""

from __future__ import annotations

from torch.utils.data import Dataset

from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder, default_yaml
from minigpt.datasets.datasets.llava_datasets import LlavaConversationDataset

_SINGLE_TURN = "LLaVA JSON ({file}: one human/gpt pair per image) + COCO 2017 train images"


class LlavaConversationBuilder(BaseDatasetBuilder):
    """LLaVA-Instruct multi-turn conversations on COCO images, registered as ``llava_conversation``."""

    DATASET_CONFIG_DICT = default_yaml("llava_conversation")
    TASK = "conversation"
    FORMAT = "LLaVA JSON [{id, image, conversations: [{from: human|gpt, value}]}] + COCO 2017 train images"
    APPROX_SIZE = "58k multi-turn conversations"
    single_turn = False

    def build_split(self, split: str) -> Dataset:
        return self.annotation_dataset(LlavaConversationDataset, split, single_turn=self.single_turn)


LlavaDetailBuilder = declare_builder(__name__, "LlavaDetailBuilder", LlavaConversationBuilder, "llava_detail", "LLaVA-Instruct detailed image descriptions (``detail_23k.json``)", FORMAT=_SINGLE_TURN.format(file="detail_23k.json"), APPROX_SIZE="23k descriptions", single_turn=True)
LlavaReasonBuilder = declare_builder(__name__, "LlavaReasonBuilder", LlavaConversationBuilder, "llava_reason", "LLaVA-Instruct complex reasoning questions (``complex_reasoning_77k.json``)", FORMAT=_SINGLE_TURN.format(file="complex_reasoning_77k.json"), APPROX_SIZE="77k question-answer pairs", single_turn=True)
LlavaInstruct150KBuilder = declare_builder(__name__, "LlavaInstruct150KBuilder", LlavaConversationBuilder, "llava_instruct_150k", "LLaVA-Instruct-150K whole (``llava_instruct_150k.json``: conversations, descriptions and reasoning in one file)", FORMAT="LLaVA JSON [{id, image, conversations}] (llava_instruct_150k.json) + COCO 2017 train images", APPROX_SIZE="158k conversations")
LlavaCC3MBuilder = declare_builder(__name__, "LlavaCC3MBuilder", LlavaConversationBuilder, "llava_cc3m", "LLaVA-CC3M-Pretrain-595K (``chat.json``: one caption request and its CC3M caption per image)", FORMAT="LLaVA JSON [{id, image, conversations}] (chat.json, one human/gpt pair) + images.zip's CC3M images", APPROX_SIZE="595k image-caption chats", single_turn=True)
