"""PromptLayout: the one routine that lays out (template, turns, media) as LLM inputs.

Training and generation both come through :meth:`PromptLayout.build`: each sample is a list of
turns, each turn an instruction and (in training, or for the earlier turns of a conversation being
continued) an answer. A turn becomes ``template.wrap(instruction)`` (``template.system`` before the
first, ``template.sep`` before every other), then ``template.answer_prefix + answer`` and the end
marker. Labels are IGNORE_INDEX everywhere but on supervised answers and their end marker. Each
media token in the text (``<ImageHere>``) is one slot that expands to that media item's number of
embeddings; a sample may hold several slots, or none. A video token (``<VideoHere>``) is a slot too:
the layout treats it as a media slot like any other (:func:`media_kinds` tells the two apart), and the
model fills it with the video's embeddings.

Six switches (model YAML keys) choose between this library's layout and the original code's:

* ``image_markers``: ``special_tokens`` tokenises ``<Img>``, ``</Img>`` and ``<ImageHere>`` as added
  tokens of the vocabulary; ``text`` does what MiniGPT-4 / MiniGPT-v2 / TinyGPT-V do: the text is
  split at ``<ImageHere>``, each segment tokenised on its own (``<Img>`` and ``</Img>`` as ordinary
  text) and the image's embeddings go between the segments. At generation the whole conversation
  is one string before that split, as the original demos render it.
* ``bos``: ``always`` puts the tokenizer's BOS token first; ``first_segment`` does what the
  originals do: training puts the BOS token first (their ``forward``), generation tokenises the
  prompt's first segment with the tokenizer's own special tokens (``add_special_tokens=True``:
  Llama's tokenizer adds BOS, Phi-2's adds nothing); ``none`` adds no BOS.
* ``answer_end``: ``eos`` ends each answer with the EOS token; any other string (the originals'
  ``end_sym``: ``###``, ``\\n``, ``</s>``) is appended to the answer text and tokenised with it.
* ``image_tags``: true writes the image slot as the datasets do, ``<Img><ImageHere></Img>``; false
  drops the tags around the slot, as MiniGPT-4's and TinyGPT-V's stages 1-2 feed the image alone.
* ``max_txt_len_counts``: ``sequence`` keeps the first ``max_txt_len`` text tokens of a training
  sample (BOS, prompt and answer); ``answer`` counts only what follows the first prompt (the answer
  with its end marker, and in a conversation the later turns) and never cuts the prompt, as the
  originals truncate the answer tokens alone.
* ``supervise``: ``all`` puts labels on every answer of a conversation; ``last`` only on its last
  answer, the earlier ones staying in the prompt unlabelled, as MM-LLaMA trains (its completion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from minigpt.common.constants import (
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN,
    MEDIA_SLOT_TOKENS,
    VIDEO_PLACEHOLDER,
    VIDEO_TOKEN,
)

Turns = Union[str, Sequence[str]]

IMAGE_MARKERS = ("special_tokens", "text")
BOS_POLICIES = ("always", "first_segment", "none")
TEXT_BUDGETS = ("sequence", "answer")
SUPERVISED_ANSWERS = ("all", "last")
EOS_END = "eos"  # answer_end value: the EOS token ends an answer
# the id a media slot holds with image_markers=text: no token of any vocabulary (slots are filled
# with media embeddings before the LLM sees them)
TEXT_SLOT_ID = -1


_SLOT_PATTERN = re.compile("|".join(re.escape(t) for t in MEDIA_SLOT_TOKENS))


def media_kinds(text: str) -> List[str]:
    """The kind of each media slot in ``text``, in order: ``"image"`` (``<ImageHere>``) or ``"video"`` (``<VideoHere>``)."""
    return [MEDIA_SLOT_TOKENS[m.group(0)] for m in _SLOT_PATTERN.finditer(text)]


def _choice(value: Any, choices: Tuple[str, ...], key: str) -> str:
    if value not in choices:
        raise ValueError(f"model.{key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def as_turns(x: Turns) -> List[str]:
    """One instruction, or a conversation's instructions, as a list."""
    return [x] if isinstance(x, str) else list(x)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` positions counted from each row's first real token (left padding gets 0).

    Right-padded rows get ``0..T-1`` (the LLM's default), left-padded rows count from their first
    real token, as transformers' ``generate`` does for ``inputs_embeds`` prompts.
    """
    mask = attention_mask.long()
    leading = (mask.cumsum(-1) == 0).sum(-1, keepdim=True)  # [B, 1] pads before the first real token
    steps = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    return (steps - leading).clamp(min=0)


@dataclass
class _Piece:
    text: str
    supervised: bool  # an answer that carries labels
    eos: bool  # followed by the EOS token


class PromptLayout:
    """Template + tokenizer + length limit, turning batches of turns into token ids and media slots.

    ``media_lengths[i]`` lists how many embeddings each media slot of sample ``i`` expands to, in
    the order the slots appear; an int gives every slot that many. ``truncate`` (training) cuts a
    sample to ``max_txt_len`` text tokens as ``max_txt_len_counts`` says and refuses a cut that drops
    a media slot. ``image_markers``, ``bos``, ``answer_end``, ``image_tags``, ``max_txt_len_counts`` and
    ``supervise`` are the switches the module docstring describes.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: Any,
        max_txt_len: int,
        media_token: str = IMAGE_TOKEN,
        image_markers: str = "special_tokens",
        bos: str = "always",
        answer_end: str = EOS_END,
        max_txt_len_counts: str = "sequence",
        image_tags: bool = True,
        supervise: str = "all",
    ) -> None:
        self.tokenizer = tokenizer
        self.supervise = _choice(supervise, SUPERVISED_ANSWERS, "supervise")
        if not isinstance(image_tags, bool):
            raise ValueError(f"model.image_tags must be true or false, got {image_tags!r}")
        self.image_tags = image_tags
        self.template = template
        self.max_txt_len = int(max_txt_len)
        self.media_token = media_token
        self.image_markers = _choice(image_markers, IMAGE_MARKERS, "image_markers")
        self.bos = _choice(bos, BOS_POLICIES, "bos")
        self.max_txt_len_counts = _choice(max_txt_len_counts, TEXT_BUDGETS, "max_txt_len_counts")
        if not isinstance(answer_end, str) or not answer_end:
            raise ValueError(f"model.answer_end must be 'eos' or a non-empty string, got {answer_end!r}")
        self.answer_end = answer_end
        if self.image_markers == "text":
            self.media_token_id = TEXT_SLOT_ID
        else:
            self.media_token_id = tokenizer.convert_tokens_to_ids(media_token)
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

    @staticmethod
    def slot_kinds(instructions: Sequence[Turns], answers: Optional[Sequence[Turns]] = None) -> List[List[str]]:
        """Each sample's media slots in the order ``build`` lays them out, as ``"image"`` / ``"video"``.

        With ``answers`` (training) the slots an answer holds count too, after its instruction's: an
        interleaved document (MMC4) is one answer with its images' slots in it.
        """
        out = []
        for i, inst in enumerate(instructions):
            said = as_turns(answers[i]) if answers is not None else []
            kinds: List[str] = []
            for t, turn in enumerate(as_turns(inst)):
                kinds += media_kinds(turn)
                if t < len(said):
                    kinds += media_kinds(said[t])
            out.append(kinds)
        return out

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = False) -> List[List[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]

    def _answer_piece(self, answer: str, supervised: bool) -> _Piece:
        """An answer and what ends it: the end marker, or for an earlier answer the template's ``history_end``."""
        text = self.template.answer_prefix + answer
        if not supervised and self.template.history_end is not None:
            return _Piece(text + self.template.history_end, False, False)
        if self.answer_end == EOS_END:
            return _Piece(text, supervised, True)
        return _Piece(text + self.answer_end, supervised, False)

    def _plan(
        self,
        instructions: Sequence[Turns],
        answers: Optional[Sequence[Turns]],
        history: Optional[Sequence[Optional[Sequence[str]]]],
    ) -> List[List[_Piece]]:
        """Each sample's text pieces in order: prompts, and answers with their end markers."""
        tpl = self.template
        samples: List[List[_Piece]] = []
        if answers is not None and history is not None:
            raise ValueError("give answers (training) or history (generation), not both")
        if history is not None and len(history) != len(instructions):
            raise ValueError(f"history has {len(history)} entries for {len(instructions)} prompts")
        for i, inst in enumerate(instructions):
            turns = as_turns(inst)
            if answers is not None:
                said, supervised = as_turns(answers[i]), True
                if len(said) != len(turns):
                    raise ValueError(f"sample {i}: {len(turns)} instructions but {len(said)} answers")
            else:
                said, supervised = list((history[i] if history is not None else None) or []), False
                if history is not None and len(said) != len(turns) - 1:
                    raise ValueError(
                        f"prompt {i}: {len(turns)} instructions need the {len(turns) - 1} earlier answers "
                        f"in history, got {len(said)}"
                    )
            pieces: List[_Piece] = []
            for t, instruction in enumerate(turns):
                if not self.image_tags:
                    instruction = instruction.replace(IMAGE_PLACEHOLDER, self.media_token)
                    instruction = instruction.replace(VIDEO_PLACEHOLDER, VIDEO_TOKEN)
                pieces.append(_Piece((tpl.sep if t else tpl.system) + tpl.wrap(instruction), False, False))
                if t < len(said):
                    labelled = supervised and (self.supervise == "all" or t == len(said) - 1)
                    pieces.append(self._answer_piece(said[t], labelled))
            samples.append(pieces)
        return samples

    def _segments(self, pieces: List[_Piece], training: bool) -> List[Tuple[List[str], _Piece]]:
        """Each tokenised unit of a sample: its text segments (split at media slots) and its piece.

        With special tokens every piece is one segment (the media token is in the vocabulary). With
        ``image_markers: text`` a piece is split at the media token; at generation the pieces are
        first joined into one string (an EOS after an earlier answer written as the EOS token's text).
        """
        def slots(text: str) -> str:  # a video slot is laid out as any media slot (its kind: slot_kinds)
            return text.replace(VIDEO_TOKEN, self.media_token)

        if self.image_markers == "special_tokens":
            return [([slots(p.text)], p) for p in pieces]
        if not training:
            eos_text = self.tokenizer.eos_token or ""
            joined = slots("".join(p.text + (eos_text if p.eos else "") for p in pieces))
            return [(joined.split(self.media_token), _Piece(joined, False, False))]
        return [(slots(p.text).split(self.media_token), p) for p in pieces]

    def _tokenize_plans(self, plans: List[List[_Piece]], training: bool) -> List[List[Tuple[List[int], _Piece]]]:
        """Every sample's units as ``(ids with slot ids between segments, piece)``, in two tokenizer calls.

        With ``bos: first_segment`` at generation a sample's first segment is tokenised with the
        tokenizer's own special tokens, as the originals' ``get_context_emb`` does.
        """
        plain: List[str] = []
        special: List[str] = []
        refs: List[List[Tuple[List[Tuple[bool, int]], _Piece]]] = []
        tokenizer_specials = self.bos == "first_segment" and not training
        for pieces in plans:
            units = []
            for u, (segments, piece) in enumerate(self._segments(pieces, training)):
                where = []
                for k, seg in enumerate(segments):
                    first = tokenizer_specials and u == 0 and k == 0
                    bucket = special if first else plain
                    where.append((first, len(bucket)))
                    bucket.append(seg)
                units.append((where, piece))
            refs.append(units)
        ids_plain, ids_special = self.tokenize(plain), self.tokenize(special, add_special_tokens=True)
        out = []
        for units in refs:
            sample = []
            for where, piece in units:
                ids: List[int] = []
                for k, (first, j) in enumerate(where):
                    if k:
                        ids.append(self.media_token_id)
                    ids += ids_special[j] if first else ids_plain[j]
                sample.append((ids, piece))
            out.append(sample)
        return out

    def build(
        self,
        instructions: Sequence[Turns],
        answers: Optional[Sequence[Turns]] = None,
        media_lengths: Union[int, Sequence[Sequence[int]]] = 0,
        padding_side: str = "right",
        history: Optional[Sequence[Optional[Sequence[str]]]] = None,
        truncate: bool = False,
    ) -> Dict[str, Any]:
        """Padded ``input_ids``, ``labels``, ``attention_mask``, ``position_ids`` and the media slots.

        Returns tensors ``[B, T]`` plus ``media_mask`` (True at every media embedding slot),
        ``media_counts`` (``[B]``, slots per sample) and ``has_media`` (``[B]`` bool).
        """
        training = answers is not None
        plans = self._plan(instructions, answers, history)
        units_of = self._tokenize_plans(plans, training)
        lead = self.bos_ids if self.bos == "always" or (self.bos == "first_segment" and training) else []
        seqs, labs, counts = [], [], []
        for i, units in enumerate(units_of):
            ids, lab = list(lead), [IGNORE_INDEX] * len(lead)
            prompt_end = len(ids) + len(units[0][0])  # BOS and the first prompt
            for piece_ids, piece in units:
                piece_ids = piece_ids + ([self.eos_token_id] if piece.eos else [])
                ids += piece_ids
                lab += piece_ids if piece.supervised else [IGNORE_INDEX] * len(piece_ids)
            n_slots = ids.count(self.media_token_id)
            if truncate:
                ids, lab = self._cut(ids, lab, prompt_end, n_slots, i)
            lengths = self._slot_lengths(media_lengths, i, n_slots)
            if n_slots:
                ids, lab = self._expand(ids, lab, lengths)
            seqs.append(ids)
            labs.append(lab)
            counts.append(n_slots)
        return self._pad(seqs, labs, counts, padding_side)

    def _cut(self, ids: List[int], lab: List[int], prompt_end: int, n_slots: int, i: int) -> tuple:
        """A training sample cut to ``max_txt_len`` text tokens, counted as ``max_txt_len_counts`` says."""
        keep = self.max_txt_len if self.max_txt_len_counts == "sequence" else prompt_end + self.max_txt_len
        if len(ids) <= keep:
            return ids, lab
        ids, lab = ids[:keep], lab[:keep]  # keep the start (media, question), cut the tail
        if ids.count(self.media_token_id) != n_slots:
            raise ValueError(f"sample {i}: max_txt_len={self.max_txt_len} cuts off a {self.media_token} slot")
        return ids, lab

    def prompt_text(self, instructions: Sequence[str], history: Sequence[str] = ()) -> str:
        """The prompt ``build`` lays out for ``instructions`` and the earlier answers, as one string.

        The BOS is written as text where the policy puts one (``first_segment``: whatever the
        tokenizer adds to a text, e.g. ``<s>`` for Llama, nothing for Phi-2); for reading and logging.
        """
        pieces = self._plan([list(instructions)], None, [list(history)] if history else None)[0]
        eos_text = self.tokenizer.eos_token or ""
        text = "".join(p.text + (eos_text if p.eos else "") for p in pieces)
        if self.bos == "always" and self.bos_ids:
            return (self.tokenizer.bos_token or "") + text
        if self.bos == "first_segment":
            return self.tokenizer.decode(self.tokenize([""], add_special_tokens=True)[0]) + text
        return text

    def _slot_lengths(self, media_lengths: Union[int, Sequence[Sequence[int]]], i: int, n_slots: int) -> List[int]:
        if isinstance(media_lengths, int):
            return [media_lengths] * n_slots
        lengths = list(media_lengths[i])
        if len(lengths) != n_slots:
            raise ValueError(
                f"sample {i}: {n_slots} {self.media_token} slot(s) in the text but {len(lengths)} media item(s)"
            )
        return lengths

    def _expand(self, ids: List[int], lab: List[int], lengths: List[int]) -> tuple:
        out_ids: List[int] = []
        out_lab: List[int] = []
        slot = 0
        for tok, label in zip(ids, lab):
            if tok == self.media_token_id:
                out_ids += [tok] * lengths[slot]
                out_lab += [IGNORE_INDEX] * lengths[slot]
                slot += 1
            else:
                out_ids.append(tok)
                out_lab.append(label)
        return out_ids, out_lab

    def _pad(self, seqs: List[List[int]], labs: List[List[int]], counts: List[int], side: str) -> Dict[str, Any]:
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        width = max(len(s) for s in seqs)
        b = len(seqs)
        input_ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((b, width), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labs)):
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            input_ids[i, sl] = torch.tensor(s, dtype=torch.long)
            labels[i, sl] = torch.tensor(lab, dtype=torch.long)
            attn[i, sl] = 1
        media_mask = (input_ids == self.media_token_id) & attn.bool()
        media_counts = torch.tensor(counts, dtype=torch.long)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attn,
            "position_ids": position_ids_from_mask(attn),
            "media_mask": media_mask,
            "media_counts": media_counts,
            "has_media": media_counts > 0,
        }
