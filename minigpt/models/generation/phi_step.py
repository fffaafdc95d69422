"""A one-token decoding step for transformers' Phi, run from the model's own modules' weights.

Why it exists: at batch 1 a decoding step of a small Phi spends about as long in the forty-odd
small tensor operations of transformers' layer code (norm, rotary halves, cache bookkeeping,
mask handling, residual adds) as in reading its weights; measured on one CPU thread, a preallocated
cache and skipping ``PhiModel.forward`` leave most of it (``docs/benchmarks.md``, "Against
transformers' LLaVA"). :class:`PhiDecodeStep` computes the same step with fewer operations: the
per-position rotary tables built once per generation, the rotation of queries and keys done
together, keys and values written straight into the preallocated cache, no per-call argument
handling. Every operation that produces a value is the one transformers runs, on the same
operands in the same order (``F.linear`` with each projection's own weight, ``F.layer_norm``,
the activation module, ``scaled_dot_product_attention``), so the logits are bit for bit those of
the model's forward (``tests/models/test_phi_step.py``).

It applies only where that holds: a stock ``PhiForCausalLM`` in eval mode with SDPA attention,
plain ``nn.Linear`` projections (no LoRA or quantised layers), ``nn.LayerNorm`` norms (TinyGPT-V's
per-head Q/K norm included), default rotary, one key/value head per query head, and a cache of :class:`PreallocatedLayer`. Anything
else decodes through the model's forward.

Where it applies, :func:`phi_prefill` runs the prompt: every layer but the last through
transformers' own modules, the last one's queries, attention and MLP at the last position only
(the cache bit for bit the forward's, the first token's logits within ~1e-6 of them).
"""

from __future__ import annotations

import inspect
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.models.generation.kv_cache import cache_keyword


def _plain_linear(module: Any) -> bool:
    return type(module) is nn.Linear


def phi_step_blocker(causal_lm: nn.Module, cache: Any) -> Optional[str]:
    """Why :class:`PhiDecodeStep` cannot stand in for ``causal_lm``'s forward here; None when it can."""
    from transformers.models.phi.modeling_phi import PhiAttention, PhiDecoderLayer, PhiForCausalLM

    from minigpt.models.generation.kv_cache import PreallocatedLayer

    if type(causal_lm) is not PhiForCausalLM:
        return f"not a stock PhiForCausalLM ({type(causal_lm).__name__})"
    if causal_lm.training:
        return "the model is in training mode (dropout)"
    config = causal_lm.config
    if config._attn_implementation != "sdpa":
        return f"attention {config._attn_implementation!r}, not sdpa"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rotary type {rope.get('rope_type')!r}"
    if config.num_key_value_heads != config.num_attention_heads:
        return "grouped key/value heads"
    for name, module in causal_lm.named_modules():
        if module._forward_hooks or module._forward_pre_hooks:  # e.g. TinyGPT-V's post-attention norm
            return f"{name or 'the model'} has forward hooks, which the fused step would skip"
    if type(causal_lm.model.final_layernorm) is not nn.LayerNorm:
        return "the final norm is not nn.LayerNorm"
    if not _plain_linear(causal_lm.lm_head):
        return "the LM head is not a plain nn.Linear"
    for i, layer in enumerate(causal_lm.model.layers):
        if type(layer) is not PhiDecoderLayer or type(layer.self_attn) is not PhiAttention:
            return f"layer {i} is not transformers' Phi layer"
        attn, mlp = layer.self_attn, layer.mlp
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.dense, mlp.fc1, mlp.fc2)
        if not all(_plain_linear(m) for m in linears):
            return f"layer {i} has projections that are not plain nn.Linear (LoRA, quantised)"
        if type(layer.input_layernorm) is not nn.LayerNorm:
            return f"layer {i}'s input norm is not nn.LayerNorm"
        if attn.qk_layernorm and not (type(attn.q_layernorm) is type(attn.k_layernorm) is nn.LayerNorm):
            return f"layer {i}'s Q/K norms are not nn.LayerNorm"
    if cache is None or not all(type(layer) is PreallocatedLayer for layer in cache.layers):
        return "the cache is not the preallocated one"
    return None


class PhiDecodeStep:
    """Logits ``[B, vocab]`` for one new token per row of a Phi causal LM, appending to a preallocated cache.

    Built once per generation, after the prompt went through the model's forward into ``cache``
    (whose :class:`~minigpt.models.generation.kv_cache.PreallocatedLayer` buffers it then writes).
    ``positions`` is the largest position a row may reach (prompt plus new tokens).
    """

    def __init__(self, causal_lm: nn.Module, cache: Any, positions: int) -> None:
        model = causal_lm.model
        config = causal_lm.config
        self.cache_layers = list(cache.layers)
        # each layer's tensors and norm arguments, read once (module attribute lookups cost per step)
        self.layers: List[Tuple[Any, ...]] = []
        for layer in model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qk_norms = (self._norm_args(attn.q_layernorm), self._norm_args(attn.k_layernorm)) if attn.qk_layernorm else None
            self.layers.append((
                self._norm_args(layer.input_layernorm),
                (attn.q_proj.weight, attn.q_proj.bias),
                (attn.k_proj.weight, attn.k_proj.bias),
                (attn.v_proj.weight, attn.v_proj.bias),
                qk_norms,
                (attn.dense.weight, attn.dense.bias),
                (mlp.fc1.weight, mlp.fc1.bias),
                mlp.activation_fn,
                (mlp.fc2.weight, mlp.fc2.bias),
            ))
        self.embed = model.embed_tokens.weight
        self.final_norm = self._norm_args(model.final_layernorm)
        self.lm_head = (causal_lm.lm_head.weight, causal_lm.lm_head.bias)
        self.heads = config.num_attention_heads
        attn = model.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.rotary = attn.rotary_ndims
        self.scaling = attn.scaling
        # the rotary tables of transformers' PhiRotaryEmbedding, every position at once: [positions, rotary]
        rotary = model.rotary_emb
        dtype, device = self.embed.dtype, self.embed.device
        pos = torch.arange(positions, device=device)[None]  # [1, positions]
        freqs = pos[..., None].float() * rotary.inv_freq.to(device=device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * rotary.attention_scaling).to(dtype)[0]
        self.sin = (emb.sin() * rotary.attention_scaling).to(dtype)[0]

    @staticmethod
    def _norm_args(norm: nn.LayerNorm) -> Tuple[Any, ...]:
        return (norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    @torch.no_grad()
    def __call__(
        self, token: torch.Tensor, position: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``token`` ``[B]`` ids at ``position`` ``[B]``; ``mask`` the ``[B, 1, 1, keys]`` SDPA mask (boolean or additive) or None.

        One query position, so ``[B, 1, ...]`` tensors are kept as ``[B, ...]``: the same products
        (a linear layer flattens its leading dimensions anyway) without the views around them.
        """
        b = token.shape[0]
        heads, hd, rd = self.heads, self.head_dim, self.rotary
        half = rd // 2
        x = F.embedding(token, self.embed)  # [B, hidden]
        cos = self.cos[position][:, None]  # [B, 1, rotary]
        sin = self.sin[position][:, None]
        for (ln, qp, kp, vp, qk_norms, dense, fc1, act, fc2), slot in zip(self.layers, self.cache_layers):
            h = F.layer_norm(x, *ln)
            q = F.linear(h, *qp).view(b, heads, hd)
            k = F.linear(h, *kp).view(b, heads, hd)
            v = F.linear(h, *vp).view(b, heads, 1, hd)
            if qk_norms is not None:  # TinyGPT-V's per-head norms, before the rotation
                q, k = F.layer_norm(q, *qk_norms[0]), F.layer_norm(k, *qk_norms[1])
            # transformers' apply_rotary_pos_emb on queries and keys at once: [B, 2 * heads, rotary]
            qk = torch.cat((q[..., :rd], k[..., :rd]), dim=1)
            qk = (qk * cos) + (torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin)
            slot.append_split_key(qk[:, heads:, None], k[:, :, None, rd:], v)
            query = torch.cat((qk[:, :heads], q[..., rd:]), dim=-1)[:, :, None]  # [B, heads, 1, head_dim]
            out = F.scaled_dot_product_attention(
                query, slot.keys, slot.values, attn_mask=mask, dropout_p=0.0, scale=self.scaling, is_causal=False
            )
            attn_out = F.linear(out.reshape(b, heads * hd), *dense)
            x = attn_out + F.linear(act(F.linear(h, *fc1)), *fc2) + x
        return F.linear(F.layer_norm(x, *self.final_norm), *self.lm_head)  # [B, vocab]


def _causal_mask(config: Any, embeds: torch.Tensor, mask: Optional[torch.Tensor], cache: Any, position_ids: torch.Tensor) -> Any:
    """transformers' own attention mask for the prompt (``create_causal_mask``, as ``PhiModel.forward`` builds it).

    Its keywords were renamed across the supported releases (``input_embeds``, ``past_key_values``),
    so they are passed by the names the installed function takes.
    """
    from transformers.masking_utils import create_causal_mask

    params = inspect.signature(create_causal_mask).parameters
    kwargs = {"config": config, "attention_mask": mask, "position_ids": position_ids}
    kwargs["inputs_embeds" if "inputs_embeds" in params else "input_embeds"] = embeds
    kwargs["cache" if "cache" in params else "past_key_values"] = cache
    if "cache_position" in params:
        kwargs["cache_position"] = torch.arange(embeds.shape[1], device=embeds.device)
    return create_causal_mask(**kwargs)


@torch.no_grad()
def phi_prefill(
    causal_lm: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    position_ids: torch.Tensor,
    cache: Any,
) -> torch.Tensor:
    """The prompt's logits at its last position ``[B, vocab]``, filling ``cache``, with the last layer's work cut.

    Call only where :func:`phi_step_blocker` is None. Every layer but the last is transformers' own
    decoder layer on transformers' own mask and rotary tables, so it computes exactly what the
    forward computes. The last layer's keys and values are computed at every position (the cache
    holds them: bit for bit the forward's), but its queries, attention, MLP, the final norm and the
    LM head only at the last position, the one whose logits the first new token comes from
    (transformers computes that layer at every position and keeps the last row for the head).
    Those products run on ``B`` rows instead of ``B x T``, and BLAS may sum a small product in
    another order than a large one, so the logits differ from the forward's by about 1e-6
    (``tests/models/test_phi_step.py`` bounds it; the tokens are ``generate``'s).
    ``attention_mask`` is the 2-D ``[B, T]`` mask, None for a batch without padding.
    """
    model = causal_lm.model
    mask = _causal_mask(causal_lm.config, inputs_embeds, attention_mask, cache, position_ids)
    position_embeddings = model.rotary_emb(inputs_embeds, position_ids=position_ids)
    layers = model.layers[: causal_lm.config.num_hidden_layers]
    cache_kw = cache_keyword(layers[0])
    h = inputs_embeds  # [B, T, hidden]; the embedding dropout is off in eval mode
    for layer in layers[:-1]:
        h = layer(
            h, attention_mask=mask, position_ids=position_ids, use_cache=True,
            position_embeddings=position_embeddings, **{cache_kw: cache},
        )
        h = h[0] if isinstance(h, tuple) else h
    layer = layers[-1]
    attn = layer.self_attn
    b, t, _ = h.shape
    heads, hd, rd = causal_lm.config.num_attention_heads, attn.head_dim, attn.rotary_ndims
    x = layer.input_layernorm(h)
    key = attn.k_proj(x).view(b, t, heads, hd).transpose(1, 2)  # [B, heads, T, head_dim]
    value = attn.v_proj(x).view(b, t, heads, hd).transpose(1, 2)
    query = attn.q_proj(x[:, -1]).view(b, heads, 1, hd)  # the last position only
    if attn.qk_layernorm:
        query, key = attn.q_layernorm(query), attn.k_layernorm(key)
    cos, sin = (e[:, None] for e in position_embeddings)  # [B, 1, T, rotary]
    key = torch.cat((_rotate(key[..., :rd], cos, sin), key[..., rd:]), dim=-1)
    query = torch.cat((_rotate(query[..., :rd], cos[:, :, -1:], sin[:, :, -1:]), query[..., rd:]), dim=-1)
    keys, values = cache.update(key, value, attn.layer_idx)
    out = F.scaled_dot_product_attention(
        query, keys, values, attn_mask=None if mask is None else mask[:, :, -1:],
        dropout_p=0.0, scale=attn.scaling, is_causal=False,
    )  # [B, heads, 1, head_dim]; the last position sees every key its mask row allows
    last = attn.dense(out.reshape(b, heads * hd)) + layer.mlp(x[:, -1]) + h[:, -1]
    return causal_lm.lm_head(model.final_layernorm(last))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' rotary embedding of ``x`` (``apply_rotary_pos_emb`` for one tensor)."""
    half = x.shape[-1] // 2
    return (x * cos) + (torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin)


def phi_decode_step(causal_lm: nn.Module, cache: Any, positions: int) -> Optional[PhiDecodeStep]:
    """A :class:`PhiDecodeStep` for ``causal_lm`` and ``cache``, or None where :func:`phi_step_blocker` names a reason."""
    if phi_step_blocker(causal_lm, cache) is not None:
        return None
    return PhiDecodeStep(causal_lm, cache, positions)


__all__: Sequence[str] = ("PhiDecodeStep", "phi_decode_step", "phi_prefill", "phi_step_blocker")
