"""``llm.fused_gelu``: Phi's ``gelu_new`` runs as torch's one-kernel tanh GELU, with the same outputs."""

from __future__ import annotations

import torch
from transformers.activations import NewGELUActivation

from minigpt.models.parts.llms.hf_causal_lm import HFCausalLM

PHI = dict(
    model_type="phi",
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    hidden_act="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attention_dropout=0.0,
)


def _pair(**kw):
    torch.manual_seed(0)
    fused = HFCausalLM(config=PHI, fused_gelu=True, **kw)
    stock = HFCausalLM(config=PHI, fused_gelu=False, **kw)
    stock.load_state_dict(fused.state_dict())
    return fused, stock


def _acts(model):
    return [m for m in model.modules() if isinstance(m, (NewGELUActivation, torch.nn.GELU))]


def test_gelu_new_is_replaced_and_the_config_keeps_its_name():
    fused, stock = _pair()
    assert all(type(a) is torch.nn.GELU and a.approximate == "tanh" for a in _acts(fused)) and len(_acts(fused)) == 2
    assert all(type(a) is NewGELUActivation for a in _acts(stock)) and len(_acts(stock)) == 2
    assert fused.causal_lm.config.hidden_act == "gelu_new"  # saved and exported configs are unchanged


def test_same_logits_loss_and_grads_as_transformers_module():
    fused, stock = _pair()
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (fused, stock):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        outs.append((out.logits.detach(), out.loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (lf, lossf, gf), (ls, losss, gs) = outs
    torch.testing.assert_close(lf, ls, rtol=0, atol=1e-5)
    torch.testing.assert_close(lossf, losss, rtol=0, atol=1e-6)
    for name, g in gf.items():
        torch.testing.assert_close(g, gs[name], rtol=1e-4, atol=1e-6, msg=name)


def test_with_lora_the_activation_inside_peft_is_replaced_too():
    fused, _ = _pair(lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    assert len(_acts(fused)) == 2 and all(type(a) is torch.nn.GELU for a in _acts(fused))
