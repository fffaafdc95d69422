"""Model parts on their own: the tiny ViT and the projectors."""

import pytest
import torch

from minigpt.common.registry import registry
from minigpt.models.parts.projectors import ConcatLinearProjector
from minigpt.models.parts.vision_encoders.tiny_vit import TinyViTEncoder, sincos_2d


def test_tiny_vit_tokens_and_position_code():
    enc = TinyViTEncoder(image_size=64, patch_size=8, width=64, depth=1, num_heads=4).eval()
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 64, 64) and enc.num_tokens == 64
    code = torch.nn.functional.normalize(sincos_2d(8, 64), dim=1)
    assert float(code[0] @ code[1]) > float(code[0] @ code[63])  # neighbours closer than far corners
    assert len({tuple(r.tolist()) for r in code.round(decimals=4)}) == 64  # every cell distinct
    with pytest.raises(ValueError, match="multiple of patch_size"):
        TinyViTEncoder(image_size=60, patch_size=8)
    with pytest.raises(ValueError, match="stem_norm"):
        TinyViTEncoder(stem_norm="layer")


def test_concat_projector_merges_the_right_tokens():
    # identity-like check: with a projection that picks one input slot, output token j of the
    # square layout must come from the 2x2 block j, in raster order of blocks
    proj = ConcatLinearProjector(in_dim=1, out_dim=4, group=4, layout="square")
    with torch.no_grad():
        proj.proj.weight.copy_(torch.eye(4))
        proj.proj.bias.zero_()
    x = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)  # a 4x4 grid of token ids
    out = proj(x)[0]
    assert out.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    seq = ConcatLinearProjector(in_dim=1, out_dim=4, group=4, layout="sequence")
    with torch.no_grad():
        seq.proj.weight.copy_(torch.eye(4))
        seq.proj.bias.zero_()
    assert seq(x)[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    with pytest.raises(ValueError, match="not divisible"):
        seq(torch.zeros(1, 6, 1))


@pytest.mark.parametrize("name", ["linear", "mlp", "concat_linear"])
def test_every_projector_maps_to_the_llm_width(name):
    proj = registry.get_projector_class(name)(in_dim=32, out_dim=48, out_norm=True)
    out = proj(torch.randn(2, 16, 32))
    assert out.shape == (2, proj.num_output_tokens(16), 48)


def test_mlp_projector_takes_lavins_silu():
    from minigpt.models.parts.projectors import MLPProjector

    proj = MLPProjector(16, 8, hidden_dim=4, activation="silu")
    assert isinstance(proj.net[1], torch.nn.SiLU) and proj(torch.randn(2, 3, 16)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="projector.activation must be one of gelu, silu"):
        MLPProjector(16, 8, activation="relu")


def test_linear_projector_bias_free_with_dropout_as_mm_llama():
    from minigpt.models.parts.projectors import LinearProjector

    proj = LinearProjector(1024, 64, bias=False, dropout=0.1)
    assert proj.proj.bias is None and proj.dropout.p == 0.1
    x = torch.randn(4, 1, 1024)
    proj.train()
    assert not torch.equal(proj(x), proj(x))  # dropout draws anew in training
    proj.eval()
    assert torch.equal(proj(x), proj(x)) and proj(x).shape == (4, 1, 64)
    assert LinearProjector(8, 4).proj.bias is not None  # MiniGPT-4's llama_proj keeps its bias
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        LinearProjector(8, 4, dropout=1.0)
