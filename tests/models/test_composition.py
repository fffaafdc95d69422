"""The composition's extension points: several images per sample, text-only mixing, adapters, heads, precision."""

from __future__ import annotations

import pytest
import torch
from shared_helpers import assert_trains_vision_encoder

from minigpt.common.constants import IGNORE_INDEX
from minigpt.common.precision import autocast
from minigpt.common.registry import registry
from minigpt.models import load_model
from minigpt.models.composition.heads import OutputHead
from minigpt.models.composition.layout import position_ids_from_mask

IMG = "<Img><ImageHere></Img>"
TWO = f"{IMG} and {IMG} [vqa] which picture holds the circle?"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tinygptv", "tiny", is_eval=True)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_two_images_in_one_sample_land_in_their_slots_in_order(model):
    pics = _images(3)
    batch = model.build_inputs([TWO, f"{IMG} one"], None, model.num_image_tokens(), "left")
    assert batch["media_counts"].tolist() == [2, 1]
    emb = model.embed(batch, [pics[:2], pics[2]])
    want = model.encode_images(pics)  # [3, N, D]
    assert torch.allclose(emb[0][batch["media_mask"][0]], want[:2].flatten(0, 1))
    assert torch.allclose(emb[1][batch["media_mask"][1]], want[2])


def test_a_sample_with_two_images_trains_and_generates(model):
    assert_trains_vision_encoder(model, {"image": [_images(2)], "instruction_input": [TWO], "answer": ["the second"]})
    texts = model.generate([_images(2), None], [TWO, "hello"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_slot_and_image_counts_must_agree(model):
    with pytest.raises(ValueError, match=r"sample 0: 2 <ImageHere> slot\(s\) in the text but 1 image"):
        model({"image": [_images(1)], "instruction_input": [TWO], "answer": ["x"]})
    with pytest.raises(ValueError, match="batched image tensor holds one image per sample"):
        model({"image": _images(1), "instruction_input": [TWO], "answer": ["x"]})


def test_text_only_and_image_samples_mix_and_equal_their_separate_losses(model):
    pics = _images(1, seed=3)
    with_img = {"image": pics, "instruction_input": [f"{IMG} colour?"], "answer": ["red"]}
    text = {"image": None, "instruction_input": ["two plus two?"], "answer": ["four"]}
    mixed = {"image": [pics[0], None], "instruction_input": [f"{IMG} colour?", "two plus two?"], "answer": ["red", "four"]}
    with torch.no_grad():
        a, b, m = model(with_img), model(text), model(mixed)
    # the mixed loss is the token-weighted mean of the two
    na, nb = int(a["n_tokens"]), int(b["n_tokens"])
    assert torch.allclose(m["loss"], (a["loss"] * na + b["loss"] * nb) / (na + nb), atol=1e-5)


def test_a_text_only_training_step_still_gives_every_trainable_parameter_a_gradient(model):
    model.train()
    try:
        out = model({"image": None, "instruction_input": ["two plus two?"], "answer": ["four"]})
        out["loss"].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []  # what DDP with find_unused_parameters=False needs
        assert all(p.grad.abs().sum() == 0 for p in model.projector.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_layout_positions_count_from_the_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_generation_prompts_are_never_cut_training_samples_are(model):
    long = f"{IMG} " + "very " * 200 + "long question?"
    gen = model.build_generation_inputs([long])
    train = model.build_inputs([long], ["yes"], model.num_image_tokens())
    n_img = model.num_image_tokens()
    assert int(gen["attention_mask"].sum()) > model.max_txt_len + n_img
    assert int(train["attention_mask"].sum()) == model.max_txt_len + n_img - 1


ADAPTERS = [{"name": "bottleneck", "part": "llm", "targets": "model.model.layers.*.mlp", "bottleneck": 4}]


def test_adapters_start_as_identity_train_alone_and_save_alone(tmp_path):
    torch.manual_seed(0)
    plain = load_model("tinygptv", "tiny", is_eval=True)
    torch.manual_seed(0)
    adapted = load_model("tinygptv", "tiny", is_eval=True, overrides={"adapters": ADAPTERS})
    assert len(adapted.adapters) == 3  # one per LLM layer
    samples = {"image": _images(1), "instruction_input": [f"{IMG} colour?"], "answer": ["red"]}
    with torch.no_grad():
        assert torch.equal(plain(samples)["loss"], adapted(samples)["loss"])
    with torch.no_grad():
        for p in adapted.adapters.parameters():  # random: a shift shared by all features is normed away
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
        changed = adapted(samples)["loss"]
    assert not torch.equal(changed, plain(samples)["loss"])
    assert all(a.context["has_media"].tolist() == [True] for a in adapted.adapters.values())
    adapted.save_adapters(str(tmp_path / "adapters"))
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapters" / "trained.safetensors"))
    assert saved and all(k.startswith("adapters.") for k in saved)
    torch.manual_seed(0)
    fresh = load_model("tinygptv", "tiny", is_eval=True, overrides={"adapters": ADAPTERS})
    fresh.load_checkpoint(str(tmp_path / "adapters"))
    with torch.no_grad():
        assert torch.equal(fresh(samples)["loss"], changed)


def test_adapter_placement_errors_name_the_entry():
    with pytest.raises(ValueError, match=r"adapters\[0\]: no sub-module of llm matches targets='nothing\.\*'"):
        load_model("tinygptv", "tiny", overrides={"adapters": [{"name": "bottleneck", "targets": "nothing.*"}]})
    with pytest.raises(Exception, match="unknown adapter name 'bottlenek'.*Did you mean: bottleneck"):
        load_model("tinygptv", "tiny", overrides={"adapters": [{"name": "bottlenek", "targets": "x"}]})


class _MeanHiddenHead(OutputHead):
    """Regresses the mean last hidden state of samples with an image onto 1.0 (a test head)."""

    def __init__(self, hidden_size: int, weight: float = 1.0) -> None:
        super().__init__(hidden_size, weight)
        self.proj = torch.nn.Linear(hidden_size, 1)

    def loss(self, hidden, batch, samples):
        rows = batch["has_media"]
        if not rows.any():
            return None
        pred = self.proj(hidden[rows].mean(1)).squeeze(-1)
        return ((pred - 1.0) ** 2).mean()


@pytest.fixture
def mean_head():
    registry.register_head("test_mean_hidden")(_MeanHiddenHead)
    yield
    registry.unregister("head", "test_mean_hidden")


def test_a_head_adds_its_weighted_loss_and_its_parameters_always_get_gradients(mean_head):
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", overrides={"heads": {"test_mean_hidden": {"weight": 0.5}}})
    samples = {"image": _images(1), "instruction_input": [f"{IMG} colour?"], "answer": ["red"]}
    out = model(samples)
    assert torch.allclose(out["loss"], out["lm_loss"] + 0.5 * out["test_mean_hidden_loss"])
    out["loss"].backward()
    assert model.output_heads["test_mean_hidden"].proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    text = model({"image": None, "instruction_input": ["hi"], "answer": ["there"]})
    assert float(text["test_mean_hidden_loss"]) == 0.0
    text["loss"].backward()
    grad = model.output_heads["test_mean_hidden"].proj.weight.grad
    assert grad is not None and grad.abs().sum() == 0


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_the_runs_precision_alone_decides_the_dtype_at_the_llm(model, precision, dtype):
    seen = []
    layer = model.llm.causal_lm.model.layers[0].mlp.fc1
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out.dtype) and None)
    try:
        with torch.no_grad(), autocast(precision, "cpu"):
            model({"image": _images(1), "instruction_input": [f"{IMG} colour?"], "answer": ["red"]})
    finally:
        handle.remove()
    assert seen and set(seen) == {dtype}


def test_loss_only_on_answers(model):
    batch = model.build_inputs(["q?"], ["a b"], model.num_image_tokens())
    assert (batch["labels"] != IGNORE_INDEX).sum() == len(model.layout.tokenize([" a b"])[0]) + 1


def test_precomputed_features_are_a_media_kind_and_mix_with_text_only_samples():
    torch.manual_seed(0)
    overrides = {
        "vision_encoder": {"name": "precomputed", "dim": 32, "tokens": 4},
        "projector": {"name": "linear", "out_norm": True},
    }
    model = load_model("tinygptv", "tiny", overrides=overrides)
    assert model.num_image_tokens() == 4
    feats = [torch.randn(4, 32), None, [torch.randn(4, 32), torch.randn(4, 32)]]
    prompts = [f"{IMG} what moves?", "one plus one?", TWO]
    out = model({"image": feats, "instruction_input": prompts, "answer": ["the circle", "two", "the first"]})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.projector.proj.weight.grad.abs().sum() > 0
    model.eval()
    assert len(model.generate(feats, prompts, max_new_tokens=3)) == 3
    with pytest.raises(ValueError, match=r"precomputed features must be \[B, 4, 32\]"):
        model({"image": [torch.randn(5, 32)], "instruction_input": [prompts[0]], "answer": ["x"]})


def test_streaming_runs_under_the_given_precision_in_its_thread(model):
    seen = []
    layer = model.llm.causal_lm.model.layers[0].mlp.fc1
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out.dtype) and None)
    try:
        "".join(model.stream_generate(_images(1)[0], f"{IMG} colour?", max_new_tokens=2, precision="bf16"))
        bf16 = set(seen)
        seen.clear()
        with autocast("bf16", "cpu"):  # no precision given: the caller's autocast carries into the thread
            stream = model.stream_generate(_images(1)[0], f"{IMG} colour?", max_new_tokens=2)
        "".join(stream)
        carried = set(seen)
    finally:
        handle.remove()
    assert bf16 == {torch.bfloat16} and carried == {torch.bfloat16}
