"""EVA ViT-g (``eva_vit_g``): shapes, LAVIS checkpoint loading, position resizing, precision, real size."""

import argparse
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from minigpt.common.config import load_model_preset
from minigpt.common.registry import registry
from minigpt.models.parts.vision_encoders.eva_vit import EVAViTEncoder

TINY = dict(image_size=28, patch_size=14, width=32, depth=2, num_heads=4, mlp_dim=48)
PRESETS = Path(__file__).resolve().parents[2] / "minigpt" / "configs" / "models" / "tinygptv"


def randomized(enc: EVAViTEncoder, seed: int = 0) -> EVAViTEncoder:
    """Every parameter random (timm starts biases at zero, which would hide a misplaced bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return enc.eval()


def lavis_layout(enc: EVAViTEncoder, extra_blocks: int = 1) -> dict:
    """The encoder's weights under LAVIS ``eva_vit_g.pth`` names, written out by hand.

    ``extra_blocks`` appends blocks beyond the encoder's depth, as EVA-CLIP's 40th block is in
    the real file (LAVIS builds 39 and drops it).
    """
    vit = enc.vit
    sd = {
        "cls_token": vit.cls_token,
        "pos_embed": vit.pos_embed,
        "patch_embed.proj.weight": vit.patch_embed.proj.weight,
        "patch_embed.proj.bias": vit.patch_embed.proj.bias,
    }
    for i, blk in enumerate(vit.blocks):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = blk.norm1.weight, blk.norm1.bias
        sd[b + "attn.qkv.weight"] = blk.attn.qkv.weight
        sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = blk.attn.q_bias, blk.attn.v_bias
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = blk.attn.proj.weight, blk.attn.proj.bias
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = blk.norm2.weight, blk.norm2.bias
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = blk.mlp.fc1.weight, blk.mlp.fc1.bias
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = blk.mlp.fc2.weight, blk.mlp.fc2.bias
    sd = {k: v.detach().clone() for k, v in sd.items()}
    n = len(vit.blocks)
    for j in range(n, n + extra_blocks):
        for k in [k for k in sd if k.startswith("blocks.0.")]:
            sd[k.replace("blocks.0.", f"blocks.{j}.")] = torch.randn_like(sd[k])
    return sd


def lavis_reference(sd: dict, images: torch.Tensor, depth: int, heads: int, patch: int = 14) -> torch.Tensor:
    """LAVIS's VisionTransformer.forward_features computed from the original-layout tensors."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)
    b, _, c = x.shape
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1) + sd["pos_embed"]
    n = x.shape[1]
    for i in range(depth):
        p = {k[len(f"blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (c,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        bias = torch.cat([p["attn.q_bias"], torch.zeros_like(p["attn.v_bias"]), p["attn.v_bias"]])
        qkv = F.linear(h, p["attn.qkv.weight"], bias).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        h = (attn @ v).transpose(1, 2).reshape(b, n, c)
        x = x + F.linear(h, p["attn.proj.weight"], p["attn.proj.bias"])
        h = F.layer_norm(x, (c,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        x = x + F.linear(
            F.gelu(F.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"])),
            p["mlp.fc2.weight"],
            p["mlp.fc2.bias"],
        )
    return x


def test_registered_and_built_from_yaml_block():
    assert registry.get_vision_encoder_class("eva_vit_g") is EVAViTEncoder
    enc = EVAViTEncoder.from_config(OmegaConf.create({"name": "eva_vit_g", **TINY, "freeze": False})).eval()
    out = enc(torch.randn(2, 3, 28, 28))
    assert out.shape == (2, 5, 32) and enc.num_tokens == 5 and enc.out_dim == 32
    assert enc.vit.blocks[0].mlp.fc1.out_features == 48
    assert (
        EVAViTEncoder(**{**TINY, "mlp_dim": None, "mlp_ratio": 2.0}).vit.blocks[0].mlp.fc1.out_features == 64
    )
    with pytest.raises(ValueError, match="img_size"):
        EVAViTEncoder.from_config({"name": "eva_vit_g", "img_size": 224})
    with pytest.raises(ValueError, match="precision"):
        EVAViTEncoder(**TINY, precision="fp8")


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_lavis_checkpoint_loads_and_matches(tmp_path, caplog, fmt):
    torch.manual_seed(0)
    src = randomized(EVAViTEncoder(**TINY))
    sd = lavis_layout(src, extra_blocks=1)  # blocks.2.* is the dropped block
    sd["norm.weight"], sd["norm.bias"] = torch.ones(32), torch.zeros(32)
    path = tmp_path / f"eva_vit_g.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    with caplog.at_level(logging.INFO, logger="minigpt.models.weights.files"):
        enc = EVAViTEncoder.from_config({"name": "eva_vit_g", **TINY, "pretrained": str(path)}).eval()
    report = enc.load_report
    assert report.missing == [] and report.unexpected == []
    assert "blocks.2.attn.qkv.weight" in report.ignored and "norm.weight" in report.ignored
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the dropped block is expected
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = enc(images)
        torch.testing.assert_close(out, src(images))
        torch.testing.assert_close(out, lavis_reference(sd, images, depth=2, heads=4), rtol=1e-4, atol=1e-4)


def test_unexpected_and_missing_keys_are_reported(tmp_path, caplog):
    sd = lavis_layout(randomized(EVAViTEncoder(**TINY)), extra_blocks=0)
    sd["blocks.0.attn.relative_position_bias_table"] = torch.zeros(3, 4)
    del sd["blocks.1.mlp.fc2.bias"]
    path = tmp_path / "eva.pth"
    torch.save({"model": sd}, path)  # wrapped the way LAVIS training checkpoints are
    with caplog.at_level(logging.WARNING):
        enc = EVAViTEncoder(**TINY, pretrained=str(path))
    assert enc.load_report.unexpected == ["blocks.0.attn.relative_position_bias_table"]
    assert enc.load_report.missing == ["blocks.1.mlp.fc2.bias"]
    text = caplog.text
    assert "relative_position_bias_table" in text and "blocks.1.mlp.fc2.bias" in text and str(path) in text


def test_prefixed_checkpoints_keep_only_the_vision_tower(tmp_path):
    src = randomized(EVAViTEncoder(**TINY))
    sd = {"visual." + k: v for k, v in lavis_layout(src, extra_blocks=0).items()}
    sd["text.token_embedding.weight"] = torch.zeros(5, 8)  # EVA-CLIP's text tower
    path = tmp_path / "eva_clip.pth"
    torch.save(sd, path)
    enc = EVAViTEncoder(**TINY, pretrained=str(path)).eval()
    assert enc.load_report.unexpected == [] and "text.token_embedding.weight" in enc.load_report.ignored
    images = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(enc(images), src(images))


def test_missing_corrupt_and_misshapen_files_name_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "eva_vit_g.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        EVAViTEncoder(**TINY, pretrained=str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(RuntimeError, match=str(corrupt)):
        EVAViTEncoder(**TINY, pretrained=str(corrupt))
    pickled = tmp_path / "pickled_objects.pth"  # loading it would run arbitrary unpickling
    torch.save({"model": lavis_layout(EVAViTEncoder(**TINY)), "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(RuntimeError, match="weights_only"):
        EVAViTEncoder(**TINY, pretrained=str(pickled))
    wide = tmp_path / "wide.pth"
    torch.save(lavis_layout(EVAViTEncoder(**{**TINY, "width": 64, "mlp_dim": 96}), extra_blocks=0), wide)
    with pytest.raises(ValueError, match="cls_token"):
        EVAViTEncoder(**TINY, pretrained=str(wide))


def test_pos_embed_is_resized_from_224_to_448(tmp_path):
    shape = dict(patch_size=14, width=16, depth=1, num_heads=2, mlp_dim=32)
    src = randomized(EVAViTEncoder(image_size=224, **shape))
    sd = lavis_layout(src, extra_blocks=0)
    path = tmp_path / "eva224.pth"
    torch.save(sd, path)
    enc = EVAViTEncoder(image_size=448, pretrained=str(path), **shape).eval()
    assert enc.num_tokens == 1025
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 448, 448))
    assert out.shape == (1, 1025, 16)
    pos = enc.vit.pos_embed.detach()
    torch.testing.assert_close(pos[:, :1], sd["pos_embed"][:, :1])  # the class token's entry is kept
    grid = sd["pos_embed"][:, 1:].reshape(1, 16, 16, 16).permute(0, 3, 1, 2)
    want = (
        F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .reshape(1, 1024, 16)
    )
    torch.testing.assert_close(pos[:, 1:], want)


@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_frozen_encoder_runs_on_cpu(tmp_path, precision, dtype):
    src = randomized(EVAViTEncoder(**TINY))
    path = tmp_path / "eva.pth"
    torch.save(lavis_layout(src, extra_blocks=0), path)
    enc = EVAViTEncoder(**TINY, pretrained=str(path), precision=precision, freeze=True)
    blk = enc.vit.blocks[0]
    assert blk.attn.qkv.weight.dtype == dtype and enc.vit.patch_embed.proj.weight.dtype == dtype
    assert blk.norm1.weight.dtype == torch.float32 and blk.attn.q_bias.dtype == torch.float32
    assert not any(p.requires_grad for p in enc.parameters())
    # the same computation in float32 on weights rounded the same way
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                for t in (m.weight, m.bias):
                    if t is not None:
                        t.copy_(t.to(dtype).float())
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = enc(images)
        want = src(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def test_frozen_encoder_stays_in_eval_and_checkpointing_keeps_values():
    frozen = EVAViTEncoder(**TINY, drop_path_rate=0.5, freeze=True)
    frozen.train()
    assert not frozen.training and not frozen.vit.training
    torch.manual_seed(0)
    plain = randomized(EVAViTEncoder(**TINY)).train()
    ckpt = EVAViTEncoder(**TINY, use_grad_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 28, 28)
    a, b = plain(images), ckpt(images)
    torch.testing.assert_close(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    torch.testing.assert_close(
        plain.vit.blocks[0].attn.qkv.weight.grad, ckpt.vit.blocks[0].attn.qkv.weight.grad
    )


def test_minigpt_v2_features_drop_cls_after_ln_vision():
    plain = randomized(EVAViTEncoder(**TINY))
    v2 = EVAViTEncoder(**TINY, drop_cls=True, ln_vision=True).eval()
    missing, unexpected = v2.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["ln_vision.weight", "ln_vision.bias"] and unexpected == []
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = v2(images)
        want = F.layer_norm(plain(images), (32,), eps=1e-5)[:, 1:]  # a fresh ln_vision: weight 1, bias 0
    assert v2.num_tokens == 4 and out.shape == (2, 4, 32)
    torch.testing.assert_close(out, want)
    # MiniGPT-v2 at 448 px: 1024 patch tokens, merged 4 at a time into 256 LLM tokens
    with torch.device("meta"):
        enc = EVAViTEncoder(image_size=448, drop_cls=True, ln_vision=True, precision="fp16", freeze=True)
        proj = registry.get_projector_class("concat_linear")(in_dim=enc.out_dim, out_dim=4096, group=4)
    assert enc.num_tokens == 1024 and proj.num_output_tokens(enc.num_tokens) == 256


def _block_params(width: int, mlp: int) -> int:
    """One ViT-g block: two LayerNorms, fused qkv (no k bias) + q/v biases, output proj, MLP."""
    return (
        2 * 2 * width + 3 * width * width + 2 * width + width * width + width + 2 * width * mlp + mlp + width
    )


def test_real_size_parameter_counts_on_meta(tmp_path):
    # Published: EVA (EVA-CLIP's vision tower, 40 blocks, width 1408, MLP 6144, 16 heads, patch 14)
    # has 1011M parameters -- EVA-02 paper (Fang et al. 2023, arXiv:2303.11331), comparison table
    # "EVA [44] 1011M". LAVIS's create_eva_vit_g (lavis/models/eva_vit.py) keeps 39 of the 40 blocks,
    # so the encoder BLIP-2 / MiniGPT-4 / TinyGPT-V run is that figure less one block: ~985.9M.
    published_40 = 1011e6
    published_39 = published_40 - _block_params(1408, 6144)
    missing = tmp_path / "absent.pth"
    with torch.device("meta"):
        g39 = EVAViTEncoder(pretrained=str(missing))  # on meta no file is read
        g40 = EVAViTEncoder(depth=40)
        g448 = EVAViTEncoder(image_size=448)
    n39 = sum(p.numel() for p in g39.parameters())
    n40 = sum(p.numel() for p in g40.parameters())
    assert abs(n39 - published_39) / published_39 < 0.005, n39
    assert abs(n40 - published_40) / published_40 < 0.005, n40
    assert g39.num_tokens == 257 and g39.out_dim == 1408 and g448.num_tokens == 1025
    assert g39.vit.blocks[0].mlp.fc1.out_features == 6144 and g39.vit.blocks[0].attn.num_heads == 16
    # at 448 px only the position table grows: (1025 - 257) rows of 1408
    assert sum(p.numel() for p in g448.parameters()) - n39 == (1025 - 257) * 1408


@pytest.mark.parametrize("preset", ["stage1_2_3.yaml", "stage4.yaml"])
def test_tinygptv_presets_vision_block_builds_on_meta(preset, monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))  # no weights there: meta must not look
    block = OmegaConf.create(load_model_preset(PRESETS / preset)).vision_encoder  # stage4 inherits (base:)
    with torch.device("meta"):
        enc = registry.get_vision_encoder_class(block.name).from_config(block)
    assert enc.num_tokens == (257 if block.image_size == 224 else 1025)
    assert enc.vit.blocks[0].attn.qkv.weight.dtype == torch.float16  # precision: fp16, frozen
