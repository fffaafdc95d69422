"""One LoRA A shared by q/k/v (TinyGPT-V's LoRA on the fused query_key_value): training, saving, loading."""

from __future__ import annotations

import torch

from minigpt.models import load_model
from minigpt.models.weights.checkpoint import load_trained, save_trained

SHARED = {"llm": {"lora_r": 4, "lora_share_qkv_a": True, "freeze": True, "trainable_norms": True,
                  "trainable_norm_bias": False}}
IMG = "<Img><ImageHere></Img>"


def _step(model):
    g = torch.Generator().manual_seed(0)
    out = model({"image": torch.randn(2, 3, 64, 64, generator=g), "instruction_input": [f"{IMG} a?", f"{IMG} b?"],
                 "answer": ["red", "blue"]})
    out["loss"].backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.5)
    model.zero_grad(set_to_none=True)


def test_the_shared_a_trains_as_one_tensor_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", overrides=SHARED)
    attn = model.llm.model.base_model.model.model.layers[0].self_attn
    a = attn.q_proj.lora_A["default"].weight
    assert attn.k_proj.lora_A["default"].weight is a and attn.v_proj.lora_A["default"].weight is a
    norms = [n for n, p in model.llm.named_parameters() if p.requires_grad and "lora_" not in n]
    assert norms and all(n.endswith(".weight") for n in norms)  # norm weights train, biases do not
    _step(model)
    _step(model)  # B moves away from zero on the first step, A on the second
    assert attn.k_proj.lora_A["default"].weight is a and a.abs().sum() > 0
    save_trained(model, str(tmp_path / "ck"))
    torch.manual_seed(0)  # the same frozen base weights; the checkpoint holds what trained
    fresh = load_model("tinygptv", "tiny", overrides=SHARED)
    loaded, unexpected = load_trained(fresh, str(tmp_path / "ck"))
    assert unexpected == []
    fattn = fresh.llm.model.base_model.model.model.layers[0].self_attn
    assert torch.equal(fattn.q_proj.lora_A["default"].weight, a)
    assert fattn.k_proj.lora_A["default"].weight is fattn.q_proj.lora_A["default"].weight
    model.eval()
    fresh.eval()
    batch = {"image": torch.zeros(1, 3, 64, 64), "instruction_input": [f"{IMG} c?"], "answer": ["green"]}
    with torch.no_grad():
        assert torch.equal(model(batch)["loss"], fresh(batch)["loss"])
