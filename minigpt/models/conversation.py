"""Conversation templates, defined once and used by training, evaluation and chat alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class ConversationTemplate:
    """How one user turn is wrapped before the model's answer.

    ``user`` holds ``{}`` for the instruction; the answer follows as ``answer_prefix + answer`` and
    ends with the tokenizer's EOS; ``sep`` separates turns in multi-turn prompts. The prompt ends
    without its trailing space and the answer carries it instead, so a byte-level BPE tokenizer
    sees answer words as it saw them in running text (" red", not a lone space then "red"); the
    text is the same as the original templates'.
    """

    name: str
    user: str
    sep: str = ""
    stop_strings: tuple = ()
    answer_prefix: str = " "

    def wrap(self, instruction: str) -> str:
        return self.user.format(instruction)


TEMPLATES: Dict[str, ConversationTemplate] = {
    # MiniGPT-4 (Vicuna) and TinyGPT-V stages 1-3
    "human_assistant": ConversationTemplate(
        "human_assistant", "###Human: {} ###Assistant:", sep=" ", stop_strings=("###",)
    ),
    # MiniGPT-v2 (Llama-2 chat) and TinyGPT-V stage 4
    "llama2_inst": ConversationTemplate("llama2_inst", "[INST] {} [/INST]", sep=" ", stop_strings=("[INST]",)),
    # no wrapping: the instruction is the prompt
    "plain": ConversationTemplate("plain", "{}", sep=" "),
}


def get_template(name: str) -> ConversationTemplate:
    if name not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(name, TEMPLATES, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown conversation template {name!r}.{hint} Known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
