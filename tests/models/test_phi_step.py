"""The fused Phi decoding step gives the model forward's logits bit for bit, and steps aside where it cannot."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import PhiConfig, PhiForCausalLM

from minigpt.models import load_model
from minigpt.models.generation.decode import cache_keyword, decode
from minigpt.models.generation.kv_cache import PreallocatedLayer, preallocated_cache
from minigpt.models.generation.phi_step import PhiDecodeStep, phi_decode_step, phi_prefill, phi_step_blocker
from minigpt.models.parts.llms.hf_causal_lm import fuse_tanh_gelu


def _phi(attn: str = "sdpa", qk_layernorm: bool = False, fused_gelu: bool = True) -> PhiForCausalLM:
    torch.manual_seed(0)
    cfg = PhiConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        partial_rotary_factor=0.5, qk_layernorm=qk_layernorm, max_position_embeddings=128,
    )
    cfg._attn_implementation = attn
    model = PhiForCausalLM(cfg).eval()
    if fused_gelu:
        fuse_tanh_gelu(model)
    return model


def _prompt(model, batch: int = 3, length: int = 9):
    emb = torch.randn(batch, length, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):  # left padding of different lengths
        mask[row, : 2 * row] = 0
    return emb, mask


@pytest.mark.parametrize("qk_layernorm", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_step_logits_and_cache_equal_the_forward_bit_for_bit(qk_layernorm, padded):
    model = _phi(qk_layernorm=qk_layernorm, fused_gelu=not qk_layernorm)  # both activations covered
    emb, mask = _prompt(model)
    if not padded:
        mask = torch.ones_like(mask)
    b, t = mask.shape
    steps = 6
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    keys_mask = torch.ones(b, 1, 1, t + steps, dtype=torch.bool)
    keys_mask[:, 0, 0, :t] = mask.bool()
    additive = torch.zeros(keys_mask.shape).masked_fill_(~keys_mask, float("-inf"))  # what decode hands the step
    caches = [preallocated_cache(model.config, t + steps) for _ in range(2)]
    key = cache_keyword(model)  # the installed forward's name for its cache argument
    with torch.no_grad():
        for cache in caches:
            out = model(inputs_embeds=emb, attention_mask=mask, position_ids=position, logits_to_keep=1, **{key: cache})
        step = phi_decode_step(model, caches[1], t + steps + 1)
        assert isinstance(step, PhiDecodeStep)
        token = out.logits[:, -1].argmax(-1)
        pos = position[:, -1] + 1
        for i in range(steps):
            step_mask = keys_mask[..., : t + i + 1] if padded else None
            ref = model(
                input_ids=token[:, None], attention_mask=step_mask, position_ids=pos[:, None],
                logits_to_keep=1, **{key: caches[0]},
            ).logits[:, -1]
            got = step(token, pos, additive[..., : t + i + 1] if padded else None)
            assert got.shape == (b, model.config.vocab_size)
            assert torch.equal(got, ref), f"step {i}: max diff {(got - ref).abs().max()}"
            token, pos = ref.argmax(-1), pos + 1
    for a, c in zip(caches[0].layers, caches[1].layers):
        assert a.get_seq_length() == c.get_seq_length() == t + steps
        assert torch.equal(a.keys, c.keys) and torch.equal(a.values, c.values)


@pytest.mark.parametrize("qk_layernorm", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_prefill_fills_the_forwards_cache_and_its_logits_to_a_few_1e_7(qk_layernorm, padded):
    model = _phi(qk_layernorm=qk_layernorm, fused_gelu=not qk_layernorm)
    emb, mask = _prompt(model, batch=4, length=11)
    mask = mask if padded else torch.ones_like(mask)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = [preallocated_cache(model.config, 16) for _ in range(2)]
    with torch.no_grad():
        ref = model(
            inputs_embeds=emb, attention_mask=mask if padded else None, position_ids=position, logits_to_keep=1,
            **{cache_keyword(model): caches[0]},
        ).logits[:, -1]
    got = phi_prefill(model, emb, mask if padded else None, position, caches[1])
    assert got.shape == ref.shape == (4, model.config.vocab_size)
    # the last layer's products on 4 rows instead of 44: BLAS may sum them in another order
    assert (got - ref).abs().max() <= 1e-5 and torch.equal(got.argmax(-1), ref.argmax(-1))
    for a, c in zip(caches[0].layers, caches[1].layers):  # every layer's keys and values, the last one's too
        assert a.get_seq_length() == c.get_seq_length() == 11
        assert torch.equal(a.keys, c.keys) and torch.equal(a.values, c.values)


def test_decode_gives_the_same_tokens_with_and_without_the_fused_step():
    model = _phi()
    emb, mask = _prompt(model)
    calls = []
    real = model.forward

    @functools.wraps(real)  # the forward's signature, so the loop passes the cache by the keyword it takes
    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    model.forward = spy
    common = dict(max_new_tokens=12, eos_token_ids=[0], pad_token_id=0, min_new_tokens=12)
    fused = decode(model, emb, mask, **common)
    assert not calls  # the prompt through phi_prefill, every new token from the fused step
    forward_prompt = decode(model, emb, mask, lean_prefill=False, **common)
    assert len(calls) == 1  # the prompt only
    plain = decode(model, emb, mask, fused_step=False, **common)
    assert len(calls) == 1 + 12  # the prompt and the 11 steps after it
    assert fused.shape == (3, 12) and torch.equal(fused, plain) and torch.equal(forward_prompt, plain)
    torch.manual_seed(5)
    sampled = decode(model, emb, mask, do_sample=True, temperature=1.5, top_k=20, **common)
    torch.manual_seed(5)
    assert torch.equal(sampled, decode(model, emb, mask, do_sample=True, temperature=1.5, top_k=20, fused_step=False, **common))


def test_a_multimodal_model_decodes_through_the_fused_step_with_generates_tokens():
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", is_eval=True)
    assert phi_step_blocker(model.llm.causal_lm, preallocated_cache(model.llm.causal_lm.config, 4)) is None
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    prompts = ["<Img><ImageHere></Img> what colour is it?", "hello, how many shapes are there in the picture?"]
    args = model._generate_kwargs(images, prompts, None, [], 10, 1, False, 1.0, 0.9, 1.0, True, {"min_new_tokens": 10})
    lean = model._run_lean_decode(args)
    hf = model._run_llm_generate(args)
    assert lean.shape == (2, 10) and torch.equal(lean, hf)


def test_blockers_name_what_the_fused_step_does_not_cover():
    cache = preallocated_cache(_phi().config, 8)
    assert "sdpa" in phi_step_blocker(_phi(attn="eager"), cache)
    assert "training" in phi_step_blocker(_phi().train(), cache)
    assert "preallocated" in phi_step_blocker(_phi(), None)
    model = _phi()
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).get_base_model()
    assert "plain nn.Linear" in phi_step_blocker(lora, cache)
    assert phi_decode_step(lora, cache, 8) is None
    llama = load_model("minigpt4", "tiny", is_eval=True).llm.causal_lm
    assert "PhiForCausalLM" in phi_step_blocker(llama, cache)


def test_split_key_append_equals_update_and_the_buffers_grow_past_capacity():
    a, b = PreallocatedLayer(3), PreallocatedLayer(3)
    k, v = torch.randn(2, 4, 2, 8), torch.randn(2, 4, 2, 8)
    a.update(k, v)
    b.update(k, v)
    for _ in range(3):  # the third append passes the capacity of 3 positions
        k1, v1 = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8)
        a.update(k1, v1)
        b.append_split_key(k1[..., :3], k1[..., 3:], v1)
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert b.get_seq_length() == 5 and b.keys.shape == (2, 4, 5, 8)


def test_a_model_with_forward_hooks_keeps_the_forward():
    """TinyGPT-V's Phi variant normalises the attention output in a forward hook: the fused step must not skip it."""
    from minigpt.models.parts.llms.tinygptv_phi import apply_tinygptv_phi

    model = _phi(qk_layernorm=True, fused_gelu=False)
    cache = preallocated_cache(model.config, 8)
    assert phi_step_blocker(model, cache) is None
    apply_tinygptv_phi(model)
    assert "forward hooks" in phi_step_blocker(model, cache)


def test_a_hook_on_the_llm_wrapper_runs_at_every_step():
    """A forward hook on ``model.llm`` (the wrapper around the causal LM) is called for the prompt and every
    new token: the fused step and the lean prompt pass, which would skip it, stay off."""
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", is_eval=True)
    calls = []
    handle = model.llm.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    args = model._generate_kwargs(images, ["<Img><ImageHere></Img> what colour is it?"], None, [], 6, 1, False,
                                  1.0, 0.9, 1.0, True, {"min_new_tokens": 6})
    hooked = model._run_lean_decode(args)
    assert len(calls) == 6  # the prompt, then the five tokens after the first
    handle.remove()
    assert torch.equal(model._run_lean_decode(args), hooked)  # unhooked: the fused path, the same tokens
