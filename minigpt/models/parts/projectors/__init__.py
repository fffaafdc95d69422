"""Projectors: visual tokens ``[B, N, C_vis]`` -> LLM input embeddings ``[B, N', C_llm]``.

One small file per projector; this package imports them so the registry finds each by name.
"""

from minigpt.models.parts.projectors.concat import ConcatLinearProjector
from minigpt.models.parts.projectors.linear import LinearProjector
from minigpt.models.parts.projectors.mlp import MLPProjector

__all__ = ["ConcatLinearProjector", "LinearProjector", "MLPProjector"]
