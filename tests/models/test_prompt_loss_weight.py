"""MM-LLaMA's stage-2 loss: prompt tokens weighted ``model.prompt_loss_weight``, over ``model.loss_normaliser``.

The reference is MM-LLaMA's ``compute_finetune_loss`` written out on the full logits: a loss mask of
-1 (prompt), 1 (completion) and 0 (padding) over the ``[B, T-1]`` next-token positions, weights
``w`` / 1 / 0, each sample's weighted cross-entropy averaged over the padded length, then the batch mean.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minigpt.common.constants import IGNORE_INDEX
from minigpt.models import load_model

IMG = "<Img><ImageHere></Img>"
SAMPLES = {
    "instruction_input": [
        f"{IMG} What colour is the circle?",
        "hello there, how are you today?",  # text only, shorter: padding in the batch
        [f"{IMG} How many shapes?", "And which one is largest?"],  # the first answer is prompt (supervise: last)
    ],
    "answer": ["a red circle", "fine", ["two", "the blue square on the left"]],
}


def _images() -> list:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, 64, 64, generator=g), None, torch.randn(3, 64, 64, generator=g)]


def _model(**overrides):
    torch.manual_seed(0)
    return load_model("mm_llama", "tiny", overrides={"supervise": "last", **overrides}).eval()


def _reference(model, w: float, normaliser: str) -> torch.Tensor:
    """MM-LLaMA's formula on logits at every position."""
    ins, ans = SAMPLES["instruction_input"], SAMPLES["answer"]
    media = model.gather(_images(), model.layout.slot_kinds(ins, ans))
    batch = model.build_inputs(ins, ans, model.media_lengths(media))
    logits = model.llm(inputs_embeds=model.embed_media(batch, media), attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[:, :-1].float()  # [B, T-1, V]
    labels, ids = batch["labels"][:, 1:], batch["input_ids"][:, 1:]
    text = batch["attention_mask"][:, 1:].bool() & ~batch["media_mask"][:, 1:]
    mask = torch.zeros_like(labels)  # 1 completion, -1 prompt, 0 padding (and media slots, which carry no token)
    mask[text] = -1
    mask[labels != IGNORE_INDEX] = 1
    # every prompt token of a sample: its attended text less the first token, its media slot and its answer
    n_prompt = (mask == -1).sum(1)
    expected = batch["attention_mask"].sum(1) - 1 - batch["media_mask"].sum(1) - (labels != IGNORE_INDEX).sum(1)
    assert torch.equal(n_prompt, expected) and int(n_prompt.min()) > 5
    targets = torch.where(labels != IGNORE_INDEX, labels, ids).masked_fill(mask == 0, 0)  # weight 0 there
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    weights = torch.zeros_like(ce).masked_fill(mask == -1, w).masked_fill(mask == 1, 1.0)
    if normaliser == "positions":  # MM-LLaMA: mean over the padded length, then over the samples
        return (ce * weights).mean(1).mean()
    return (ce * weights).sum() / (mask == 1).sum()


@pytest.mark.parametrize("w,normaliser", [(0.05, "positions"), (0.05, "answer_tokens"), (0.0, "positions"),
                                          (0.5, "answer_tokens")])
def test_the_loss_is_mm_llamas_weighted_sum_over_its_normaliser(w, normaliser):
    model = _model(prompt_loss_weight=w, loss_normaliser=normaliser)
    # the first loss takes the LM head on the counted positions only (where transformers reads a boolean mask)
    with torch.no_grad():
        got = model({**SAMPLES, "image": _images()})
        model.loss_on_label_positions = False  # the same through logits at every position
        full = model({**SAMPLES, "image": _images()})["loss"]
        expected = _reference(model, w, normaliser)
    torch.testing.assert_close(got["loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-6)


def test_weight_zero_is_the_plain_answer_loss_and_prompt_tokens_move_it():
    plain = _model()
    assert (plain.prompt_loss_weight, plain.loss_normaliser) == (0.0, "answer_tokens")
    with torch.no_grad():
        base = plain({**SAMPLES, "image": _images()})
        weighted = _model(prompt_loss_weight=0.05)({**SAMPLES, "image": _images()})
    torch.testing.assert_close(base["loss"], _reference(plain, 0.0, "answer_tokens"), rtol=1e-5, atol=1e-6)
    assert float(weighted["loss"]) > float(base["loss"]) + 1e-3  # the prompt's cross-entropy adds in
    assert int(weighted["n_tokens"]) == int(base["n_tokens"]) and int(weighted["n_correct"]) == int(base["n_correct"])


def test_gradients_reach_the_trainable_parts_on_both_paths():
    model = _model(prompt_loss_weight=0.05, loss_normaliser="positions").train()
    grads = []
    for on_labels in (True, False):
        model.loss_on_label_positions = on_labels
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # the same dropout masks
        model({**SAMPLES, "image": _images()})["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "projector.proj.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("key,value,match", [
    ("prompt_loss_weight", -0.1, r"model\.prompt_loss_weight must be a number >= 0"),
    ("prompt_loss_weight", "lots", r"model\.prompt_loss_weight must be a number >= 0"),
    ("loss_normaliser", "tokens", r"model\.loss_normaliser must be one of answer_tokens, positions, got 'tokens'"),
])
def test_bad_values_are_named(key, value, match):
    with pytest.raises(ValueError, match=match):
        load_model("mm_llama", "tiny", overrides={key: value})
