"""Remote code for compositions no transformers class holds: written into an export as ``modeling_minigpt.py``.

This file needs torch and transformers only (it must not import minigpt: it runs where minigpt is
not installed), and is loaded by ``AutoModel.from_pretrained(folder, trust_remote_code=True)``
through the ``auto_map`` of the export's ``config.json``. It rebuilds the image path from the
config (one vision encoder, one projector) in front of a stock ``AutoModelForCausalLM``:

* ``vision_config.kind``: ``tiny_vit`` (conv stem, pre-norm ViT blocks), ``eva_vit_g`` (BLIP-2's vision
  embeddings and encoder: EVA ViT-g is BLIP-2's vision model), ``clip_vit`` (``CLIPVisionModel``, one
  hidden state, class token optionally dropped);
* ``projector_config.kind``: ``linear``, ``mlp``, ``concat_linear`` (groups of adjacent tokens
  concatenated), ``qformer_linear`` (``ln_vision``, BLIP-2's Q-Former, Linear layers);
* ``text_variant: tinygptv``: TinyGPT-V's Phi, an RMSNorm on each attention output (stock Phi has
  the per-head Q/K LayerNorm itself, ``qk_layernorm``).

``input_ids`` carry one ``image_token_id`` per visual embedding; those positions take the
projected image features, in order. Shapes: ``pixel_values [B, 3, S, S]`` -> encoder
``[B, N, C]`` -> projector ``[B, N', D]``, ``N'`` slots per image in ``input_ids``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel


class MiniGPTConfig(PretrainedConfig):
    """Config of :class:`MiniGPTForConditionalGeneration`: the image path's two blocks and the LLM's config."""

    model_type = "minigpt"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        vision_config: Optional[Dict[str, Any]] = None,
        projector_config: Optional[Dict[str, Any]] = None,
        text_config: Any = None,
        text_variant: Optional[str] = None,
        image_token_id: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        self.vision_config = dict(vision_config or {})
        self.projector_config = dict(projector_config or {})
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            text_config = AutoConfig.for_model(text_config.pop("model_type", "llama"), **text_config)
        self.text_config = text_config
        self.text_variant = text_variant
        self.image_token_id = image_token_id
        super().__init__(**kwargs)


# -- vision encoders ----------------------------------------------------------------------------------
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """A pre-norm ViT block (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Stride-2 conv stem with Batch/GroupNorm, a learned position table, ViT blocks, a final LayerNorm."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        stem_channels: Optional[int] = None,
        stem_norm: str = "batch",
        **_: Any,
    ) -> None:
        super().__init__()
        c, layers, in_ch = stem_channels or width // 2, [], 3
        n_down = int(math.log2(patch_size))
        for i in range(n_down):
            out_ch = width if i == n_down - 1 else c
            norm = nn.BatchNorm2d(out_ch) if stem_norm == "batch" else nn.GroupNorm(8, out_ch)
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False), norm, nn.GELU()]
            in_ch = out_ch
        self.stem = nn.Sequential(*layers)
        grid = image_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, width))
        self.blocks = nn.ModuleList([_Block(width, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images).flatten(2).transpose(1, 2) + self.pos_embed  # [B, g*g, C]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class _FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class EvaViT(nn.Module):
    """EVA ViT-g as BLIP-2's vision embeddings + encoder, all tokens of the last block (no final norm)."""

    def __init__(
        self, blip2: Dict[str, Any], drop_cls: bool = False, ln_vision: bool = False, **_: Any
    ) -> None:
        super().__init__()
        from transformers import Blip2VisionConfig
        from transformers.models.blip_2.modeling_blip_2 import Blip2Encoder, Blip2VisionEmbeddings

        config = Blip2VisionConfig(**blip2)
        self.embeddings, self.encoder = Blip2VisionEmbeddings(config), Blip2Encoder(config)
        self.drop_cls = drop_cls
        self.ln_vision = _FP32LayerNorm(config.hidden_size) if ln_vision else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(inputs_embeds=self.embeddings(images)).last_hidden_state  # [B, 1 + g*g, C]
        x = x[:, 1:] if self.drop_cls else x
        return self.ln_vision(x) if self.ln_vision is not None else x


class ClipViT(nn.Module):
    """``CLIPVisionModel``, hidden state ``select_layer``, the class token dropped with ``drop_cls``."""

    def __init__(self, clip: Dict[str, Any], select_layer: int = -2, drop_cls: bool = True, **_: Any) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.model = CLIPVisionModel(CLIPVisionConfig(**clip))
        self.select_layer, self.drop_cls = select_layer, drop_cls

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model(pixel_values=images, output_hidden_states=True).hidden_states[self.select_layer]
        return x[:, 1:] if self.drop_cls else x


# -- projectors -----------------------------------------------------------------------------------------
def _norm(out_norm: bool, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if out_norm else nn.Identity()


class LinearProjector(nn.Module):
    """``Linear`` (+ LayerNorm with ``out_norm``)."""

    def __init__(self, in_dim: int, out_dim: int, out_norm: bool = False, **_: Any) -> None:
        super().__init__()
        self.proj, self.norm = nn.Linear(in_dim, out_dim), _norm(out_norm, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MLPProjector(nn.Module):
    """``Linear -> GELU | SiLU -> Linear`` (+ LayerNorm with ``out_norm``)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        activation: str = "gelu",
        out_norm: bool = False,
        **_: Any,
    ) -> None:
        super().__init__()
        act = nn.GELU() if activation == "gelu" else nn.SiLU()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), act, nn.Linear(hidden_dim, out_dim))
        self.norm = _norm(out_norm, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x))


class ConcatLinearProjector(nn.Module):
    """``group`` adjacent tokens (in raster order, or ``square`` 2-D neighbours) concatenated, then projected."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        group: int,
        layout: str = "sequence",
        hidden_dim: Optional[int] = None,
        out_norm: bool = False,
        **_: Any,
    ) -> None:
        super().__init__()
        self.group, self.layout, d = group, layout, in_dim * group
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(d, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            self.proj = nn.Linear(d, out_dim)
        self.norm = _norm(out_norm, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.layout == "sequence":
            x = x.reshape(b, n // self.group, c * self.group)  # [B, N/g, g*C]
        else:
            side, k = math.isqrt(n), math.isqrt(self.group)
            x = x.reshape(b, side // k, k, side // k, k, c).permute(0, 1, 3, 2, 4, 5)  # [B, gh, gw, k, k, C]
            x = x.reshape(b, n // self.group, c * self.group)
        return self.norm(self.proj(x))


class QFormerLinearProjector(nn.Module):
    """``ln_vision`` -> BLIP-2's Q-Former over learned queries -> Linear layers (no activation between)."""

    def __init__(
        self, in_dim: int, qformer: Dict[str, Any], num_query_token: int, dims: list, **_: Any
    ) -> None:
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        config = Blip2QFormerConfig(**qformer)
        self.ln_vision = _FP32LayerNorm(in_dim)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
        self.qformer = Blip2QFormerModel(config)
        self.proj = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries = self.query_tokens.expand(x.shape[0], -1, -1)  # [B, Q, H]
        out = self.qformer(query_embeds=queries, encoder_hidden_states=self.ln_vision(x)).last_hidden_state
        return self.proj(out.to(self.proj[0].weight.dtype))


VISION = {"tiny_vit": TinyViT, "eva_vit_g": EvaViT, "clip_vit": ClipViT}
PROJECTORS = {
    "linear": LinearProjector,
    "mlp": MLPProjector,
    "concat_linear": ConcatLinearProjector,
    "qformer_linear": QFormerLinearProjector,
}


def _build(table: Dict[str, type], block: Dict[str, Any], what: str) -> nn.Module:
    kind = block.get("kind")
    if kind not in table:
        raise ValueError(f"config.json {what}.kind={kind!r} is not one of {sorted(table)}")
    return table[kind](**{k: v for k, v in block.items() if k != "kind"})


# -- TinyGPT-V's Phi ---------------------------------------------------------------------------------
class PostAttentionRMSNorm(nn.Module):
    """RMSNorm (weight only, eps 1e-6, float32 inside) on a decoder layer's attention output."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * h).to(x.dtype)

    def hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return (self(output[0]),) + tuple(output[1:]) if isinstance(output, tuple) else self(output)


def add_post_attention_norms(lm: nn.Module) -> None:
    """Give every Phi decoder layer of ``lm`` its ``post_layernorm`` on the attention output."""
    for layer in lm.modules():
        if type(layer).__name__ == "PhiDecoderLayer":
            layer.post_layernorm = PostAttentionRMSNorm(layer.input_layernorm.weight.shape[0])
            layer.self_attn.register_forward_hook(layer.post_layernorm.hook)


# -- the model ----------------------------------------------------------------------------------------
class MiniGPTForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """Vision encoder -> projector -> causal LM; image features fill the ``image_token_id`` slots."""

    config_class = MiniGPTConfig
    base_model_prefix = "minigpt"
    _supports_sdpa = True

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__(config)
        self.vision_encoder = _build(VISION, config.vision_config, "vision_config")
        self.projector = _build(PROJECTORS, config.projector_config, "projector_config")
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        if config.text_variant == "tinygptv":
            add_post_attention_norms(self.language_model)
        elif config.text_variant is not None:
            raise ValueError(f"config.json text_variant={config.text_variant!r}: only 'tinygptv' is known")
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, N', D]``, the embeddings that fill one image's slots."""
        return self.projector(self.vision_encoder(pixel_values))

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        pixel_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        **kwargs: Any,
    ):
        if inputs_embeds is None:
            slots = input_ids == self.config.image_token_id
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if pixel_values is not None and bool(slots.any()):
                feats = self.get_image_features(pixel_values.to(inputs_embeds.dtype))
                if feats.shape[0] * feats.shape[1] != int(slots.sum()):
                    raise ValueError(
                        f"{int(slots.sum())} image slots in input_ids but {feats.shape[0]} images of "
                        f"{feats.shape[1]} embeddings each"
                    )
                inputs_embeds = inputs_embeds.masked_scatter(
                    slots.unsqueeze(-1), feats.to(inputs_embeds.dtype)
                )
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )
