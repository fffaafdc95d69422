"""The sinusoidal code of a box coordinate on MiniGPT-v2's 0-100 grid, shared by text and vision.

A random-init LLM gives its grid tokens ``<0>`` ... ``<100>`` this code as embeddings
(:func:`minigpt.models.parts.llms.hf_causal_lm.init_grid_embeddings`), and stage 0 of a tiny vision
encoder (:mod:`minigpt.models.vision_pretrain`) teaches every visual token inside a box the same code
of that box's corners. Dot products of two codes peak where the values agree, so finding the token a
written box points at, or writing the box of a token, starts as a linear map between the two.

:func:`word_codes` does the same for words: a fixed orthogonal code per kind and colour word of the
synthetic world, the start of those words' LLM embeddings (``llm.word_code_init``) and the target of
stage 0's word-code head (``word_code_loss_weight``). Both are off in the shipped configs.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

MIN_CYCLES, MAX_CYCLES = 0.5, 8.0  # periods of the slowest and fastest component over the whole grid


def grid_value_code(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """``[..., dim]`` sin/cos code of ``pos`` (values in 0..1, any shape), geometric frequencies.

    The first ``dim // 2`` columns are sines, the next ones cosines, of ``dim // 2`` frequencies from
    ``MIN_CYCLES`` to ``MAX_CYCLES`` periods over 0..1; an odd ``dim`` leaves its last column zero.
    """
    if dim < 2:
        raise ValueError(f"grid_value_code: dim must be at least 2, got {dim}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=pos.device)
    cycles = MIN_CYCLES * (MAX_CYCLES / MIN_CYCLES) ** (k / max(1, half - 1))
    angles = 2.0 * torch.pi * cycles * pos.float()[..., None]
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if code.shape[-1] < dim:
        code = torch.nn.functional.pad(code, (0, dim - code.shape[-1]))
    return code


def synthetic_words() -> Dict[str, Tuple[str, ...]]:
    """The synthetic world's vocabulary by field: ``{"kind": KINDS, "colour": COLOURS}``, read from the generator."""
    from minigpt.datasets.synthetic.scenes import COLOURS, KINDS

    return {"kind": tuple(KINDS), "colour": tuple(COLOURS)}


def word_codes(dim: int, seed: int = 0, words: Sequence[str] | None = None) -> Dict[str, torch.Tensor]:
    """A fixed code ``[dim]`` per word: rows of a seeded random orthogonal matrix, ``sqrt(dim / 2)`` long.

    ``words`` defaults to the synthetic world's kind and colour words (:func:`synthetic_words`), in the
    generator's order, so the LLM's word embeddings (:func:`~minigpt.models.parts.llms.hf_causal_lm.init_word_embeddings`)
    and stage 0's word-code head (:mod:`minigpt.models.vision_pretrain`) get the same vectors. Codes of
    different words are orthogonal, so the sum of a kind's and a colour's code reads back either by a dot
    product. Each component has variance about 0.5, as the box code's sines and cosines.
    """
    if words is None:
        words = [w for field in synthetic_words().values() for w in field]
    words = list(dict.fromkeys(str(w) for w in words))
    if dim < len(words):
        raise ValueError(f"word_codes: dim {dim} is less than the {len(words)} words it must keep orthogonal")
    gen = torch.Generator().manual_seed(int(seed))
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
    rows = q[: len(words)] * (dim / 2) ** 0.5
    return {w: rows[i].clone() for i, w in enumerate(words)}
