"""What the vision encoders built from a released checkpoint share: shape checks, config, loading, freezing.

An encoder subclasses :class:`FreezableEncoder`, names its YAML name in ``PART`` and its accepted
keys in ``CONFIG_KEYS``, builds its layers, then ends ``__init__`` with :meth:`FreezableEncoder._finish_init`
(load ``pretrained``, then freeze and store in the ``precision`` asked for).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from minigpt.models.base_model import building_on_meta, strict_part_kwargs
from minigpt.models.parts.vision_encoders.precision import PrecisionRunner, freeze_and_cast
from minigpt.models.weights.files import LoadReport


def check_vit_shape(part: str, image_size: int, patch_size: int, width: int, num_heads: int) -> None:
    """Refuse, naming ``part``, an image that the patches do not tile or a width the heads do not split."""
    if image_size % patch_size:
        raise ValueError(f"{part}: image_size {image_size} is not a multiple of patch_size {patch_size}")
    if width % num_heads:
        raise ValueError(f"{part}: width {width} is not divisible by num_heads {num_heads}")


class FreezableEncoder(nn.Module):
    """Base of the checkpoint-backed vision encoders (no YAML name of its own).

    Gives a strict ``from_config`` (an unknown key is an error naming it), a ``train()`` that keeps
    a frozen encoder in eval mode (no dropout or dropped paths), and the end of construction.
    """

    PART: str = ""  # the YAML name, used in error messages
    CONFIG_KEYS: Tuple[str, ...] = ()

    frozen: bool
    load_report: Optional[LoadReport]

    @classmethod
    def from_config(cls, cfg: Any) -> Any:
        """Build from a ``vision_encoder:`` YAML block; an unknown key is an error naming it."""
        return cls(**strict_part_kwargs(cfg, cls.CONFIG_KEYS, cls.PART))

    def _finish_init(
        self, freeze: bool, dtype: torch.dtype, precision: str, pretrained: Optional[str] = None
    ) -> None:
        """Load ``pretrained`` (unless building on the meta device), then freeze and cast the weights.

        An encoder given ``pretrained`` here defines ``load_pretrained(path) -> LoadReport``.
        """
        self.frozen = bool(freeze)
        self._run = PrecisionRunner(self)
        self.load_report = None
        if pretrained and not building_on_meta():
            self.load_report = self.load_pretrained(str(pretrained))
        freeze_and_cast(self, self.frozen, dtype, self.PART, precision)

    def train(self, mode: bool = True) -> "FreezableEncoder":
        super().train(mode and not self.frozen)  # a frozen encoder never drops out or drops paths
        return self
