"""Random-weight builds of meta-built models (minigpt/models/weights/random_init.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from shared_helpers import TOY_REAL_WIDTHS
from torch import nn

from minigpt.models import load_model
from minigpt.models.weights.random_init import (
    build_random,
    fill_pseudo_random,
    materialize_random,
    rebuild_buffers,
)

# TinyGPT-V's real composition (EVA ViT with its fixed key bias -> Q-Former -> linears -> Phi with
# rotary tables, LoRA and TinyGPT-V's norms) at toy widths and two blocks each, built without any weight file
TOY_REAL = OmegaConf.to_container(
    OmegaConf.merge(
        TOY_REAL_WIDTHS,
        {
            "vision_encoder": {"pretrained": None, "precision": "fp32", "depth": 2},
            "projector": {"pretrained": None},
            "llm": {"pretrained": None, "torch_dtype": "float32", "config": {"num_hidden_layers": 2}},
        },
    )
)


def _samples(model, n: int = 2):
    size = model.vision_encoder.image_size
    return {
        "image": torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3)),
        "instruction_input": ["<Img><ImageHere></Img> Describe this image in detail."] * n,
        "answer": ["a red circle and a blue square"] * n,
    }


@pytest.mark.parametrize("model_type,overrides", [("tiny", {}), ("stage1_2_3", TOY_REAL)])
def test_build_random_gives_a_working_model_with_the_meta_build_shapes(
    model_type, overrides, tmp_path, monkeypatch
):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))  # empty: no weight file can be read
    shapes = load_model("tinygptv", model_type, device="meta", overrides=overrides)
    model = build_random("tinygptv", model_type, "cpu", overrides)
    assert model.training
    got = {n: (tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()}
    assert got == {n: (tuple(p.shape), p.dtype, p.requires_grad) for n, p in shapes.named_parameters()}
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if p.ndim == 1 and "norm" in name.lower():
            assert torch.all(p == (1.0 if name.endswith("weight") else 0.0)), name
    weights = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if p.ndim == 2])
    assert 0.015 < float(weights.std()) < 0.025 and abs(float(weights.mean())) < 0.002
    out = model(_samples(model))
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "model_type,overrides,kinds",
    [("stage1_2_3", TOY_REAL, ("inv_freq", "k_bias")), ("tiny", {}, ("inv_freq", "running_var"))],
)
def test_buffers_equal_a_normally_built_model(model_type, overrides, kinds, tmp_path, monkeypatch):
    """Rotary tables, EVA's zero key bias and BatchNorm statistics come out as an ordinary build has them."""
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))
    normal = load_model("tinygptv", model_type, overrides=overrides)
    rand = build_random("tinygptv", model_type, "cpu", overrides)
    normal_buffers = dict(normal.named_buffers())
    rand_buffers = dict(rand.named_buffers())
    assert set(rand_buffers) == set(normal_buffers)
    assert all(any(n.endswith(kind) for n in rand_buffers) for kind in kinds)
    for name, buf in normal_buffers.items():
        assert torch.equal(rand_buffers[name], buf), name


def test_the_fill_is_seeded_and_the_same_in_every_dtype():
    a, b, c = (nn.Linear(700, 3000) for _ in range(3))  # 2.1 M weights: the block repeats
    fill_pseudo_random(a, seed=5)
    fill_pseudo_random(b, seed=5)
    fill_pseudo_random(c, seed=6)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    half = nn.Linear(700, 3000).to(torch.bfloat16)
    fill_pseudo_random(half, seed=5)
    assert torch.equal(half.weight, a.weight.to(torch.bfloat16))


def test_an_unknown_buffer_is_an_error_naming_its_module():
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("running_thing", torch.zeros(3))

    model = nn.Sequential(nn.Linear(2, 2), WithState())
    with pytest.raises(
        ValueError, match=r"^1: no rule to initialise buffers \['running_thing'\] of a meta-built WithState"
    ):
        rebuild_buffers(model)


def test_materialize_random_allocates_a_meta_module():
    with torch.device("meta"):
        lin = nn.Linear(4, 5)
    assert lin.weight.is_meta
    materialize_random(lin, "cpu")
    assert (
        lin.weight.device.type == "cpu"
        and torch.isfinite(lin.weight).all()
        and float(lin.weight.detach().abs().sum()) > 0
    )
