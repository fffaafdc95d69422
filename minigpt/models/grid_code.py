"""The sinusoidal code of a box coordinate on MiniGPT-v2's 0-100 grid, shared by text and vision.

A random-init LLM gives its grid tokens ``<0>`` ... ``<100>`` this code as embeddings
(:func:`minigpt.models.parts.llms.hf_causal_lm.init_grid_embeddings`), and stage 0 of a tiny vision
encoder (:mod:`minigpt.models.vision_pretrain`) teaches every visual token inside a box the same code
of that box's corners. Dot products of two codes peak where the values agree, so finding the token a
written box points at, or writing the box of a token, starts as a linear map between the two.
"""

from __future__ import annotations

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
