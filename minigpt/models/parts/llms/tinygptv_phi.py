"""TinyGPT-V's Phi-2 variant as a small change to transformers' own Phi, and its fused-QKV weights.

TinyGPT-V ships a patched ``modeling_phi.py`` that users copy over transformers' file. Against
transformers' current ``PhiForCausalLM`` it differs in three ways, all reproduced here without a
copy of the modeling code:

1. per-head ``LayerNorm(head_dim, eps=layer_norm_eps)`` on queries and keys after the head split
   and before the (partial) rotary embedding: exactly transformers' ``PhiConfig(qk_layernorm=True)``;
2. an RMSNorm (weight only, eps 1e-6, named ``post_layernorm`` on the decoder layer) applied to the
   attention branch's output (after ``dense``, before the residual sum); the MLP branch has none.
   :func:`apply_tinygptv_phi` adds it to a stock model as a module plus a forward hook on
   ``self_attn``, so the attention and decoder-layer code stay transformers' own;
3. its checkpoints hold Q, K and V fused in ``self_attn.query_key_value`` (the output projection is
   ``dense``, as now). The fused rows are ordered heads x 3 x head_dim (the patched file splits with
   ``view(batch, seq, heads, 3, head_dim)``; transformers 4.36's Phi conversion script permuted
   phi-msft's ``Wqkv`` from 3 x heads x head_dim into that order). :func:`split_fused_qkv` and
   :func:`convert_fused_phi_state_dict` turn such weights, and LoRA trained on them, into the
   ``q_proj`` / ``k_proj`` / ``v_proj`` layout exactly; both row orders are supported.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

PHI_VARIANTS = ("tinygptv",)

# LlamaRMSNorm's default, which TinyGPT-V's post_layernorm is built with
POST_ATTENTION_NORM_EPS = 1e-6

# Row orders of a fused [3 * heads * head_dim, in] QKV projection
HEADS_3_DIM = "heads_3_dim"  # TinyGPT-V / transformers<=4.36 Phi / Bloom / Persimmon
THREE_HEADS_DIM = "3_heads_dim"  # phi-msft's Wqkv: [Q; K; V] stacked
FUSED_LAYOUTS = (HEADS_3_DIM, THREE_HEADS_DIM)

_FUSED = re.compile(r"^(?P<prefix>.*)\.query_key_value\.(?P<rest>.+)$")
_LORA_A = re.compile(r"^lora_A(\.[^.]+)?\.weight$")
_LORA_B = re.compile(r"^lora_B(\.[^.]+)?\.weight$")
_SPLIT_BY_ROWS = ("weight", "bias", "base_layer.weight", "base_layer.bias")
# Tensor names of the variant that stock Phi's from_pretrained does not load
_VARIANT_KEY = re.compile(r"\.(post_layernorm|query_key_value)\.")


class PostAttentionRMSNorm(nn.Module):
    """TinyGPT-V's RMSNorm on the attention output (``post_layernorm``); added by :func:`apply_tinygptv_phi`.

    Computes in float32 and returns the input's dtype, so a float32 norm (``trainable_norms``)
    inside a float16 model hands float16 on to the residual sum. In float32 it is the original's
    ``weight * x / sqrt(mean(x^2) + eps)``.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = POST_ATTENTION_NORM_EPS,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * h).to(x.dtype)

    def attention_output_hook(self, module: nn.Module, args: tuple, output):
        """Forward hook for ``self_attn``: normalise its output, pass the attention weights through."""
        if isinstance(output, tuple):
            return (self(output[0]),) + tuple(output[1:])
        return self(output)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def apply_tinygptv_phi(model: nn.Module, eps: float = POST_ATTENTION_NORM_EPS) -> int:
    """Turn a stock transformers Phi built with ``qk_layernorm=True`` into TinyGPT-V's variant, in place.

    Each ``PhiDecoderLayer`` gets a ``post_layernorm`` (:class:`PostAttentionRMSNorm`, the name
    TinyGPT-V's checkpoints use) applied to its attention output. Layers that already have it are
    left alone, so applying twice is harmless. Returns the number of layers changed.
    """
    from transformers.models.phi.modeling_phi import PhiDecoderLayer

    config = getattr(model, "config", None)
    if config is not None:
        if getattr(config, "model_type", None) != "phi":
            raise ValueError(
                f"phi_variant 'tinygptv' needs a Phi model (model_type 'phi'), got {config.model_type!r}"
            )
        if not getattr(config, "qk_layernorm", False):
            raise ValueError(
                "phi_variant 'tinygptv' needs the Phi config's qk_layernorm=True (TinyGPT-V's per-head "
                "LayerNorm on Q and K); build the model with the variant switched on so the config sets it"
            )
    layers = [m for m in model.modules() if isinstance(m, PhiDecoderLayer)]
    if not layers:
        raise ValueError(f"phi_variant 'tinygptv': no PhiDecoderLayer in {type(model).__name__}")
    changed = 0
    for layer in layers:
        if isinstance(getattr(layer, "post_layernorm", None), PostAttentionRMSNorm):
            continue
        ref = layer.input_layernorm.weight
        norm = PostAttentionRMSNorm(ref.shape[0], eps=eps, device=ref.device, dtype=ref.dtype)
        layer.post_layernorm = norm
        layer.self_attn.register_forward_hook(norm.attention_output_hook)
        changed += 1
    return changed


# -- fused QKV ---------------------------------------------------------------------------------
def _check_layout(layout: str) -> None:
    if layout not in FUSED_LAYOUTS:
        raise ValueError(f"fused QKV layout must be one of {FUSED_LAYOUTS}, got {layout!r}")


def split_fused_qkv(
    fused: torch.Tensor, num_heads: int, layout: str = HEADS_3_DIM
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the rows of a fused QKV weight ``[3*H*D, in]``, bias ``[3*H*D]`` or LoRA B ``[3*H*D, r]``.

    Returns ``(q, k, v)``, each ``[H*D, ...]`` in the row order of separate ``q_proj`` /
    ``k_proj`` / ``v_proj`` (head-major, then position within the head).
    """
    _check_layout(layout)
    rows, rest = fused.shape[0], tuple(fused.shape[1:])
    if rows % (3 * num_heads):
        raise ValueError(f"fused QKV has {rows} rows, not divisible by 3 x {num_heads} heads")
    head_dim = rows // (3 * num_heads)
    if layout == HEADS_3_DIM:
        parts = fused.reshape(num_heads, 3, head_dim, *rest).unbind(1)  # 3 x [H, D, ...]
    else:
        parts = fused.reshape(3, num_heads, head_dim, *rest).unbind(0)
    q, k, v = (p.reshape(num_heads * head_dim, *rest).clone() for p in parts)
    return q, k, v


def fuse_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, layout: str = HEADS_3_DIM
) -> torch.Tensor:
    """Inverse of :func:`split_fused_qkv`: ``3 x [H*D, ...]`` -> ``[3*H*D, ...]`` in ``layout`` order."""
    _check_layout(layout)
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    rows, rest = q.shape[0], tuple(q.shape[1:])
    if rows % num_heads:
        raise ValueError(f"{rows} rows are not divisible by {num_heads} heads")
    head_dim = rows // num_heads
    qkv = [t.reshape(num_heads, head_dim, *rest) for t in (q, k, v)]
    stacked = torch.stack(qkv, dim=1 if layout == HEADS_3_DIM else 0)  # [H, 3, D, ...] or [3, H, D, ...]
    return stacked.reshape(3 * rows, *rest)


def convert_fused_phi_state_dict(
    state: Dict[str, torch.Tensor], num_heads: int, layout: str = HEADS_3_DIM
) -> Dict[str, torch.Tensor]:
    """Rename/split every ``*.query_key_value.*`` tensor into ``q_proj`` / ``k_proj`` / ``v_proj``.

    Weight and bias (also peft's ``base_layer.`` forms) are split by rows. LoRA on the fused
    projection computes ``B @ A`` with ``A`` shared by Q, K and V, so ``lora_A`` is copied to all
    three and ``lora_B`` is split by rows: ``B_q @ A`` is exactly the Q rows of ``B @ A``. Other
    keys pass through unchanged.
    """
    _check_layout(layout)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _FUSED.match(key)
        if m is None:
            out[key] = value
            continue
        prefix, rest = m.group("prefix"), m.group("rest")
        if rest in _SPLIT_BY_ROWS or _LORA_B.match(rest):
            parts = split_fused_qkv(value, num_heads, layout)
        elif _LORA_A.match(rest):
            parts = (value.clone(), value.clone(), value.clone())
        else:
            raise ValueError(
                f"{key}: don't know how to split {rest!r} of a fused query_key_value "
                "(supported: weight, bias, LoRA lora_A/lora_B)"
            )
        for name, part in zip(("q_proj", "k_proj", "v_proj"), parts):
            out[f"{prefix}.{name}.{rest}"] = part
    return out


# -- HF directories saved with TinyGPT-V's naming ---------------------------------------------------
def _directory_weight_files(directory: str) -> List[str]:
    names = sorted(os.listdir(directory))
    st = [n for n in names if n.endswith(".safetensors")]
    if st:
        return [os.path.join(directory, n) for n in st]
    return [os.path.join(directory, n) for n in names if n.endswith(".bin") and n.startswith("pytorch_model")]


def _read_keys(file: str, keys: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(file, framework="pt") as fh:
            present = set(fh.keys())
            wanted = present if keys is None else [k for k in keys if k in present]
            return {k: fh.get_tensor(k) for k in wanted}
    state = torch.load(file, map_location="cpu", weights_only=True)
    return state if keys is None else {k: state[k] for k in keys if k in state}


def load_variant_extras_from_directory(
    model: nn.Module, directory: str, num_heads: int, layout: str = HEADS_3_DIM
) -> Tuple[List[str], List[str]]:
    """Load what stock ``from_pretrained`` drops from a TinyGPT-V-style Phi directory.

    The directory's ``*.post_layernorm.*`` and fused ``*.query_key_value.*`` tensors (names stock
    Phi does not have) are converted and copied into ``model``, which must already carry the
    variant. Returns (names loaded, converted names without a place in the model).
    """
    own = model.state_dict()
    extra: Dict[str, torch.Tensor] = {}
    for file in _directory_weight_files(directory):
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(file, framework="pt") as fh:
                names = [k for k in fh.keys() if _VARIANT_KEY.search(k)]
        else:
            names = None  # a .bin file has to be read whole to list its keys
        part = _read_keys(file, names)
        extra.update({k: v for k, v in part.items() if _VARIANT_KEY.search(k)})
    if not extra:
        return [], []
    converted = convert_fused_phi_state_dict(extra, num_heads, layout)
    loaded, unexpected = [], []
    with torch.no_grad():
        for key, value in converted.items():
            dst = own.get(key)
            if dst is None:
                unexpected.append(key)
                continue
            if dst.shape != value.shape:
                raise ValueError(
                    f"{directory}: tensor {key!r} has shape {tuple(value.shape)} but the model expects "
                    f"{tuple(dst.shape)}"
                )
            if not dst.is_floating_point():
                raise ValueError(
                    f"{directory}: {key!r} is quantised in this model (low_resource); save the directory with "
                    "q_proj/k_proj/v_proj weights first, e.g. by loading it once without low_resource"
                )
            dst.copy_(value.to(dtype=dst.dtype, device=dst.device))
            loaded.append(key)
    return loaded, unexpected
