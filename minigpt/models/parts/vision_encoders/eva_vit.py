"""EVA-CLIP's ViT-g/14 as BLIP-2, MiniGPT-4 and TinyGPT-V use it, on timm's EVA implementation.

YAML block (every key but ``name`` has the real ViT-g default shown)::

    vision_encoder:
      name: eva_vit_g
      image_size: 224            # 224 or 448; a checkpoint's position grid is resized to fit
      patch_size: 14
      width: 1408
      depth: 39                  # EVA-CLIP's 40 blocks minus the last, as LAVIS uses it
      num_heads: 16
      mlp_ratio: 4.3637          # or mlp_dim: 6144 (wins when given)
      pretrained: null           # EVA-CLIP weights in LAVIS's eva_vit_g.pth layout (.pth or .safetensors)
      precision: fp32            # fp16 | bf16 | fp32: storage of a frozen encoder's Linear/Conv weights
      drop_path_rate: 0.0
      use_grad_checkpoint: false
      drop_cls: false            # true: patch tokens only (MiniGPT-v2 drops the class token)
      ln_vision: false           # true: MiniGPT-v2's ln_vision, LayerNorm over the output (weight 1, bias 0)
      freeze: false

By default the features are those of the last kept block, with the class token first and no
final norm: ``[B, 1 + (image_size / 14)^2, 1408]`` (257 tokens at 224 px, 1025 at 448 px). BLIP-2,
MiniGPT-4 and TinyGPT-V apply BLIP-2's trained ``ln_vision`` afterwards; it lives in the
``qformer_linear`` projector here, because it is loaded from BLIP-2's checkpoint. MiniGPT-v2 has
no Q-Former: set ``ln_vision: true`` and ``drop_cls: true`` for its 1024 normalised patch tokens
at 448 px, which ``concat_linear`` merges 4 at a time.

With ``precision: fp16`` or ``bf16`` a frozen encoder stores its Linear/Conv weights in half
precision; on an accelerator the forward runs under autocast in that dtype, and on a CPU it
computes in float32 from the stored weights (see :mod:`minigpt.models.parts.vision_encoders.precision`).
"""

from __future__ import annotations

import logging
import math
import re
from functools import partial
from typing import Dict, Optional

import torch
from timm.layers import LayerNorm, resample_abs_pos_embed
from timm.models.eva import Eva
from torch.utils.checkpoint import checkpoint

from minigpt.common.hub import resolve_pretrained
from minigpt.common.precision import precision_dtype
from minigpt.models.parts.vision_encoders.base import FreezableEncoder, check_vit_shape
from minigpt.models.parts.vision_encoders.precision import (
    FP32LayerNorm,
)
from minigpt.models.weights.files import KeyMapping, LoadReport, load_converted, read_state_dict, strip_prefix

logger = logging.getLogger(__name__)

PART = "eva_vit_g"

_BLOCK = r"blocks\.(\d+)\."

# EVA-CLIP / LAVIS key -> timm Eva key. The two layouts agree name for name for ViT-g (timm's
# EVA keeps BEiT's q_bias/v_bias); the table is explicit so that any key outside it is reported.
_EVA_RULES = (
    (r"cls_token", "cls_token"),
    (r"pos_embed", "pos_embed"),
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (_BLOCK + r"norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (_BLOCK + r"attn\.qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    (_BLOCK + r"attn\.([qv])_bias", r"blocks.\1.attn.\2_bias"),
    (_BLOCK + r"attn\.proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_BLOCK + r"mlp\.fc([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3"),
)
# Parts of the full EVA-CLIP vision tower that the features BLIP-2 uses never pass through.
_EVA_IGNORED = (r"norm\.(weight|bias)", r"fc_norm\.(weight|bias)", r"head\.(weight|bias)")

# Larger checkpoints that hold the ViT under a prefix: EVA-CLIP's full CLIP model, BLIP-2/MiniGPT-4.
_EVA_PREFIXES = ("visual.", "visual_encoder.")


def eva_vit_key_mapping(depth: int) -> KeyMapping:
    """The explicit EVA-CLIP -> timm key mapping for a ViT of ``depth`` blocks.

    Keys of blocks at or beyond ``depth`` (EVA-CLIP's 40th block, which LAVIS drops) are known
    and left out without a warning.
    """

    def block_rule(template: str):
        def repl(m: re.Match) -> Optional[str]:
            return m.expand(template) if int(m.group(1)) < depth else None

        return repl

    rules = [(p, block_rule(r) if p.startswith(_BLOCK) else r) for p, r in _EVA_RULES]
    return KeyMapping(rules=rules, ignore=_EVA_IGNORED)


def convert_eva_vit_state_dict(state: Dict[str, torch.Tensor], depth: int = 39):
    """Rename an EVA-CLIP ViT-g state dict (LAVIS ``eva_vit_g.pth`` layout) onto the timm names used here.

    Also accepts files holding the ViT under ``visual.`` (EVA-CLIP's CLIP model) or
    ``visual_encoder.`` (BLIP-2, MiniGPT-4); keys outside that prefix are reported as ignored.
    Returns a :class:`~minigpt.models.weights.files.ConvertedState`.
    """
    outside = []
    if not any(k.startswith("blocks.") for k in state):
        state, outside = strip_prefix(state, _EVA_PREFIXES)
    converted = eva_vit_key_mapping(depth).convert(state)
    converted.ignored.extend(outside)
    return converted


class EVAViTEncoder(FreezableEncoder):
    """EVA-CLIP ViT-g/14 (timm's ``Eva``) returning all tokens of its last block. YAML name ``eva_vit_g``.

    The defaults are the published ViT-g shapes as LAVIS builds them: width 1408, 39 of EVA-CLIP's
    40 blocks, 16 heads, MLP 6144, patch 14, q/v biases, class token, absolute position embedding,
    LayerNorm eps 1e-6, no final norm. ``pretrained`` loads LAVIS's ``eva_vit_g.pth`` through an
    explicit key mapping; the report of the load is kept in ``self.load_report``.
    """

    PART = PART
    CONFIG_KEYS = (
        "image_size",
        "patch_size",
        "width",
        "depth",
        "num_heads",
        "mlp_ratio",
        "mlp_dim",
        "pretrained",
        "precision",
        "drop_path_rate",
        "use_grad_checkpoint",
        "drop_cls",
        "ln_vision",
        "freeze",
    )

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        width: int = 1408,
        depth: int = 39,
        num_heads: int = 16,
        mlp_ratio: float = 4.3637,
        mlp_dim: Optional[int] = None,
        pretrained: Optional[str] = None,
        precision: str = "fp32",
        drop_path_rate: float = 0.0,
        use_grad_checkpoint: bool = False,
        drop_cls: bool = False,
        ln_vision: bool = False,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        check_vit_shape(PART, image_size, patch_size, width, num_heads)
        dtype = precision_dtype(precision, PART)
        # timm sizes the MLP as int(width * ratio); half a unit of slack makes int() land on mlp_dim exactly
        ratio = (mlp_dim + 0.5) / width if mlp_dim else mlp_ratio
        self.vit = Eva(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=width,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=ratio,
            qkv_bias=True,
            qkv_fused=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(LayerNorm, eps=1e-6),
            class_token=True,
            use_abs_pos_emb=True,
            num_classes=0,
            global_pool="",
            use_post_transformer_norm=False,
            use_fc_norm=False,
        )
        self.image_size, self.patch_size, self.width, self.depth = image_size, patch_size, width, depth
        self.grid = image_size // patch_size
        self.drop_cls = bool(drop_cls)
        self.num_tokens = self.grid * self.grid + (0 if self.drop_cls else 1)
        # eps 1e-5 (torch's default), as the ln_vision of LAVIS / MiniGPT-4's Blip2Base
        self.ln_vision = FP32LayerNorm(width) if ln_vision else None
        self.use_grad_checkpoint = bool(use_grad_checkpoint)
        self._finish_init(freeze, dtype, precision, pretrained)

    @property
    def out_dim(self) -> int:
        return self.width

    # -- weights ---------------------------------------------------------------------------------
    def load_pretrained(self, path: str) -> LoadReport:
        """Load EVA-CLIP weights in LAVIS's ``eva_vit_g.pth`` layout; returns (and logs) the key report."""
        path = resolve_pretrained(path, f"vision_encoder.pretrained ({PART})", kind="file")  # or a Hub file id
        state = read_state_dict(path, PART)
        converted = convert_eva_vit_state_dict(state, self.depth)
        pos = converted.tensors.get("pos_embed")
        if pos is not None:
            converted.tensors["pos_embed"] = self._fit_pos_embed(pos, path)
        return load_converted(self.vit, converted, path, PART)

    def _fit_pos_embed(self, pos: torch.Tensor, path: str) -> torch.Tensor:
        """Resize a checkpoint's ``[1, 1 + g*g, C]`` position table to this grid (bicubic, as LAVIS does)."""
        n_ckpt = pos.shape[-2] - 1
        old = math.isqrt(n_ckpt)
        if pos.ndim != 3 or old * old != n_ckpt:
            raise ValueError(
                f"{PART}: {path}: pos_embed of shape {tuple(pos.shape)} is not a class token "
                "plus a square grid"
            )
        if old == self.grid:
            return pos
        logger.info(
            "%s: resizing pos_embed of %s from %dx%d to %dx%d", PART, path, old, old, self.grid, self.grid
        )
        return resample_abs_pos_embed(
            pos.float(),
            new_size=(self.grid, self.grid),
            old_size=(old, old),
            num_prefix_tokens=1,
            interpolation="bicubic",
            antialias=False,
        )

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 1 + (H/14)*(W/14), width]`` (class token first unless ``drop_cls``)."""
        vit, run = self.vit, self._run
        x = images.float()
        with run.autocast(x.device):
            x = run(vit.patch_embed, x)  # [B, g*g, C]
            # class token and position table are float32, so (as in LAVIS under autocast) the
            # residual stream is float32 even when the matmuls run in half precision
            cls = vit.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x.to(cls.dtype)], dim=1) + vit.pos_embed  # [B, 1 + g*g, C]
            x = vit.pos_drop(x)
            for blk in vit.blocks:
                if self.use_grad_checkpoint and self.training and torch.is_grad_enabled():
                    x = checkpoint(run, blk, x, use_reentrant=False)
                else:
                    x = run(blk, x)
        if self.ln_vision is not None:
            x = self.ln_vision(x)
        return x[:, 1:] if self.drop_cls else x
