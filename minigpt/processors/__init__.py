"""Image and text processors: what turns a decoded image or a raw string into model input.

Registered names: ``image_train``, ``image_eval`` (:mod:`minigpt.processors.image`) and
``caption_text`` (:mod:`minigpt.processors.text`). Each is built from its YAML block with
``registry.get_processor_class(name).from_config(cfg)``. Attributes are imported on first use so
that importing this package does not pull in torchvision.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseProcessor": "minigpt.processors.base",
    "ImageTrainProcessor": "minigpt.processors.image",
    "ImageEvalProcessor": "minigpt.processors.image",
    "CLIP_MEAN": "minigpt.processors.image",
    "CLIP_STD": "minigpt.processors.image",
    "CaptionTextProcessor": "minigpt.processors.text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
