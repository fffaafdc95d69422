"""Conversation templates, defined once and used by training, evaluation and chat alike.

A preset names its template with the ``template:`` key of its YAML; ``MultimodalLLM.build_inputs``
lays training samples out with it, ``MultimodalLLM.generate`` builds prompts and stops with it, and
:class:`minigpt.models.generation.chat.Chat` holds conversations in it. What the original code used, per preset:

* MiniGPT-4 (Vicuna v0) and TinyGPT-V stages 1-3 train with ``'###Human: {} ###Assistant: '`` and
  end answers with ``###`` -> ``human_assistant``.
* MiniGPT-v2 (Llama-2 chat) trains with ``'[INST] {} [/INST]'`` -> ``llama2_inst``.
* TinyGPT-V stage 4 trains through MiniGPT-v2's code path (``chat_template: True``), so with
  ``'[INST] {} [/INST]'``, but ends answers with ``###`` (``end_sym: "###"``) rather than EOS;
  its released eval config then switches to Phi-2's ``'Instruct: {} /n Output: '`` and its demo to
  ``###Human:``. Here the training template is the one template -> ``tinygptv_inst`` (the Llama-2
  text, stopping on ``###`` as well, so the released stage-4 weights stop where they were taught to).
* ``phi2_instruct`` is Phi-2's own QA format (``Instruct: ...\\nOutput:``), kept for evaluating the
  released TinyGPT-V stage-4 checkpoint the way its authors did; no preset trains with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

# The image slot a user turn carries, as MiniGPT-4 / MiniGPT-v2 / TinyGPT-V write it; the model swaps
# the ``<ImageHere>`` token for the image's embeddings.
IMAGE_PROMPT = "<Img><ImageHere></Img>"


def with_image(text: str) -> str:
    """``text`` with the image slot in front, as the datasets write an instruction about an image."""
    return f"{IMAGE_PROMPT} {text}"


@dataclass(frozen=True)
class ConversationTemplate:
    """How one user turn is wrapped before the model's answer.

    ``user`` holds ``{}`` for the instruction; the answer follows as ``answer_prefix + answer`` and
    ends with the tokenizer's EOS; ``sep`` separates turns in multi-turn prompts. The prompt ends
    without its trailing space and the answer carries it instead, so a byte-level BPE tokenizer
    sees answer words as it saw them in running text (" red", not a lone space then "red"); the
    text is the same as the original templates'. ``stop_strings`` end generation (besides EOS): the
    start of a new turn, or the end marker the original trained answers to end with.
    """

    name: str
    user: str
    sep: str = ""
    stop_strings: Tuple[str, ...] = ()
    answer_prefix: str = " "

    def wrap(self, instruction: str) -> str:
        return self.user.format(instruction)

    def render(self, instructions: Sequence[str], answers: Sequence[str] = (), eos: str = "") -> str:
        """A conversation as one string: each turn wrapped, each given answer followed by ``eos``.

        With one answer fewer than instructions the text ends where the model's next answer starts.
        For reading and logging: the model tokenises the same pieces one by one (``build_inputs``).
        """
        if not len(answers) <= len(instructions) <= len(answers) + 1:
            raise ValueError(
                f"{len(instructions)} instructions need as many answers or one fewer, got {len(answers)}"
            )
        out = []
        for t, instruction in enumerate(instructions):
            out.append((self.sep if t else "") + self.wrap(instruction))
            if t < len(answers):
                out.append(self.answer_prefix + answers[t] + eos)
        return "".join(out)

    def cut_at_stop(self, text: str, stop_strings: Optional[Sequence[str]] = None) -> str:
        """``text`` up to its first stop string (the template's unless given), stripped."""
        stops = self.stop_strings if stop_strings is None else stop_strings
        cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
        return text[:cut].strip()


TEMPLATES: Dict[str, ConversationTemplate] = {
    # MiniGPT-4 (Vicuna v0) and TinyGPT-V stages 1-3
    "human_assistant": ConversationTemplate(
        "human_assistant", "###Human: {} ###Assistant:", sep=" ", stop_strings=("###",)
    ),
    # MiniGPT-v2 (Llama-2 chat)
    "llama2_inst": ConversationTemplate(
        "llama2_inst", "[INST] {} [/INST]", sep=" ", stop_strings=("[INST]",)
    ),
    # TinyGPT-V stage 4: MiniGPT-v2's text, answers ended with '###' in the original training
    "tinygptv_inst": ConversationTemplate(
        "tinygptv_inst", "[INST] {} [/INST]", sep=" ", stop_strings=("###", "[INST]")
    ),
    # Phi-2's QA format (TinyGPT-V's released stage-4 eval config wrote '/n' for the newline)
    "phi2_instruct": ConversationTemplate(
        "phi2_instruct", "Instruct: {}\nOutput:", sep="\n", stop_strings=("Instruct:",)
    ),
    # no wrapping: the instruction is the prompt
    "plain": ConversationTemplate("plain", "{}", sep=" "),
}


def get_template(name: str) -> ConversationTemplate:
    """The template registered as ``name`` in :data:`TEMPLATES`; an unknown name lists the close ones."""
    if name not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(name, TEMPLATES, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown conversation template {name!r}.{hint} Known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
