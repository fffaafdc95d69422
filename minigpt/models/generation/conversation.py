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

The released-checkpoint presets (``released_*.yaml``) answer through the conversations of the original
demos, character for character, trailing space included:

* ``vicuna0_chat``: MiniGPT-4's ``CONV_VISION_Vicuna0`` (MiniGPT-4's ``demo.py``, and TinyGPT-V's
  ``demo.py`` for stages 1-3): its system text, ``###`` separators, ``Human: `` / ``Assistant: `` roles.
* ``tinygptv_eval_chat``: TinyGPT-V's eval scripts (its own ``CONV_VISION_minigptv2``): the same roles and
  separators as ``vicuna0_chat`` without the system text.
* ``minigptv2_chat``: MiniGPT-v2's ``demo_v2.py`` conversation (and its eval scripts'
  ``CONV_VISION_minigptv2``), used by TinyGPT-V's ``demo_v2.py`` for stage 4 too: ``<s>[INST] `` and
  `` [/INST]`` written as text, nothing between turns.

MM-LLaMA (Llama-2 chat, ImageBind embeddings) trains and answers with ``llama2_chat``: Meta's Llama-2
chat format, each turn ``<s>[INST] {question} <<IMG>>{media}<</IMG>> [/INST] {answer} </s>``, the media
slot after the question and wrapped in ``<<IMG>>``/``<</IMG>>`` (a video in ``<<VID>>``/``<</VID>>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from minigpt.common.constants import (
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN,
    VIDEO_PLACEHOLDER,
    WHOLE_VIDEO_PLACEHOLDER,
)

# The image slot a user turn carries, as MiniGPT-4 / MiniGPT-v2 / TinyGPT-V write it; the model swaps
# the ``<ImageHere>`` token for the image's embeddings.
IMAGE_PROMPT = "<Img><ImageHere></Img>"

# The system text of MiniGPT-4's demo conversation (CONV_VISION_Vicuna0), which TinyGPT-V's demo keeps.
VICUNA0_SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. "
    "You will be able to see the image once I provide it to you. Please answer my questions."
)


def with_image(text: str) -> str:
    """``text`` with the image slot in front, as the datasets write an instruction about an image."""
    return f"{IMAGE_PROMPT} {text}"


def with_video(text: str) -> str:
    """``text`` with the video slot in front, as the video datasets write an instruction about a video."""
    return f"{VIDEO_PLACEHOLDER} {text}"


@dataclass(frozen=True)
class ConversationTemplate:
    """How one user turn is wrapped before the model's answer.

    ``user`` holds ``{}`` for the instruction; the answer follows as ``answer_prefix + answer`` and
    ends with the tokenizer's EOS; ``sep`` separates turns in multi-turn prompts. The prompt ends
    without its trailing space and the answer carries it instead, so a byte-level BPE tokenizer
    sees answer words as it saw them in running text (" red", not a lone space then "red"); the
    text is the same as the original templates'. ``stop_strings`` end generation (besides EOS and
    the model's end marker): the start of a new turn, or the end marker the original trained answers
    to end with. ``system`` comes before the first turn. ``history_end`` is what follows an earlier
    answer inside a prompt where the original conversation writes something else there than the end
    marker answers are trained with (None: the end marker). ``media_wraps`` rewrites each media slot
    as the datasets write it (``<Img><ImageHere></Img>``, a video's ``<Vid><ImageHere></Vid>``) into
    the template's own markers, ``(written, rewritten)`` pairs; with ``media_last`` the slots leave
    their place in the instruction and follow its text, in order, after one space.
    """

    name: str
    user: str
    sep: str = ""
    stop_strings: Tuple[str, ...] = ()
    answer_prefix: str = " "
    system: str = ""
    history_end: Optional[str] = None
    media_wraps: Tuple[Tuple[str, str], ...] = ()
    media_last: bool = False

    def place_media(self, instruction: str) -> str:
        """``instruction`` with its media slots written in this template's markers and place."""
        if not (self.media_wraps or self.media_last) or IMAGE_TOKEN not in instruction:
            return instruction
        slots = [(written, rewritten) for written, rewritten in self.media_wraps if written in instruction]
        if not self.media_last:
            for written, rewritten in slots:
                instruction = instruction.replace(written, rewritten)
            return instruction
        # each slot in the order it appears: a wrapped form, else the bare token
        forms = dict(slots)
        found = []
        rest = instruction
        while IMAGE_TOKEN in rest:
            hits = [(rest.find(w), w) for w in forms if w in rest] + [(rest.find(IMAGE_TOKEN), IMAGE_TOKEN)]
            pos, written = min(hits, key=lambda h: (h[0], -len(h[1])))
            found.append(forms.get(written, written))
            end = pos + len(written)
            end += rest[end : end + 1] == " "  # the space that followed the slot goes with it
            rest = rest[:pos] + rest[end:]
        return " ".join([rest.strip()] + found).strip()

    def wrap(self, instruction: str) -> str:
        return self.user.format(self.place_media(instruction))

    def render(self, instructions: Sequence[str], answers: Sequence[str] = (), eos: str = "") -> str:
        """A conversation as one string: each turn wrapped, each given answer followed by ``eos``
        (or the template's ``history_end``).

        With one answer fewer than instructions the text ends where the model's next answer starts.
        For reading and logging: the model tokenises the same pieces one by one (``build_inputs``).
        """
        if not len(answers) <= len(instructions) <= len(answers) + 1:
            raise ValueError(
                f"{len(instructions)} instructions need as many answers or one fewer, got {len(answers)}"
            )
        out = [self.system]
        for t, instruction in enumerate(instructions):
            out.append((self.sep if t else "") + self.wrap(instruction))
            if t < len(answers):
                out.append(self.answer_prefix + answers[t] + (eos if self.history_end is None else self.history_end))
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
    # MiniGPT-4's CONV_VISION_Vicuna0 (its demo, TinyGPT-V's stage 1-3 demo): system + '###', then
    # 'Human: <question>###Assistant: ' with the trailing space; an answer ends with '###'
    "vicuna0_chat": ConversationTemplate(
        "vicuna0_chat",
        "Human: {}###Assistant: ",
        stop_strings=("###",),
        answer_prefix="",
        system=VICUNA0_SYSTEM + "###",
    ),
    # TinyGPT-V's eval scripts (its CONV_VISION_minigptv2): vicuna0_chat without the system text,
    # '###Human: <question>###Assistant: '
    "tinygptv_eval_chat": ConversationTemplate(
        "tinygptv_eval_chat", "Human: {}###Assistant: ", stop_strings=("###",), answer_prefix="", system="###"
    ),
    # MiniGPT-v2's demo_v2.py / eval scripts (TinyGPT-V's stage-4 demo_v2.py): '<s>[INST] <question> [/INST]',
    # '<s>' as text; an earlier answer is followed directly by the next turn
    "minigptv2_chat": ConversationTemplate(
        "minigptv2_chat", "<s>[INST] {} [/INST]", answer_prefix="", history_end=""
    ),
    # MM-LLaMA: Llama-2 chat, a BOS before every turn, the media after the question in <<IMG>> / <<VID>> tags
    "llama2_chat": ConversationTemplate(
        "llama2_chat",
        "[INST] {} [/INST]",
        sep="<s>",
        stop_strings=("[INST]",),
        media_wraps=(
            (IMAGE_PLACEHOLDER, f"<<IMG>>{IMAGE_TOKEN}<</IMG>>"),
            (WHOLE_VIDEO_PLACEHOLDER, f"<<VID>>{IMAGE_TOKEN}<</VID>>"),
        ),
        media_last=True,
    ),
    # no wrapping: the instruction is the prompt
    "plain": ConversationTemplate("plain", "{}", sep=" "),
    # no wrapping and no space before the answer: MiniGPT-4 / TinyGPT-V stages 1-2 ('[image] caption')
    "bare": ConversationTemplate("bare", "{}", sep=" ", answer_prefix=""),
}


def get_template(name: str) -> ConversationTemplate:
    """The template registered as ``name`` in :data:`TEMPLATES`; an unknown name lists the close ones."""
    if name not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(name, TEMPLATES, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown conversation template {name!r}.{hint} Known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
