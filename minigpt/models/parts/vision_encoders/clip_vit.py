"""CLIP's vision tower (transformers' ``CLIPVisionModel``) with LLaVA's choice of feature layer.

YAML block (real default: OpenAI CLIP ViT-L/14)::

    vision_encoder:
      name: clip_vit
      pretrained: null           # a local Hugging Face directory (CLIPVisionModel or a whole CLIPModel)
      config: null               # CLIPVisionConfig overrides without `pretrained` (defaults: ViT-L/14)
      image_size: 224            # 224 or 336 (ViT-L/14-336); null = the checkpoint's own
      select_layer: -2           # index into the hidden states (0 = embeddings, -1 = last block)
      drop_cls: true             # return patch tokens only (LLaVA's select_feature "patch")
      precision: fp32            # fp16 | bf16 | fp32: storage of a frozen tower's Linear/Conv weights
      freeze: true

Output: ``[B, (image_size / 14)^2 (+1 with the class token), 1024]`` taken before the tower's
last block when ``select_layer`` is -2, as LLaVA does. Building on the ``meta`` device reads
``config.json`` of ``pretrained`` when it exists (it holds no weights), else uses ``config``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from minigpt.common.hub import resolve_pretrained
from minigpt.common.precision import precision_dtype
from minigpt.models.base_model import building_on_meta
from minigpt.models.parts.vision_encoders.base import FreezableEncoder

logger = logging.getLogger(__name__)

PART = "clip_vit"

# OpenAI CLIP ViT-L/14 vision tower (openai/clip-vit-large-patch14's vision_config).
CLIP_VIT_L14: Dict[str, Any] = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
    image_size=224,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)


def _check_image_size(wanted: Optional[int], actual: int, pretrained: str) -> None:
    if wanted is not None and int(wanted) != actual:
        raise ValueError(
            f"{PART}: image_size {wanted} differs from {actual} of {pretrained}; "
            "set image_size to the checkpoint's (or null)"
        )


class CLIPViTEncoder(FreezableEncoder):
    """CLIP vision tower returning one hidden layer's tokens. YAML name ``clip_vit``."""

    PART = PART
    CONFIG_KEYS = ("pretrained", "config", "image_size", "select_layer", "drop_cls", "precision", "freeze")

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        image_size: Optional[int] = None,
        select_layer: int = -2,
        drop_cls: bool = True,
        precision: str = "fp32",
        freeze: bool = False,
    ) -> None:
        super().__init__()
        dtype = precision_dtype(precision, PART)
        on_meta = building_on_meta()
        # a Hub id (org/name) stands for its files in the local HF cache (minigpt.common.hub)
        pretrained = resolve_pretrained(pretrained, f"{PART}.pretrained", required=not on_meta)
        if pretrained and not on_meta:
            path = os.path.expanduser(str(pretrained))
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{PART}: pretrained directory not found: {pretrained}")
            if config:
                logger.warning(
                    "%s: `config` is ignored because `pretrained` (%s) gives the shapes", PART, pretrained
                )
            try:
                model = CLIPVisionModel.from_pretrained(path, dtype=torch.float32)
            except Exception as exc:  # transformers raises OSError, ValueError or safetensors errors here
                raise RuntimeError(
                    f"{PART}: cannot load a CLIP vision model from {pretrained}: {exc}"
                ) from exc
            _check_image_size(image_size, model.config.image_size, pretrained)
        else:
            meta_cfg = (
                os.path.join(os.path.expanduser(str(pretrained)), "config.json") if pretrained else None
            )
            if meta_cfg and os.path.isfile(meta_cfg):
                # a whole CLIPModel's config nests the tower's under vision_config; from_pretrained unwraps it
                hf_cfg = CLIPVisionConfig.from_pretrained(os.path.dirname(meta_cfg))
                _check_image_size(image_size, hf_cfg.image_size, pretrained)
            else:
                hf_cfg = CLIPVisionConfig(**{**CLIP_VIT_L14, **dict(config or {})})
                if image_size is not None:
                    hf_cfg.image_size = int(image_size)
            model = CLIPVisionModel(hf_cfg)
        self.model = model
        cfg = model.config
        n_states = cfg.num_hidden_layers + 1  # embeddings, then one per block
        if not -n_states <= select_layer < n_states:
            raise ValueError(f"{PART}: select_layer {select_layer} is outside the {n_states} hidden states")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(
                f"{PART}: image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}"
            )
        self.select_layer = int(select_layer)
        self.drop_cls = bool(drop_cls)
        self.image_size = cfg.image_size
        grid = cfg.image_size // cfg.patch_size
        self.num_tokens = grid * grid + (0 if self.drop_cls else 1)
        self._finish_init(freeze, dtype, precision)

    @property
    def out_dim(self) -> int:
        return self.model.config.hidden_size

    def hidden_state(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The tower's hidden state ``index`` (0: the embeddings, -1: the last block), as ``hidden_states[index]``.

        Only the blocks that state depends on run: LLaVA's ``select_layer: -2`` skips the last block
        and the final LayerNorm, which the whole tower's forward computes and throws away. Call it
        inside ``self._run.autocast``.
        """
        m = self.model
        blocks = index % (m.config.num_hidden_layers + 1)
        h = self._run(m.pre_layrnorm, self._run(m.embeddings, x))  # [B, 1 + patches, hidden]
        for block in m.encoder.layers[:blocks]:
            h = self._run(block, h, attention_mask=None)
        return h

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, N, hidden]``: hidden state ``select_layer`` (no CLS if ``drop_cls``)."""
        x = images.float()
        with self._run.autocast(x.device):
            feats = self.hidden_state(x, self.select_layer)
        return feats[:, 1:] if self.drop_cls else feats


class CLIPViTCLSStates(CLIPViTEncoder):
    """CLIP vision tower returning the class token's state after every ``every``-th block. YAML name ``clip_vit_cls``.

    LaVIN's visual input: for ViT-L/14 (24 blocks) and ``every: 4``, the states after blocks 4, 8,
    ..., 24, taken from the residual stream before the tower's final LayerNorm: 6 tokens
    ``[B, 6, 1024]``. Keys as ``clip_vit`` but ``every`` in place of ``select_layer`` / ``drop_cls``.
    """

    PART = "clip_vit_cls"
    CONFIG_KEYS = ("pretrained", "config", "image_size", "every", "precision", "freeze")

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        image_size: Optional[int] = None,
        every: int = 4,
        precision: str = "fp32",
        freeze: bool = False,
    ) -> None:
        super().__init__(pretrained, config, image_size, -1, False, precision, freeze)
        n_blocks = self.model.config.num_hidden_layers
        if not 1 <= int(every) <= n_blocks:
            raise ValueError(f"clip_vit_cls: every must be between 1 and the tower's {n_blocks} blocks, got {every}")
        self.every = int(every)
        self.num_tokens = n_blocks // self.every

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, blocks // every, hidden]``: the class token after every ``every``-th block."""
        return self.cls_and_patches(images)[0]

    def cls_and_patches(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class-token states of :meth:`forward` and the last block's patch tokens ``[B, grid*grid, hidden]``.

        One pass of the tower; stage 0 (``vision_pretrain`` with ``objective: scene+patches``)
        supervises both.
        """
        x = images.float()
        with self._run.autocast(x.device):
            out = self._run(self.model, x, output_hidden_states=True)
        # hidden_states[k] is the residual stream after block k (hidden_states[0]: the embeddings)
        states = out.hidden_states[self.every :: self.every]
        return torch.stack([h[:, 0] for h in states], dim=1), out.hidden_states[-1][:, 1:]
