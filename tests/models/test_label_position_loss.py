"""The LM head on label positions only: the same loss and gradients as logits at every position."""

from __future__ import annotations

import pytest
import torch

from minigpt.models import load_model
from minigpt.runners.runner_iter import enable_grad_checkpointing

IMG = "<Img><ImageHere></Img>"
SAMPLES = {
    "instruction_input": [
        f"{IMG} [vqa] what color is the circle?",
        "hello there, how are you today?",  # text only
        [f"{IMG} [vqa] how many shapes?", "and which one is largest?"],  # two turns, two answers
    ],
    "answer": ["a red circle", "fine", ["two", "the blue square on the left"]],
}


def _images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _loss_and_grads(model, on_labels: bool, autocast: bool = False):
    model.loss_on_label_positions = on_labels
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks (LoRA dropout) in both runs
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        loss = model({**SAMPLES, "image": _images()})["loss"]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_same(model, rtol=1e-5, atol=1e-6, loss_tol=1e-5, autocast=False):
    loss_a, grads_a = _loss_and_grads(model, True, autocast)
    loss_b, grads_b = _loss_and_grads(model, False, autocast)
    assert torch.isfinite(loss_a)
    assert abs(float(loss_a) - float(loss_b)) <= loss_tol
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


def _model(**llm):
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", overrides={"llm": llm} if llm else None)
    return model.train()


def test_same_loss_and_grads_as_full_logits():
    _assert_same(_model())


def test_same_with_lora_on_the_tinygptv_phi_variant():
    model = _model(lora_r=4, phi_variant="tinygptv", freeze=True, trainable_norms=True)
    assert type(model.llm.model).__name__.startswith("Peft")
    _assert_same(model)


def test_same_with_gradient_checkpointing():
    model = _model()
    assert "llm.model" in enable_grad_checkpointing(model)
    _assert_same(model)


def test_same_under_bf16_autocast():
    # bf16 matmuls on differently shaped inputs may round differently: a bf16-sized tolerance
    _assert_same(_model(), rtol=2e-2, atol=2e-3, loss_tol=2e-2, autocast=True)


def test_the_lm_head_sees_only_the_labelled_positions():
    model = _model()
    if not model.llm.supports_logits_mask:
        pytest.skip("this transformers release reads no boolean logits_to_keep mask (5.21 on do)")
    rows = []
    head = model.llm.causal_lm.get_output_embeddings()
    handle = head.register_forward_hook(
        lambda m, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    try:
        out = model({**SAMPLES, "image": _images()})
        model.loss_on_label_positions = False
        model({**SAMPLES, "image": _images()})
    finally:
        handle.remove()
    batch = model.build_inputs(SAMPLES["instruction_input"], SAMPLES["answer"], model.num_image_tokens())
    assert rows[0] == int(out["n_tokens"]) == int((batch["labels"][:, 1:] != -100).sum())
    assert rows[1] == batch["input_ids"].numel()  # the fallback computes every position


def test_config_switch_turns_it_off():
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", overrides={"loss_on_label_positions": False})
    assert model.loss_on_label_positions is False
    assert load_model("tinygptv", "tiny").loss_on_label_positions is True


def test_a_model_that_ignores_the_mask_is_a_clear_error(monkeypatch):
    model = _model()
    if not model.llm.supports_logits_mask:
        pytest.skip("this transformers release reads no boolean logits_to_keep mask (5.21 on do)")
    real = model.llm.forward

    def full_logits(**kwargs):
        kwargs.pop("logits_to_keep", None)
        return real(**kwargs)

    monkeypatch.setattr(model.llm, "forward", full_logits)
    with pytest.raises(RuntimeError, match="loss_on_label_positions: false"):
        model({**SAMPLES, "image": _images()})
