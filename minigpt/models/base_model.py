"""The base every registered model family derives from."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strict_part_kwargs(cfg: Any, accepted: Sequence[str], part: str) -> Dict[str, Any]:
    """A part's YAML block as constructor kwargs (``name`` dropped); a key not in ``accepted`` is an error naming it."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    kwargs = {k: v for k, v in dict(cfg).items() if k != "name"}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{part}: unknown config key(s) {unknown}; accepted keys: {', '.join(accepted)}")
    return kwargs


def building_on_meta() -> bool:
    """True inside ``with torch.device("meta")``: parts build shapes only and must not read weight files."""
    return torch.empty(0).device.type == "meta"


class BaseModel(nn.Module):
    """A model built from config: ``from_config(cfg)`` plus one preset YAML per ``model_type``.

    ``PRETRAINED_MODEL_CONFIG_DICT`` maps each model_type to a package-relative YAML whose
    top-level key is ``model:``.
    """

    PRETRAINED_MODEL_CONFIG_DICT: Dict[str, str] = {}
    DEFAULT_MODEL_TYPE: str = "tiny"

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        if model_type not in cls.PRETRAINED_MODEL_CONFIG_DICT:
            known = ", ".join(cls.PRETRAINED_MODEL_CONFIG_DICT) or "(none)"
            raise KeyError(
                f"{cls.__name__} has no model_type {model_type!r}; available: {known}"
            )
        return os.path.join(_PACKAGE_DIR, cls.PRETRAINED_MODEL_CONFIG_DICT[model_type])

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
