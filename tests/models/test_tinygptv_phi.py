"""TinyGPT-V's Phi-2 variant on transformers' Phi, and the conversion of its fused-QKV weights.

The reference forward below is written from TinyGPT-V's patched ``modeling_phi.py`` (DLYuanGod/TinyGPT-V):
LayerNorm -> attention with per-head LayerNorm on Q and K before the partial rotary embedding ->
``dense`` -> RMSNorm (eps 1e-6) on the attention output; MLP on the same LayerNorm output; both
added to the residual. Its fused projection is split with ``view(batch, seq, heads, 3, head_dim)``.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from minigpt.models.parts.llms.hf_causal_lm import SHIPPED_TOKENIZER, HFCausalLM
from minigpt.models.parts.llms.tinygptv_phi import (
    FUSED_LAYOUTS,
    HEADS_3_DIM,
    THREE_HEADS_DIM,
    PostAttentionRMSNorm,
    apply_tinygptv_phi,
    convert_fused_phi_state_dict,
    fuse_qkv,
    split_fused_qkv,
)

HIDDEN, HEADS, LAYERS = 32, 4, 2
HEAD_DIM = HIDDEN // HEADS
CONFIG = dict(
    model_type="phi",
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    partial_rotary_factor=0.5,
    max_position_embeddings=64,
    hidden_act="gelu_new",
    layer_norm_eps=1e-5,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attention_dropout=0.0,
    tie_word_embeddings=False,
)


def tiny_llm(**kw) -> HFCausalLM:
    torch.manual_seed(0)
    llm = HFCausalLM(config=CONFIG, tokenizer=SHIPPED_TOKENIZER, phi_variant="tinygptv", **kw)
    return llm.eval()


def randomise_norms(model: torch.nn.Module) -> None:
    """Norms start at weight 1 / bias 0, which would hide a misplaced or missing norm."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(
                    0.5 + torch.rand(p.shape, generator=g)
                    if name.endswith("weight")
                    else torch.randn(p.shape, generator=g) * 0.1
                )


# -- the reference --------------------------------------------------------------------------------------
def _linear(sd, name, x, lora_scale=None):
    y = F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))
    if lora_scale is not None and name + ".lora_A" in sd:
        y = y + lora_scale * F.linear(F.linear(x, sd[name + ".lora_A"]), sd[name + ".lora_B"])
    return y


def split_qkv(sd, prefix, h, lora_scale=None):
    b, t, _ = h.shape
    return [_linear(sd, f"{prefix}self_attn.{n}_proj", h).view(b, t, HEADS, HEAD_DIM) for n in "qkv"]


def fused_qkv(layout):
    def qkv(sd, prefix, h, lora_scale=None):
        b, t, _ = h.shape
        f = _linear(sd, f"{prefix}self_attn.query_key_value", h, lora_scale)
        if layout == HEADS_3_DIM:  # TinyGPT-V: view(batch, seq, heads, 3, head_dim)
            f = f.view(b, t, HEADS, 3, HEAD_DIM)
            return [f[..., j, :] for j in range(3)]
        f = f.view(b, t, 3, HEADS, HEAD_DIM)  # phi-msft: (three h d)
        return [f[:, :, j] for j in range(3)]

    return qkv


def reference_forward(sd, ids, qkv, post_norm=True, lora_scale=None):
    eps = CONFIG["layer_norm_eps"]
    rot = int(HEAD_DIM * CONFIG["partial_rotary_factor"])
    b, t = ids.shape
    x = sd["model.embed_tokens.weight"][ids]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, rot, 2).float() / rot))
    ang = torch.arange(t).float()[:, None] * inv_freq[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(z):  # [B, H, T, D]: rotate-half on the first `rot` dims only
        r, keep = z[..., :rot], z[..., rot:]
        rotated = torch.cat([-r[..., rot // 2 :], r[..., : rot // 2]], -1)
        return torch.cat([r * cos + rotated * sin, keep], -1)

    causal = torch.full((t, t), float("-inf")).triu(1)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = F.layer_norm(x, (HIDDEN,), sd[p + "input_layernorm.weight"], sd[p + "input_layernorm.bias"], eps)
        q, k, v = qkv(sd, p, h, lora_scale)
        q = F.layer_norm(
            q, (HEAD_DIM,), sd[p + "self_attn.q_layernorm.weight"], sd[p + "self_attn.q_layernorm.bias"], eps
        )
        k = F.layer_norm(
            k, (HEAD_DIM,), sd[p + "self_attn.k_layernorm.weight"], sd[p + "self_attn.k_layernorm.bias"], eps
        )
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q, k = rope(q), rope(k)
        att = (q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM) + causal).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(b, t, HIDDEN)
        o = _linear(sd, p + "self_attn.dense", o, lora_scale)
        if post_norm:
            o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * sd[p + "post_layernorm.weight"]
        m = _linear(sd, p + "mlp.fc2", F.gelu(_linear(sd, p + "mlp.fc1", h), approximate="tanh"))
        x = x + o + m
    x = F.layer_norm(x, (HIDDEN,), sd["model.final_layernorm.weight"], sd["model.final_layernorm.bias"], eps)
    return _linear(sd, "lm_head", x)


IDS = torch.tensor([[5, 17, 3, 99, 42, 7, 1, 60], [8, 8, 2, 71, 13, 29, 90, 4]])


# -- the variant -------------------------------------------------------------------------------------------
def test_variant_matches_hand_written_reference_forward():
    llm = tiny_llm()
    randomise_norms(llm.model)
    sd = llm.model.state_dict()
    with torch.no_grad():
        ours = llm.model(input_ids=IDS).logits
        ref = reference_forward(sd, IDS, split_qkv)
        without_post_norm = reference_forward(sd, IDS, split_qkv, post_norm=False)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    # the RMSNorm on the attention output is really applied (stock Phi would equal this one)
    assert not torch.allclose(ours, without_post_norm, atol=1e-3)


def test_post_layernorm_sits_on_each_decoder_layer_under_tinygptvs_name():
    llm = tiny_llm()
    keys = set(llm.model.state_dict())
    for i in range(LAYERS):
        norm = llm.model.model.layers[i].post_layernorm
        assert isinstance(norm, PostAttentionRMSNorm) and norm.eps == 1e-6
        assert {
            f"model.layers.{i}.post_layernorm.weight",
            f"model.layers.{i}.self_attn.q_layernorm.weight",
        } <= keys
    # TinyGPT-V's Q/K norms are transformers' own qk_layernorm, over one head's width
    assert llm.model.config.qk_layernorm and llm.model.model.layers[
        0
    ].self_attn.q_layernorm.normalized_shape == (HEAD_DIM,)
    # applying twice adds nothing and changes nothing
    randomise_norms(llm.model)
    with torch.no_grad():
        before = llm.model(input_ids=IDS).logits
        assert apply_tinygptv_phi(llm.model) == 0
        assert torch.equal(before, llm.model(input_ids=IDS).logits)


def test_variant_needs_phi_with_qk_layernorm():
    from transformers import AutoModelForCausalLM, PhiConfig

    stock = AutoModelForCausalLM.from_config(
        PhiConfig(**{k: v for k, v in CONFIG.items() if k != "model_type"})
    )
    with pytest.raises(ValueError, match="qk_layernorm"):
        apply_tinygptv_phi(stock)
    with pytest.raises(ValueError, match="qk_layernorm=False contradicts"):
        HFCausalLM(
            config={**CONFIG, "qk_layernorm": False}, tokenizer=SHIPPED_TOKENIZER, phi_variant="tinygptv"
        )
    with pytest.raises(ValueError, match="unknown variant"):
        HFCausalLM(config=CONFIG, tokenizer=SHIPPED_TOKENIZER, phi_variant="tinygpt")


def test_trainable_norms_keep_the_variant_norms_trainable_and_float32():
    llm = tiny_llm(torch_dtype="bfloat16", freeze=True, trainable_norms=True, lora_r=4)
    layer = llm.model.base_model.model.model.layers[0]
    for norm in (
        layer.post_layernorm,
        layer.self_attn.q_layernorm,
        layer.self_attn.k_layernorm,
        layer.input_layernorm,
    ):
        assert norm.weight.dtype == torch.float32 and norm.weight.requires_grad
    assert layer.mlp.fc1.weight.dtype == torch.bfloat16 and not layer.mlp.fc1.weight.requires_grad
    # a float32 norm on bfloat16 activations hands bfloat16 on to the residual sum
    assert layer.post_layernorm(torch.randn(2, HIDDEN, dtype=torch.bfloat16)).dtype == torch.bfloat16


# -- fused QKV ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", FUSED_LAYOUTS)
def test_split_follows_the_layouts_row_order_and_fuse_inverts_it(layout):
    rows = torch.arange(3 * HIDDEN, dtype=torch.float32)
    q, k, v = split_fused_qkv(rows, HEADS, layout)
    for j, part in enumerate((q, k, v)):
        for h in range(HEADS):
            for d in range(HEAD_DIM):
                if layout == HEADS_3_DIM:
                    want = h * 3 * HEAD_DIM + j * HEAD_DIM + d
                else:
                    want = j * HIDDEN + h * HEAD_DIM + d
                assert part[h * HEAD_DIM + d] == want
    w = torch.randn(3 * HIDDEN, 5)
    assert torch.equal(fuse_qkv(*split_fused_qkv(w, HEADS, layout), HEADS, layout), w)


def _fused_reference_state(layout_seed: int, lora_r: int = 0):
    """Random weights in TinyGPT-V's naming (fused query_key_value), optionally with LoRA on it and on dense."""
    llm = tiny_llm()
    randomise_norms(llm.model)
    g = torch.Generator().manual_seed(layout_seed)
    sd = dict(llm.model.state_dict())
    for i in range(LAYERS):
        p = f"model.layers.{i}.self_attn."
        for n in "qkv":
            sd.pop(f"{p}{n}_proj.weight"), sd.pop(f"{p}{n}_proj.bias")
        sd[p + "query_key_value.weight"] = torch.randn(3 * HIDDEN, HIDDEN, generator=g) * 0.2
        sd[p + "query_key_value.bias"] = torch.randn(3 * HIDDEN, generator=g) * 0.2
        if lora_r:
            sd[p + "query_key_value.lora_A"] = torch.randn(lora_r, HIDDEN, generator=g) * 0.3
            sd[p + "query_key_value.lora_B"] = torch.randn(3 * HIDDEN, lora_r, generator=g) * 0.3
            sd[p + "dense.lora_A"] = torch.randn(lora_r, HIDDEN, generator=g) * 0.3
            sd[p + "dense.lora_B"] = torch.randn(HIDDEN, lora_r, generator=g) * 0.3
    return sd


@pytest.mark.parametrize("layout", FUSED_LAYOUTS)
def test_fused_weights_convert_exactly(layout):
    sd = _fused_reference_state(2)
    with torch.no_grad():
        ref = reference_forward(sd, IDS, fused_qkv(layout))
    target = tiny_llm()
    target.model.load_state_dict(convert_fused_phi_state_dict(sd, HEADS, layout), strict=True)
    with torch.no_grad():
        ours = target.model(input_ids=IDS).logits
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    # the two row orders really differ: converting with the other one gives another model
    other = THREE_HEADS_DIM if layout == HEADS_3_DIM else HEADS_3_DIM
    target.model.load_state_dict(convert_fused_phi_state_dict(sd, HEADS, other), strict=True)
    with torch.no_grad():
        assert not torch.allclose(target.model(input_ids=IDS).logits, ref, atol=1e-3)


@pytest.mark.parametrize("layout", FUSED_LAYOUTS)
def test_lora_on_fused_qkv_converts_exactly(layout):
    r, alpha = 4, 8
    sd = _fused_reference_state(3, lora_r=r)
    with torch.no_grad():
        ref = reference_forward(sd, IDS, fused_qkv(layout), lora_scale=alpha / r)
    target = tiny_llm(
        lora_r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "dense"],
    )
    # the names a current peft model gives the fused original
    peft_sd = {}
    for key, value in sd.items():
        for lin in ("query_key_value", "dense"):
            key = key.replace(f".{lin}.lora_A", f".{lin}.lora_A.default.weight")
            key = key.replace(f".{lin}.lora_B", f".{lin}.lora_B.default.weight")
            for param in ("weight", "bias"):
                key = key.replace(f".{lin}.{param}", f".{lin}.base_layer.{param}")
        peft_sd["base_model.model." + key] = value
    converted = convert_fused_phi_state_dict(peft_sd, HEADS, layout)
    q_a = converted["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert torch.equal(
        q_a, converted["base_model.model.model.layers.0.self_attn.v_proj.lora_A.default.weight"]
    )
    target.model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        ours = target.model(input_ids=IDS).logits
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    assert not torch.allclose(ours, reference_forward(sd, IDS, fused_qkv(layout)), atol=1e-3)  # LoRA mattered


def test_unknown_fused_tensor_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="layers.0.self_attn.query_key_value.lora_magnitude_vector"):
        convert_fused_phi_state_dict(
            {
                "model.layers.0.self_attn.query_key_value.lora_magnitude_vector.default.weight": torch.ones(
                    3 * HIDDEN
                )
            },
            HEADS,
        )


def test_pretrained_directory_in_tinygptvs_naming_loads_exactly(tmp_path):
    """An HF directory holding a fused query_key_value and post_layernorm (TinyGPT-V's phi-2 copy)."""
    source = tiny_llm()
    randomise_norms(source.model)
    source.model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    assert "model.layers.0.post_layernorm.weight" in state
    for i in range(LAYERS):
        p = f"model.layers.{i}.self_attn."
        for param in ("weight", "bias"):
            q, k, v = (state.pop(f"{p}{n}_proj.{param}") for n in "qkv")
            parts = [t.reshape(HEADS, HEAD_DIM, *t.shape[1:]) for t in (q, k, v)]
            state[f"{p}query_key_value.{param}"] = torch.stack(parts, 1).reshape(3 * HIDDEN, *q.shape[1:])
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})

    loaded = HFCausalLM(pretrained=str(tmp_path), tokenizer=SHIPPED_TOKENIZER, phi_variant="tinygptv").eval()
    with torch.no_grad():
        assert torch.allclose(
            loaded.model(input_ids=IDS).logits, source.model(input_ids=IDS).logits, atol=1e-5
        )
