"""Models: the registered families and the one-call loading API.

``load_model_and_preprocess(name, model_type)`` builds a registered model from its preset YAML
and returns it with the image and text processors its preset names. Wherever a registered name is
accepted, the path of a directory written by :func:`minigpt.models.weights.export.export_model` is too.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from minigpt.common.config.presets import load_model_preset
from minigpt.common.hub import resolve_pretrained
from minigpt.common.registry import registry

__all__ = [
    "export_hf",
    "export_model",
    "load_exported",
    "load_model",
    "load_model_and_preprocess",
    "load_preprocess",
    "model_zoo",
]


def __getattr__(name: str) -> Any:
    # imported on first use, so `python -m minigpt.models.weights.export` does not find its module pre-imported
    if name in ("export_model", "load_exported"):
        from minigpt.models.weights import export

        return getattr(export, name)
    if name == "export_hf":  # the Hugging Face format (minigpt.models.weights.hf_export)
        from minigpt.models.weights.hf_export import export_hf

        return export_hf
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_path(name: str) -> bool:
    """Registered names never hold a path separator; an export directory is named by its path."""
    return os.path.isdir(name) or os.sep in name or "/" in name or name.startswith(".")


def _preset_config(name: str, model_type: Optional[str]) -> Tuple[Any, DictConfig]:
    model_cls = registry.get_model_class(name)
    model_type = model_type or model_cls.DEFAULT_MODEL_TYPE
    # presets may inherit (`base:`); minigpt.common.config reads them for load_model and the config alike
    cfg = OmegaConf.create(load_model_preset(model_cls.default_config_path(model_type)))
    return model_cls, cfg


def load_model(
    name: str,
    model_type: Optional[str] = None,
    is_eval: bool = False,
    device: str = "cpu",
    checkpoint: Optional[str] = None,
    **overrides: Any,
):
    """Build model ``name`` at preset ``model_type``; ``device="meta"`` builds shapes only.

    ``overrides`` are dotted keys merged over the preset (``llm.lora_r=8`` style keys as kwargs
    with ``__`` for dots is awkward, so pass a dict: ``overrides={"llm": {"lora_r": 8}}``);
    ``overrides={"scale": "toy"}`` builds the preset's toy-width twin (:mod:`minigpt.common.config.toy`).
    ``name`` may instead be the path of an export directory (see :mod:`minigpt.models.weights.export`),
    or the Hub id of one (``org/name``, see :mod:`minigpt.common.hub`), which fixes the model type:
    ``model_type`` must then be None.
    """
    if _is_path(str(name)):
        from minigpt.models.weights.export import load_exported

        if model_type is not None:
            raise ValueError(f"{name} is an export directory, which fixes its model type; pass model_type=None")
        extra = overrides.pop("overrides", None)
        if overrides:
            raise TypeError(f"load_model got unexpected arguments {sorted(overrides)}")
        # an export pushed to the Hub (org/name) is read from the local HF cache (minigpt.common.hub)
        path = resolve_pretrained(str(name), "load_model(name)")
        return load_exported(path, is_eval=is_eval, device=device, checkpoint=checkpoint, overrides=extra)
    model_cls, cfg = _preset_config(name, model_type)
    extra = overrides.pop("overrides", None)
    if extra:
        from minigpt.common.config.sections import swap_parts
        from minigpt.common.config.toy import SCALE_KEY, check_scale, toy_twin

        preset = OmegaConf.to_container(cfg)
        swap_parts(preset, extra)  # a part block naming another part replaces the preset's, as in a config file
        if SCALE_KEY in extra and check_scale(extra[SCALE_KEY], "load_model overrides") == "toy":
            preset = toy_twin(preset)  # the preset's toy-width twin, as model.scale=toy in a config file
        cfg = OmegaConf.merge(OmegaConf.create(preset), OmegaConf.create(extra))
    if overrides:
        raise TypeError(f"load_model got unexpected arguments {sorted(overrides)}")
    if checkpoint is not None:
        cfg.ckpt = checkpoint
    if device == "meta":
        import torch

        with torch.device("meta"):
            cfg.ckpt = None
            model = model_cls.from_config(cfg)
        return model
    model = model_cls.from_config(cfg)
    if is_eval:
        model.eval()
    return model.to(device)


def load_preprocess(cfg: DictConfig) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Image and text processors named by a model config's ``preprocess`` block."""
    vis, txt = {}, {}
    pre = cfg.get("preprocess") or {}
    for split in ("train", "eval"):
        v = (pre.get("vis_processor") or {}).get(split)
        if v is not None:
            vis[split] = registry.get_processor_class(v.name).from_config(v)
        t = (pre.get("text_processor") or {}).get(split)
        if t is not None:
            txt[split] = registry.get_processor_class(t.name).from_config(t)
    return vis, txt


def load_model_and_preprocess(name: str, model_type: Optional[str] = None, **load_kwargs: Any):
    """Return ``(model, vis_processors, txt_processors)``; processors are dicts keyed train/eval.

    ``name`` is a registered model name or the path of an export directory (then ``model_type`` is None);
    ``load_kwargs`` are :func:`load_model`'s (``is_eval``, ``device``, ``checkpoint``, ``overrides``).
    """
    model = load_model(name, model_type, **load_kwargs)
    vis, txt = load_preprocess(model.cfg)
    return model, vis, txt


class _ModelZoo:
    """``print(model_zoo)`` lists every registered model with its preset types."""

    def __str__(self) -> str:
        rows = []
        for name in registry.list_models():
            cls = registry.get_model_class(name)
            types = ", ".join(getattr(cls, "PRETRAINED_MODEL_CONFIG_DICT", {}).keys())
            rows.append(f"{name:<14} {types}")
        return "Architectures  Types\n" + "\n".join(rows)

    def __iter__(self):
        for name in registry.list_models():
            cls = registry.get_model_class(name)
            yield name, list(getattr(cls, "PRETRAINED_MODEL_CONFIG_DICT", {}).keys())


model_zoo = _ModelZoo()
