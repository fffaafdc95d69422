"""LaVIN: mixture-of-modality adaptation of a frozen LLM and a frozen CLIP tower (docs/lavin.md).

:mod:`~minigpt.models.lavin.mma` holds the mixture-of-modality adapter (YAML adapter ``mma``),
:mod:`~minigpt.models.lavin.model` the model with its modality token (YAML arch ``lavin``).
"""
