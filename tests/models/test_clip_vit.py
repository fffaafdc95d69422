"""CLIP vision tower (``clip_vit``): feature layer choice, local HF directories, precision, real size."""

import pytest
import torch
from omegaconf import OmegaConf
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from minigpt.common.registry import registry
from minigpt.models.parts.vision_encoders.clip_vit import CLIPViTEncoder

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=28,
    patch_size=14,
)


def tiny_tower(seed: int = 0) -> CLIPVisionModel:
    torch.manual_seed(seed)
    return CLIPVisionModel(CLIPVisionConfig(**TINY)).eval()


def test_feature_layer_and_cls_choice():
    assert registry.get_vision_encoder_class("clip_vit") is CLIPViTEncoder
    enc = CLIPViTEncoder.from_config(OmegaConf.create({"name": "clip_vit", "config": TINY})).eval()
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = enc(images)
        states = enc.model(pixel_values=images, output_hidden_states=True).hidden_states
    assert len(states) == 4 and out.shape == (2, 4, 32) and enc.num_tokens == 4 and enc.out_dim == 32
    torch.testing.assert_close(out, states[-2][:, 1:])  # LLaVA: penultimate block, patch tokens
    with_cls = CLIPViTEncoder(config=TINY, select_layer=-1, drop_cls=False).eval()
    with_cls.load_state_dict(enc.state_dict())
    with torch.no_grad():
        last = with_cls(images)
        torch.testing.assert_close(last, with_cls.model(pixel_values=images).last_hidden_state)
    assert last.shape == (2, 5, 32) and with_cls.num_tokens == 5
    with pytest.raises(ValueError, match="select_layer"):
        CLIPViTEncoder(config=TINY, select_layer=4)
    with pytest.raises(ValueError, match="select_lyr"):
        CLIPViTEncoder.from_config({"name": "clip_vit", "select_lyr": -2})


@pytest.mark.parametrize("layout", ["vision_model", "clip_model"])
def test_loads_a_local_hf_directory(tmp_path, layout):
    if layout == "vision_model":
        src = tiny_tower()
        src.save_pretrained(tmp_path)
        tower = src
    else:  # a whole CLIPModel directory, as openai/clip-vit-large-patch14 ships
        torch.manual_seed(1)
        text = dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=40
        )
        src = CLIPModel(CLIPConfig(vision_config=TINY, text_config=text, projection_dim=8)).eval()
        src.save_pretrained(tmp_path)
        tower = src.vision_model
    enc = CLIPViTEncoder(pretrained=str(tmp_path), image_size=28).eval()
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        want = tower(pixel_values=images, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(enc(images), want)


def test_missing_directory_and_wrong_size_are_clear_errors(tmp_path):
    missing = tmp_path / "no_such_clip"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        CLIPViTEncoder(pretrained=str(missing))
    tiny_tower().save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="image_size 336"):
        CLIPViTEncoder(pretrained=str(tmp_path / "clip"), image_size=336)
    with torch.device("meta"), pytest.raises(ValueError, match="image_size 336"):
        CLIPViTEncoder(pretrained=str(tmp_path / "clip"), image_size=336)  # meta builds agree with real ones
    (tmp_path / "clip" / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(RuntimeError, match=str(tmp_path / "clip")):
        CLIPViTEncoder(pretrained=str(tmp_path / "clip"))


def test_half_precision_frozen_tower_runs_on_cpu(tmp_path):
    src = tiny_tower()
    src.save_pretrained(tmp_path)
    enc = CLIPViTEncoder(pretrained=str(tmp_path), precision="fp16", freeze=True)
    assert enc.model.encoder.layers[0].self_attn.q_proj.weight.dtype == torch.float16
    assert enc.model.pre_layrnorm.weight.dtype == torch.float32
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                for t in (m.weight, m.bias):
                    if t is not None:
                        t.copy_(t.half().float())
        images = torch.randn(2, 3, 28, 28)
        out = enc(images)
        want = src(pixel_values=images, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def test_real_size_parameter_count_on_meta(tmp_path):
    # Published: OpenCLIP's model profile lists ViT-L-14 at 224 px with 303.97M image parameters
    # (open_clip docs, profiler results: "ViT-L-14,224,...,image_mparams 303.97"). That figure includes
    # the 1024 -> 768 visual projection, which a CLIPVisionModel does not have.
    published = 303.97e6
    projection = 1024 * 768
    with torch.device("meta"):
        l14 = CLIPViTEncoder(pretrained=str(tmp_path / "absent"))  # no directory: ViT-L/14 defaults
        l14_336 = CLIPViTEncoder(image_size=336)
    n = sum(p.numel() for p in l14.parameters())
    assert abs(n + projection - published) / published < 0.005, n
    assert l14.out_dim == 1024 and l14.num_tokens == 256 and l14_336.num_tokens == 576
    # at 336 px only the position table grows: (577 - 257) rows of 1024
    assert sum(p.numel() for p in l14_336.parameters()) - n == (577 - 257) * 1024


def test_meta_build_reads_the_directory_config_but_no_weights(tmp_path):
    tiny_tower().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"corrupt: must not be read on meta")
    with torch.device("meta"):
        enc = CLIPViTEncoder(pretrained=str(tmp_path))
    assert enc.out_dim == 32 and enc.num_tokens == 4


def test_class_token_states_after_every_kth_block():
    """``clip_vit_cls`` (LaVIN's visual input): the class token as each k-th block outputs it, before ln_post."""
    from minigpt.models.parts.vision_encoders.clip_vit import CLIPViTCLSStates

    assert registry.get_vision_encoder_class("clip_vit_cls") is CLIPViTCLSStates
    cfg = {**TINY, "num_hidden_layers": 4}
    enc = CLIPViTCLSStates.from_config(OmegaConf.create({"name": "clip_vit_cls", "config": cfg, "every": 2})).eval()
    block_out = {}
    layers = [m for n, m in enc.model.named_modules() if n.endswith("encoder.layers")][0]
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda m, a, out, i=i: block_out.__setitem__(i, out[0] if isinstance(out, tuple) else out))
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = enc(images)
    assert out.shape == (2, 2, 32) and enc.num_tokens == 2
    torch.testing.assert_close(out[:, 0], block_out[1][:, 0])  # after block 2
    torch.testing.assert_close(out[:, 1], block_out[3][:, 0])  # after block 4, the last
    with pytest.raises(ValueError, match="every must be between 1 and the tower's 4 blocks"):
        CLIPViTCLSStates(config=cfg, every=5)
    with pytest.raises(ValueError, match="select_layer"):
        CLIPViTCLSStates.from_config({"name": "clip_vit_cls", "config": cfg, "select_layer": -2})



@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_each_hidden_state_equals_the_whole_towers_and_later_blocks_do_not_run(precision):
    enc = CLIPViTEncoder(config=TINY, precision=precision, freeze=True)
    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    ran = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(enc.model.encoder.layers)]
    with torch.no_grad():
        whole = enc._run(enc.model, images, output_hidden_states=True).hidden_states  # every block, then picked
        for index in range(-4, 4):
            ran.clear()
            assert torch.equal(enc.hidden_state(images, index), whole[index]), index
            assert ran == list(range(index % 4))  # blocks after the asked-for state are skipped
    for h in hooks:
        h.remove()
