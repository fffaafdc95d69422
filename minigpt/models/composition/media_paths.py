"""Media chains beside a model's pixel chain: ``model.media_paths``.

A model's ``vision_encoder -> projector`` is its pixel chain: images and video frames go through it.
``model.media_paths`` adds chains for other kinds of media item, each its own encoder -> projector
with its own trainable set, so one batch may mix kinds. The one kind today is ``features``: stored
encoder outputs (``python -m minigpt.features extract``, read with a dataset's ``features_dir``),
items of shape ``[C]`` or ``[N, C]`` (see :mod:`minigpt.models.composition.media`)::

    model:
      media_paths:
        features:
          vision_encoder: {name: precomputed, dim: 1024, tokens: 1}
          projector: {name: linear, bias: false, dropout: 0.1}

Its parameters are ``media_paths.features.vision_encoder.*`` / ``media_paths.features.projector.*``;
they are saved with the rest of what trains, and ``MultimodalLLM.save_media_path("features", dir)``
writes them alone.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry

MEDIA_PATH_KINDS = ("features",)  # the item kinds a chain may be added for
MEDIA_PATH_KEYS = ("vision_encoder", "projector")


class MediaPath(nn.Module):
    """One encoder -> projector chain of ``model.media_paths`` (the encoder frozen with ``freeze: true``)."""

    def __init__(self, vision_encoder: nn.Module, projector: nn.Module, freeze_vision: bool = False,
                 freeze_projector: bool = False) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.projector = projector
        self.freeze_vision = bool(freeze_vision)
        for part, frozen in ((vision_encoder, freeze_vision), (projector, freeze_projector)):
            if frozen:
                for p in part.parameters():
                    p.requires_grad_(False)

    def num_tokens(self) -> int:
        """LLM embeddings one item fills its slot with."""
        return self.projector.num_output_tokens(self.vision_encoder.num_tokens)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``[F, C]`` / ``[F, N, C]`` stored features -> ``[F, tokens, llm_hidden]``."""
        if self.freeze_vision:
            with torch.no_grad():
                feats = self.vision_encoder(items)
        else:
            feats = self.vision_encoder(items)
        return self.projector(feats)


def _plain(cfg: Any) -> Dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_media_paths(cfg: Optional[Mapping[str, Any]], llm_hidden: int) -> nn.ModuleDict:
    """The chains ``model.media_paths`` asks for (an empty ``ModuleDict`` for null)."""
    paths = nn.ModuleDict()
    if not cfg:
        return paths
    if not isinstance(cfg, Mapping):
        raise ValueError(f"model.media_paths must be a mapping of kind -> {{vision_encoder, projector}}, got {cfg!r}")
    for kind, block in cfg.items():
        where = f"model.media_paths.{kind}"
        if kind not in MEDIA_PATH_KINDS:
            raise ValueError(f"{where}: unknown media kind; model.media_paths takes {', '.join(MEDIA_PATH_KINDS)}")
        if not isinstance(block, Mapping) or any(k not in block for k in MEDIA_PATH_KEYS):
            raise ValueError(f"{where} needs a vision_encoder block and a projector block, got {block!r}")
        extra = sorted(str(k) for k in block if k not in MEDIA_PATH_KEYS)
        if extra:
            raise ValueError(f"{where}: unknown key {extra[0]!r}; a media path takes {', '.join(MEDIA_PATH_KEYS)}")
        venc_cfg, proj_cfg = _plain(block["vision_encoder"]), _plain(block["projector"])
        for key, part in (("vision_encoder", venc_cfg), ("projector", proj_cfg)):
            if "name" not in part:
                raise ValueError(f"{where}.{key} must name a registered part (name: ...)")
        venc_cls = registry.get_vision_encoder_class(venc_cfg["name"])
        if not getattr(venc_cls, "takes_features", False):
            raise ValueError(
                f"{where}.vision_encoder: the features path reads stored features, so its encoder must take "
                f"them (e.g. precomputed); {venc_cfg['name']!r} reads pixels (that is model.vision_encoder's job)"
            )
        venc = venc_cls.from_config(OmegaConf.create(venc_cfg))
        kwargs = {k: v for k, v in proj_cfg.items() if k not in ("name", "freeze")}
        proj = registry.get_projector_class(proj_cfg["name"])(in_dim=venc.out_dim, out_dim=llm_hidden, **kwargs)
        paths[kind] = MediaPath(venc, proj, bool(venc_cfg.get("freeze", False)), bool(proj_cfg.get("freeze", False)))
    return paths
