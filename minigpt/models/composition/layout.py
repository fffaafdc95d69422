"""PromptLayout: the one routine that lays out (template, turns, media) as LLM inputs.

Training and generation both come through :meth:`PromptLayout.build`: each sample is a list of
turns, each turn an instruction and (in training, or for the earlier turns of a conversation being
continued) an answer. A turn becomes ``template.wrap(instruction)`` (with ``template.sep`` before
every turn but the first), then ``template.answer_prefix + answer`` and the tokenizer's EOS.
Labels are IGNORE_INDEX everywhere but on supervised answers and their EOS. Each media token in the
text (``<ImageHere>``) is one slot that expands to that media item's number of embeddings; a
sample may hold several slots, or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from minigpt.common.constants import IGNORE_INDEX, IMAGE_TOKEN

Turns = Union[str, Sequence[str]]


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
class _Sample:
    pieces: List[int]  # indices into the batch's tokenised pieces
    supervised: List[bool]  # per piece: an answer that carries labels
    answer: List[bool]  # per piece: an answer (gets EOS)


class PromptLayout:
    """Template + tokenizer + length limit, turning batches of turns into token ids and media slots.

    ``media_lengths[i]`` lists how many embeddings each media slot of sample ``i`` expands to, in
    the order the slots appear; an int gives every slot that many. ``truncate`` (training) keeps
    the first ``max_txt_len`` text tokens of a sample and refuses a cut that drops a media slot.
    """

    def __init__(self, tokenizer: Any, template: Any, max_txt_len: int, media_token: str = IMAGE_TOKEN) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.max_txt_len = int(max_txt_len)
        self.media_token = media_token
        self.media_token_id = tokenizer.convert_tokens_to_ids(media_token)
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

    def tokenize(self, texts: Sequence[str]) -> List[List[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def _plan(
        self,
        instructions: Sequence[Turns],
        answers: Optional[Sequence[Turns]],
        history: Optional[Sequence[Optional[Sequence[str]]]],
    ) -> tuple:
        """The text pieces of the batch (tokenised in one call) and each sample's order of them."""
        tpl = self.template
        texts: List[str] = []
        samples: List[_Sample] = []
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
            sample = _Sample([], [], [])
            for t, instruction in enumerate(turns):
                sample.pieces.append(len(texts))
                sample.supervised.append(False)
                sample.answer.append(False)
                texts.append((tpl.sep if t else "") + tpl.wrap(instruction))
                if t < len(said):
                    sample.pieces.append(len(texts))
                    sample.supervised.append(supervised)
                    sample.answer.append(True)
                    texts.append(tpl.answer_prefix + said[t])
            samples.append(sample)
        return texts, samples

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
        texts, plans = self._plan(instructions, answers, history)
        ids_of = self.tokenize(texts)
        seqs, labs, counts = [], [], []
        for i, plan in enumerate(plans):
            ids, lab = list(self.bos_ids), [IGNORE_INDEX] * len(self.bos_ids)
            for k, supervised, is_answer in zip(plan.pieces, plan.supervised, plan.answer):
                piece = ids_of[k] + ([self.eos_token_id] if is_answer else [])
                ids += piece
                lab += piece if supervised else [IGNORE_INDEX] * len(piece)
            n_slots = ids.count(self.media_token_id)
            if truncate and len(ids) > self.max_txt_len:  # keep the start (media, question), cut the tail
                ids, lab = ids[: self.max_txt_len], lab[: self.max_txt_len]
                if ids.count(self.media_token_id) != n_slots:
                    raise ValueError(f"sample {i}: max_txt_len={self.max_txt_len} cuts off a {self.media_token} slot")
            lengths = self._slot_lengths(media_lengths, i, n_slots)
            if n_slots:
                ids, lab = self._expand(ids, lab, lengths)
            seqs.append(ids)
            labs.append(lab)
            counts.append(n_slots)
        return self._pad(seqs, labs, counts, padding_side)

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
