"""LaVIN (arch ``lavin``): mma adapters, the modality token, its routing in training and cached decoding, presets."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from minigpt.common.registry import registry
from minigpt.models import load_model, load_model_and_preprocess
from minigpt.models.lavin.mma import GroupedLinear, MMAdapter
from minigpt.models.lavin.model import LaVIN

IMG = "<Img><ImageHere></Img>"
IMAGE_Q = f"Image: {IMG}\nWhich shape is shown? Options: (A) circle (B) square"
TEXT_Q = "Which number is larger? Options: (A) 3 (B) 7"


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _tiny(seed: int = 0) -> LaVIN:
    torch.manual_seed(seed)
    return load_model("lavin", "tiny", is_eval=True)


def _perturb_adapters(model: LaVIN, seed: int = 1, std: float = 0.5) -> None:
    """Give every up-projection path and router weights, as training would (at init the paths are zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in model.adapters.values():
            for p in list(adapter.paths.parameters()) + list(adapter.router.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _frozen_llm_alone(model: LaVIN) -> torch.nn.Module:
    """The same causal LM weights in a fresh transformers model: no adapter hooks, no modality token."""
    llm = model.llm.causal_lm
    alone = AutoModelForCausalLM.from_config(llm.config)
    alone.load_state_dict(llm.state_dict())
    return alone.eval()


def _logits(model: LaVIN, prompts, images) -> tuple:
    batch = model.build_inputs(prompts, None, model.num_image_tokens(), "right")
    emb = model.embed(batch, images)
    out = model.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"])
    return out.logits, emb, batch


# -- registry and presets ---------------------------------------------------------------------------
def test_lavin_and_mma_are_registered():
    assert registry.get_model_class("lavin") is LaVIN
    assert registry.get_adapter_class("mma") is MMAdapter
    model, vis, txt = load_model_and_preprocess("lavin", "tiny")
    assert isinstance(model, LaVIN) and vis["eval"] is not None and txt["eval"] is not None
    assert model.num_image_tokens() == 4  # 8 CLIP blocks, every 2nd class-token state


def test_trainable_set_is_adapters_projector_and_modality_table():
    model = _tiny()
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"adapters", "projector", "modality_embedding"}
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    slots = list(model.adapters)
    n_llm, n_clip = 4, 8
    assert sum("_llm_" in s for s in slots) == n_llm and sum("_vision_encoder_" in s for s in slots) == n_clip
    assert model.vision_cache_point() is None  # the tower's output trains through its adapters: never cached


# -- the adapter -------------------------------------------------------------------------------------
def test_grouped_linear_is_a_grouped_1x1_convolution():
    torch.manual_seed(0)
    lin = GroupedLinear(8, 12, groups=2)
    conv = torch.nn.Conv1d(8, 12, 1, groups=2)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
        lin.weight.copy_(conv.weight.view(2, 6, 4))
        lin.bias.copy_(conv.bias)
    x = torch.randn(3, 5, 8)  # [B, T, C]
    want = conv(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(lin(x), want, atol=1e-6)
    assert sum(p.numel() for p in lin.parameters()) == sum(p.numel() for p in conv.parameters())


def test_mma_is_the_identity_at_init_and_routes_by_the_first_token():
    torch.manual_seed(0)
    adapter = MMAdapter(16, router="first_token", dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    assert torch.equal(adapter.adapt(x), x)
    with torch.no_grad():
        for p in adapter.paths.parameters():
            p.normal_()
    y = adapter.adapt(x)
    assert not torch.allclose(y, x)
    # changing a later token leaves the routing (and so the adapter's action on the first token) alone
    x2 = x.clone()
    x2[:, 3] += 5.0
    assert torch.allclose(adapter.adapt(x2)[:, :3], y[:, :3])
    w = adapter.routing_weights(x[:, 0])
    assert w.shape == (2, 2) and torch.allclose(w.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="router must be one of"):
        MMAdapter(16, router="cls")


def test_modality_routed_mma_needs_the_modality_pass():
    adapter = MMAdapter(16, router="modality")
    with pytest.raises(RuntimeError, match="modality token first"):
        adapter.adapt(torch.randn(1, 3, 16))


# -- acceptance: identity at init -----------------------------------------------------------------------
def test_logits_at_init_equal_the_frozen_llm_on_the_same_text():
    """At init LaVIN's logits are the frozen LLM's on the same laid-out text (``Image: N/A`` included).

    The modality token sits at position 0 in LaVIN and no token attends to it; here it never enters
    the sequence (it runs on its own, see minigpt/models/lavin/model.py), so "the same text" is the
    token sequence without it, and the LLM alone gets exactly those embeddings.
    """
    model = _tiny()
    alone = _frozen_llm_alone(model)
    prompts, images = [TEXT_Q, IMAGE_Q], [None, _images(1)[0]]
    with torch.no_grad():
        logits, emb, batch = _logits(model, prompts, images)
        want = alone(inputs_embeds=emb, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"])
        assert torch.equal(logits, want.logits)
        # the text-only sample's text is LaVIN's: "Image: N/A" first; the LLM alone sees those very tokens
        text = model.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
        assert "Image: N/A" in text and "Image: N/A" not in model.tokenizer.decode(batch["input_ids"][1])
        ids = batch["input_ids"][:1]
        by_ids = alone(input_ids=ids, attention_mask=batch["attention_mask"][:1]).logits
        assert torch.allclose(logits[:1], by_ids, atol=1e-5)
        # the test can fail: adapters that act change the logits, and then the modality row matters
        _perturb_adapters(model)
        moved, _, _ = _logits(model, prompts, images)
        assert not torch.allclose(moved, want.logits, atol=1e-3)
        model.modality_embedding.weight[0].normal_()
        again, _, _ = _logits(model, prompts, images)
        assert not torch.allclose(again[0], moved[0], atol=1e-4)  # text-only sample: row 0 routes it
        assert torch.allclose(again[1], moved[1])  # the image sample uses row 1


def test_the_modality_pass_is_lavins_masked_position_0_token():
    """Running the modality token alone gives the logits of LaVIN's layout: the token at position 0 of the
    sequence, masked from every other position, each router reading its state at that layer."""
    model = _tiny()
    _perturb_adapters(model)
    prompts, images = [TEXT_Q, IMAGE_Q], [None, _images(1)[0]]
    with torch.no_grad():
        ours, emb, batch = _logits(model, prompts, images)
        mod = model.modality_embedding(model.modality_ids(batch["has_media"]))[:, None]
        seq = torch.cat([mod, emb], 1)  # [B, 1 + T, d]
        b, t = seq.shape[:2]
        keep = torch.ones(t, t).tril().bool()
        keep[1:, 0] = False  # no token attends to the modality token
        pad = torch.cat([torch.ones(b, 1), batch["attention_mask"].float()], 1).bool()
        mask = (keep[None] & pad[:, None, :])[:, None]  # [B, 1, T', T']
        bias = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        for adapter in model.routed_adapters:
            adapter.router_source = "first_token"  # each layer's routing from position 0 of the sequence
        try:
            pos = torch.arange(t)[None].expand(b, t)
            theirs = model.llm(inputs_embeds=seq, attention_mask=bias, position_ids=pos).logits[:, 1:]
        finally:
            for adapter in model.routed_adapters:
                adapter.router_source = "modality"
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-4)


# -- acceptance: training ----------------------------------------------------------------------------------
def _toy_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, generator=g)
    return {
        "image": [images[0], None, images[1], None],
        "instruction_input": [IMAGE_Q, TEXT_Q, IMAGE_Q, TEXT_Q],
        "answer": ["The answer is A.", "The answer is B.", "The answer is A.", "The answer is B."],
    }


def test_a_mixed_batch_trains_only_the_trainable_set():
    model = _tiny()
    model.train()
    out = model(_toy_batch(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert any(p.grad.abs().sum() > 0 for a in model.vision_adapters for p in a.parameters())
    # at init the two paths are zero, so the routing (and the modality table) gets no gradient yet;
    # once the paths differ, both rows of the table learn: each from its own samples
    model.zero_grad(set_to_none=True)
    _perturb_adapters(model)
    model(_toy_batch(0))["loss"].backward()
    assert model.modality_embedding.weight.grad[0].abs().sum() > 0  # text-only row
    assert model.modality_embedding.weight.grad[1].abs().sum() > 0  # image row
    model.zero_grad(set_to_none=True)
    text_only = {k: [v[1], v[3]] for k, v in _toy_batch(0).items()}
    model(text_only)["loss"].backward()
    # no image in the batch: the tower's adapters still get (zero) gradients, so data-parallel ranks agree
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for a in model.vision_adapters for p in a.parameters())


def test_routing_separates_text_only_and_image_samples_in_training():
    model = _tiny()
    with torch.no_grad():
        model.modality_embedding.weight[0] = model.modality_embedding.weight[1]  # both modalities start alike
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2, weight_decay=0.0)
    model.train()

    def gap() -> float:
        model.eval()
        with torch.no_grad():
            model.route_by_modality(torch.tensor([False, True]))
        model.train()
        return max((w[0] - w[1]).abs().max().item() for w in model.routing_weights().values())

    assert gap() == 0.0
    losses = []
    for step in range(6):
        batch = {k: v[:2] for k, v in _toy_batch(step % 3).items()}  # an image and a text-only sample
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]
    assert gap() > 2e-4  # from exactly 0: each modality's row moved its own way


# -- acceptance: cached decoding ---------------------------------------------------------------------------
def test_cached_decoding_reuses_the_prompts_routing():
    model = _tiny()
    _perturb_adapters(model, std=0.3)
    prompts, images = [TEXT_Q, IMAGE_Q], [None, _images(1)[0]]
    cached = model.generate(images, prompts, max_new_tokens=8, use_cache=True)
    full = model.generate(images, prompts, max_new_tokens=8, use_cache=False)  # the whole prefix every step
    assert cached == full
    routing = {k: v.clone() for k, v in model.routing_weights().items()}
    assert all(v.shape == (2, 2) for v in routing.values())
    with torch.no_grad():
        model.route_by_modality(torch.tensor([False, True]))
    assert all(torch.equal(routing[k], v) for k, v in model.routing_weights().items())
    # beam search repeats each sample per beam: the routing follows its sample
    beams = model.generate(images, prompts, max_new_tokens=4, num_beams=2)
    assert len(beams) == 2


# -- checkpoints -----------------------------------------------------------------------------------------------
def test_the_trainable_set_saves_and_loads_alone(tmp_path):
    from safetensors.torch import load_file

    model = _tiny()
    _perturb_adapters(model)
    with torch.no_grad():
        model.projector.net[0].weight.add_(1.0)
    path = model.save_adapters(str(tmp_path / "adapters"))
    keys = set(load_file(path))
    assert {k.split(".")[0] for k in keys} == {"adapters", "projector", "modality_embedding"}
    fresh = _tiny()  # the same frozen random LLM and tower; the trainable set at init
    fresh.load_checkpoint(str(tmp_path / "adapters"))
    own = dict(fresh.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(own[name], p), name
    prompts, images = [TEXT_Q, IMAGE_Q], [None, _images(1)[0]]
    assert model.generate(images, prompts, max_new_tokens=4) == fresh.generate(images, prompts, max_new_tokens=4)


# -- presets on the meta device ---------------------------------------------------------------------------------
def mma_params(dim: int, bottleneck: int = 8) -> int:
    down = dim * bottleneck + bottleneck
    paths = 2 * (dim * bottleneck // 2 + dim)  # two grouped (groups 2) up-projections with biases
    router = dim * 2 + 2
    return down + paths + router


def lavin_trainable(llm_dim: int, llm_layers: int, clip_dim: int = 1024, clip_layers: int = 24) -> int:
    projector = clip_dim * 128 + 128 + 128 * llm_dim + llm_dim
    return llm_layers * mma_params(llm_dim) + clip_layers * mma_params(clip_dim) + projector + 2 * llm_dim


@pytest.mark.parametrize("model_type,dim,layers", [("llama7b", 4096, 32), ("phi2", 2560, 32)])
def test_real_presets_have_lavins_trainable_count(model_type, dim, layers, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))  # nothing to read: shapes only
    m = load_model("lavin", model_type, device="meta")
    assert all(p.is_meta for p in m.parameters())
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable == lavin_trainable(dim, layers)
    assert m.num_image_tokens() == 6
    if model_type == "llama7b":
        assert trainable == pytest.approx(3.8e6, abs=0.1e6)  # LaVIN-7B's published 3.8M
        assert trainable == 3_781_296
    else:
        assert trainable == 2_597_040  # docs/lavin.md


def test_toy_twins_of_the_real_presets_build_and_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))
    m = load_model("lavin", "llama7b", is_eval=True, overrides={"scale": "toy", "ckpt": None})
    assert m.llm.hidden_size == 32 and m.num_image_tokens() == 2
    assert len(m.generate(torch.randn(1, 3, 224, 224), [IMAGE_Q], max_new_tokens=2)) == 1


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None,
    reason="4-bit loading is possible on this machine",
)
def test_four_bit_llm_is_a_clear_error_without_cuda_or_bitsandbytes(tmp_path):
    with pytest.raises(RuntimeError, match=r"llm\.low_resource \(low_resource_bits=4\): 4-bit loading is impossible"):
        load_model("lavin", "tiny", overrides={"llm": {"low_resource": True}})
    from minigpt.models.parts.llms.hf_causal_lm import SHIPPED_TOKENIZER, HFCausalLM

    with pytest.raises(RuntimeError, match="4-bit loading is impossible"):
        HFCausalLM(pretrained=str(tmp_path), tokenizer=SHIPPED_TOKENIZER, low_resource=True, low_resource_bits=4)
    with pytest.raises(ValueError, match="low_resource_bits must be 8 or 4"):
        HFCausalLM(pretrained=str(tmp_path), tokenizer=SHIPPED_TOKENIZER, low_resource=True, low_resource_bits=2)


def test_four_bit_option_asks_transformers_for_nf4_weights(monkeypatch):
    """Where CUDA and bitsandbytes exist, ``low_resource_bits: 4`` asks for NF4 weights on ``device_8bit``
    (the load itself needs a GPU: not run here)."""
    from minigpt.models.parts.llms import hf_causal_lm

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    kwargs = hf_causal_lm._low_resource_kwargs(1, 4)
    quant = kwargs["quantization_config"]
    assert quant.load_in_4bit and not quant.load_in_8bit and quant.bnb_4bit_quant_type == "nf4"
    assert kwargs["device_map"] == {"": 1}
    assert hf_causal_lm._low_resource_kwargs(0, 8)["quantization_config"].load_in_8bit
