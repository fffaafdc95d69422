"""ImageBind's vision branch (ViT-H/14 with a 2-frame temporal patch embedding) on timm's ViT blocks.

YAML block (every key but ``name`` has the published ImageBind-Huge default shown)::

    vision_encoder:
      name: imagebind_vit
      image_size: 224
      patch_size: 14
      frames: 2                  # temporal patch size: an image is repeated to 2 frames, a clip gives 2 frames
      width: 1280
      depth: 32
      num_heads: 16
      mlp_ratio: 4.0
      out_dim: 1024              # the joint embedding space
      normalize: true            # ImageBind L2-normalises each embedding (its vision postprocessor)
      pretrained: null           # the released imagebind_huge.pth (.pth or .safetensors); only vision keys are read
      precision: fp32            # fp16 | bf16 | fp32: storage of a frozen encoder's Linear/Conv weights
      freeze: true

ImageBind-Huge's vision branch (``imagebind_huge()`` in facebookresearch/ImageBind,
``imagebind/models/imagebind_model.py``): a bias-free ``Conv3d(3 -> 1280, kernel = stride = (2, 14, 14))``
patch embedding, a class token and a learned position table of ``1 + 16 * 16`` rows, a LayerNorm
before the blocks, 32 pre-norm blocks (width 1280, 16 heads, MLP 5120, GELU, LayerNorm eps 1e-6),
then the head: LayerNorm, the class token, ``Linear(1280 -> 1024, bias=False)``, L2 normalisation.
632,829,440 parameters (counted from the released code's shapes, as the 632,829,440 entries of
``imagebind_huge.pth``'s vision keys; the ImageBind paper rounds the image encoder to 630M).

Input: images ``[B, 3, H, W]`` (repeated to 2 frames, ImageBind's ``PadIm2Video``), one clip
``[B, 3, T, H, W]``, or ImageBind's video protocol ``[B, S, 3, T, H, W]`` (S = 5 clips x 3 spatial crops
from the ``video_imagebind`` processor): each of the S views is embedded and the embeddings are averaged.
Output: one token a media item, ``[B, 1, out_dim]``.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Optional

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import nn

from minigpt.common.precision import precision_dtype
from minigpt.models.base_model import building_on_meta
from minigpt.models.parts.vision_encoders.base import FreezableEncoder, check_vit_shape
from minigpt.models.weights.files import KeyMapping, LoadReport, load_converted, read_state_dict

PART = "imagebind_vit"

_PRE = "modality_preprocessors.vision."
_TRUNK = "modality_trunks.vision."
_HEAD = "modality_heads.vision."
_BLOCK = re.escape(_TRUNK) + r"blocks\.(\d+)\."

# imagebind_huge.pth key (vision branch) -> this encoder's key. ImageBind's blocks hold a torch
# nn.MultiheadAttention, whose in_proj packs q, k, v row-wise exactly as timm's fused qkv Linear does.
_IMAGEBIND_RULES = (
    (re.escape(_PRE) + r"cls_token", "cls_token"),
    (re.escape(_PRE) + r"rgbt_stem\.proj\.1\.weight", "patch_embed.weight"),
    (re.escape(_PRE) + r"pos_embedding_helper\.pos_embed", "pos_embed"),
    (re.escape(_TRUNK) + r"pre_transformer_layer\.0\.(weight|bias)", r"norm_pre.\1"),
    (_BLOCK + r"attn\.in_proj_(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (_BLOCK + r"attn\.out_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_BLOCK + r"norm_([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (_BLOCK + r"mlp\.fc([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3"),
    (re.escape(_HEAD) + r"0\.(weight|bias)", r"head_norm.\1"),
    (re.escape(_HEAD) + r"2\.weight", "head.weight"),
)
# the other modalities of the joint model (text, audio, depth, thermal, IMU) are known and left out
_IMAGEBIND_OTHERS = (
    r"modality_(preprocessors|trunks|heads|postprocessors)\.(text|audio|depth|thermal|imu)\..*",
)


def imagebind_key_mapping() -> KeyMapping:
    """The explicit ``imagebind_huge.pth`` -> :class:`ImageBindViTEncoder` key mapping (vision keys only)."""
    return KeyMapping(rules=_IMAGEBIND_RULES, ignore=_IMAGEBIND_OTHERS)


class ImageBindViTEncoder(FreezableEncoder):
    """ImageBind's vision encoder: one L2-normalised 1024-d embedding per image or video. YAML name ``imagebind_vit``.

    Built from timm's ViT ``Block`` (pre-norm attention + GELU MLP); the defaults are ImageBind-Huge's
    published shapes. ``pretrained`` loads the released ``imagebind_huge.pth`` through
    :func:`imagebind_key_mapping`; the load report is kept in ``self.load_report``.
    """

    PART = PART
    CONFIG_KEYS = (
        "image_size",
        "patch_size",
        "frames",
        "width",
        "depth",
        "num_heads",
        "mlp_ratio",
        "out_dim",
        "normalize",
        "pretrained",
        "precision",
        "freeze",
    )

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        frames: int = 2,
        width: int = 1280,
        depth: int = 32,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        out_dim: int = 1024,
        normalize: bool = True,
        pretrained: Optional[str] = None,
        precision: str = "fp32",
        freeze: bool = False,
    ) -> None:
        super().__init__()
        check_vit_shape(PART, image_size, patch_size, width, num_heads)
        if int(frames) < 1:
            raise ValueError(f"{PART}: frames must be at least 1, got {frames}")
        dtype = precision_dtype(precision, PART)
        self.image_size, self.patch_size, self.frames = int(image_size), int(patch_size), int(frames)
        self.width, self.depth, self._out_dim = int(width), int(depth), int(out_dim)
        self.normalize = bool(normalize)
        self.grid = self.image_size // self.patch_size
        kernel = (self.frames, self.patch_size, self.patch_size)
        self.patch_embed = nn.Conv3d(3, width, kernel_size=kernel, stride=kernel, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, width))
        norm = partial(LayerNorm, eps=1e-6)
        self.norm_pre = norm(width)
        self.blocks = nn.Sequential(
            *[
                Block(width, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm, act_layer=nn.GELU)
                for _ in range(depth)
            ]
        )
        self.head_norm = norm(width)
        self.head = nn.Linear(width, out_dim, bias=False)
        if not building_on_meta():
            nn.init.normal_(self.cls_token, std=width**-0.5)
            nn.init.normal_(self.pos_embed, std=width**-0.5)
        self.num_tokens = 1
        self._finish_init(freeze, dtype, precision, pretrained)

    @property
    def out_dim(self) -> int:
        return self._out_dim

    def load_pretrained(self, path: str) -> LoadReport:
        """Load the vision branch of the released ``imagebind_huge.pth``; returns (and logs) the key report."""
        state = read_state_dict(path, PART)
        return load_converted(self, imagebind_key_mapping().convert(state), path, PART)

    # -- forward ----------------------------------------------------------------------------------
    def _as_clips(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` or ``[N, 3, T, H, W]`` -> ``[N, 3, frames, H, W]`` (an image repeated in time)."""
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1 and self.frames > 1:
            x = x.expand(-1, -1, self.frames, -1, -1)
        if x.shape[1] != 3 or x.shape[2] != self.frames:
            raise ValueError(
                f"{PART}: a clip is [3, {self.frames}, H, W] (an image [3, H, W]), got {list(x.shape[1:])}"
            )
        return x

    def embed_views(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, (T,) H, W]`` -> ``[N, out_dim]``: one embedding a view (normalised if ``normalize``)."""
        run = self._run
        x = self._as_clips(x.float())
        with run.autocast(x.device):
            tokens = run(self.patch_embed, x).flatten(2).transpose(1, 2)  # [N, g*g, C]
            cls = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens.to(cls.dtype)], dim=1) + self.pos_embed  # [N, 1 + g*g, C]
            tokens = run(self.norm_pre, tokens)
            for blk in self.blocks:
                tokens = run(blk, tokens)
            emb = run(self.head, run(self.head_norm, tokens)[:, 0])  # the class token: [N, out_dim]
        emb = emb.float()
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]``, clips ``[B, 3, T, H, W]`` or videos ``[B, S, 3, T, H, W]`` -> ``[B, 1, out_dim]``.

        A video's S views (ImageBind's protocol: 5 clips x 3 spatial crops) are embedded one by one
        and their embeddings averaged, as ImageBind reduces its multi-clip inputs.
        """
        if media.dim() == 6:
            b, s = media.shape[:2]
            emb = self.embed_views(media.reshape(b * s, *media.shape[2:])).reshape(b, s, -1).mean(dim=1)
        elif media.dim() in (4, 5):
            emb = self.embed_views(media)
        else:
            raise ValueError(
                f"{PART}: expected images [B, 3, H, W], clips [B, 3, T, H, W] or videos [B, S, 3, T, H, W], "
                f"got shape {list(media.shape)}"
            )
        return emb[:, None, :]

