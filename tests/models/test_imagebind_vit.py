"""ImageBind's vision branch: published size, the released key layout, and its computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minigpt.common.registry import registry
from minigpt.models.parts.vision_encoders.imagebind_vit import ImageBindViTEncoder

# imagebind_huge()'s vision branch in facebookresearch/ImageBind (imagebind/models/imagebind_model.py),
# counted from its shapes: the entries of imagebind_huge.pth's modality_{preprocessors,trunks,heads}.vision keys
IMAGEBIND_HUGE_VISION = 632_829_440

TOY = dict(image_size=28, patch_size=14, frames=2, width=32, depth=2, num_heads=4, out_dim=16)


def test_meta_build_has_imagebind_huge_vision_size():
    with torch.device("meta"):
        enc = registry.get_vision_encoder_class("imagebind_vit").from_config({"name": "imagebind_vit"})
    assert sum(p.numel() for p in enc.parameters()) == IMAGEBIND_HUGE_VISION
    assert (enc.width, enc.depth, enc.out_dim, enc.num_tokens) == (1280, 32, 1024, 1)
    assert tuple(enc.patch_embed.weight.shape) == (1280, 3, 2, 14, 14)
    assert tuple(enc.pos_embed.shape) == (1, 257, 1280)


def released_state(width: int, depth: int, out: int, grid: int, seed: int = 0) -> dict:
    """Random tensors under the key names and shapes of imagebind_huge.pth's vision branch, plus other modalities'."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    pre, trunk, head = "modality_preprocessors.vision.", "modality_trunks.vision.", "modality_heads.vision."
    sd = {
        pre + "cls_token": r(1, 1, width),
        pre + "rgbt_stem.proj.1.weight": r(width, 3, 2, 14, 14),
        pre + "pos_embedding_helper.pos_embed": r(1, 1 + grid * grid, width),
        trunk + "pre_transformer_layer.0.weight": 1 + r(width),
        trunk + "pre_transformer_layer.0.bias": r(width),
        head + "0.weight": 1 + r(width),
        head + "0.bias": r(width),
        head + "2.weight": r(out, width),
        # other modalities of the joint checkpoint: known, not loaded
        "modality_trunks.text.blocks.0.attn.in_proj_weight": r(3 * 8, 8),
        "modality_postprocessors.text.1.log_logit_scale": r(()),
    }
    for i in range(depth):
        b = f"{trunk}blocks.{i}."
        sd.update(
            {
                b + "attn.in_proj_weight": r(3 * width, width),
                b + "attn.in_proj_bias": r(3 * width),
                b + "attn.out_proj.weight": r(width, width),
                b + "attn.out_proj.bias": r(width),
                b + "norm_1.weight": 1 + r(width),
                b + "norm_1.bias": r(width),
                b + "norm_2.weight": 1 + r(width),
                b + "norm_2.bias": r(width),
                b + "mlp.fc1.weight": r(4 * width, width),
                b + "mlp.fc1.bias": r(4 * width),
                b + "mlp.fc2.weight": r(width, 4 * width),
                b + "mlp.fc2.bias": r(width),
            }
        )
    return sd


def reference_embedding(sd: dict, clips: torch.Tensor, heads: int, depth: int) -> torch.Tensor:
    """ImageBind's vision computation written with torch's own modules (nn.MultiheadAttention as ImageBind uses)."""
    pre, trunk, head = "modality_preprocessors.vision.", "modality_trunks.vision.", "modality_heads.vision."
    w = sd[pre + "cls_token"].shape[-1]
    ln = lambda x, p: nn.functional.layer_norm(x, (w,), sd[p + "weight"], sd[p + "bias"], eps=1e-6)  # noqa: E731
    x = nn.functional.conv3d(clips, sd[pre + "rgbt_stem.proj.1.weight"], stride=(2, 14, 14)).flatten(2).transpose(1, 2)
    x = torch.cat([sd[pre + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[pre + "pos_embedding_helper.pos_embed"]
    x = ln(x, trunk + "pre_transformer_layer.0.")
    for i in range(depth):
        b = f"{trunk}blocks.{i}."
        mha = nn.MultiheadAttention(w, heads, bias=True, batch_first=True)
        mha.load_state_dict({k[len(b + "attn.") :]: v for k, v in sd.items() if k.startswith(b + "attn.")})
        h = ln(x, b + "norm_1.")
        x = x + mha(h, h, h, need_weights=False)[0]
        h = nn.functional.linear(ln(x, b + "norm_2."), sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])
        x = x + nn.functional.linear(nn.functional.gelu(h), sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    x = ln(x, head + "0.")[:, 0] @ sd[head + "2.weight"].T
    return nn.functional.normalize(x, dim=-1)


def test_released_key_layout_loads_and_computes_as_imagebind(tmp_path):
    sd = released_state(TOY["width"], TOY["depth"], TOY["out_dim"], grid=2)
    path = tmp_path / "imagebind_huge.pth"
    torch.save(sd, path)
    enc = ImageBindViTEncoder(**TOY, pretrained=str(path)).eval()
    report = enc.load_report
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.ignored) == sorted(k for k in sd if ".vision." not in k)
    own = enc.state_dict()
    assert torch.equal(own["patch_embed.weight"], sd["modality_preprocessors.vision.rgbt_stem.proj.1.weight"])
    assert torch.equal(own["blocks.1.attn.qkv.weight"], sd["modality_trunks.vision.blocks.1.attn.in_proj_weight"])
    assert torch.equal(own["blocks.0.mlp.fc2.bias"], sd["modality_trunks.vision.blocks.0.mlp.fc2.bias"])
    assert torch.equal(own["head.weight"], sd["modality_heads.vision.2.weight"])
    assert len(report.loaded) == len(own)  # every tensor of the encoder came from the file

    images = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        got = enc(images)  # [3, 1, 16]
        want = reference_embedding(sd, images.unsqueeze(2).repeat(1, 1, 2, 1, 1), TOY["num_heads"], TOY["depth"])
    assert got.shape == (3, 1, 16)
    torch.testing.assert_close(got[:, 0], want, atol=1e-5, rtol=1e-4)


def test_wrong_width_names_the_released_key(tmp_path):
    sd = released_state(48, 2, 16, grid=2)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"cls_token.*shape"):
        ImageBindViTEncoder(**TOY, pretrained=str(tmp_path / "w.pth"))


def test_video_views_are_embedded_then_averaged():
    torch.manual_seed(0)
    enc = ImageBindViTEncoder(**TOY).eval()
    image = torch.randn(2, 3, 28, 28)
    videos = torch.randn(2, 6, 3, 2, 28, 28)  # [B, S views, 3, T, H, W]
    with torch.no_grad():
        still = enc(image.unsqueeze(2).repeat(1, 1, 2, 1, 1))
        assert torch.allclose(enc(image), still, atol=1e-6)  # an image is a clip of 2 equal frames
        emb = enc(videos)
        per_view = enc(videos.flatten(0, 1))[:, 0].reshape(2, 6, -1)
    assert emb.shape == (2, 1, 16)
    torch.testing.assert_close(emb[:, 0], per_view.mean(1))
    assert torch.allclose(per_view.norm(dim=-1), torch.ones(2, 6), atol=1e-5)  # each view L2-normalised
    with pytest.raises(ValueError, match=r"clip is \[3, 2, H, W\]"):
        enc(torch.randn(1, 3, 3, 28, 28))


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"imagebind_vit: unknown config key\(s\) \['widht'\]"):
        ImageBindViTEncoder.from_config({"name": "imagebind_vit", "widht": 8})
