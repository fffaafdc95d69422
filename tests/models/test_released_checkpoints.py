"""Released TinyGPT-V / MiniGPT-4 / MiniGPT-v2 ``.pth`` files: each original key layout, loaded exactly.

Each test builds a tiny source model, changes what the original stage trains, writes those tensors
under the original projects' key names (the names below are those of their model code: ``llama_proj``
and ``llama_proj2`` modules, ``llama_model`` wrapped by peft 0.2 or later, TinyGPT-V's fused
``query_key_value`` with rows ordered heads x 3 x head_dim), and checks that a fresh model of the
same preset given the file through ``model.ckpt`` computes exactly what the source computes.
"""

from typing import Dict

import pytest
import torch

from minigpt.models import load_model
from minigpt.models.weights.names import canonical_name

PROMPT = "<Img><ImageHere></Img> [vqa] what color is the circle?"

TINY_QFORMER = {
    "name": "qformer_linear",
    "num_query_token": 4,
    "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "freeze_qformer": True,
    "freeze": False,
}


def tinygptv_overrides(lora_r: int) -> dict:
    """The tiny TinyGPT-V with the original's composition: Q-Former + two linears, Phi variant, its recipe."""
    return {
        "vision_encoder": {"freeze": True},
        "projector": {**TINY_QFORMER, "hidden_dims": [48]},
        "llm": {
            "phi_variant": "tinygptv",
            "freeze": True,
            "trainable_norms": True,
            "lora_r": lora_r,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
            "lora_target_modules": ["q_proj", "k_proj", "v_proj", "dense"],
        },
    }


MINIGPT4 = {
    "vision_encoder": {"freeze": True},
    "projector": {**TINY_QFORMER, "hidden_dims": None},
    "llm": {"freeze": True},
}
MINIGPT_V2 = {
    "vision_encoder": {"freeze": True},
    "projector": {"out_norm": False, "hidden_dim": None},
    "llm": {
        "freeze": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "lora_target_modules": ["q_proj", "v_proj"],
    },
}


def build(name: str, overrides: dict, checkpoint=None):
    torch.manual_seed(0)  # the frozen parts, which no stage file holds, start equal in source and target
    return load_model(name, "tiny", is_eval=True, checkpoint=checkpoint, overrides=overrides)


def outputs(model) -> torch.Tensor:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    batch = model.build_inputs([PROMPT, PROMPT], ["red", "a blue square"], model.num_image_tokens())
    with torch.no_grad():
        emb = model.embed(batch, images)
        return model.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits


def train_the_trained_parts(model) -> None:
    """Random values in place of training: norm weights, projection, LoRA (B too, so LoRA changes outputs)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.endswith("norm.bias") and "layernorm.bias" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


def share_lora_a(model) -> None:
    """TinyGPT-V's LoRA on the fused projection has one A for Q, K and V; make the source's three equal."""
    with torch.no_grad():
        for layer in model.llm.model.base_model.model.model.layers:
            a = layer.self_attn.q_proj.lora_A["default"].weight
            layer.self_attn.k_proj.lora_A["default"].weight.copy_(a)
            layer.self_attn.v_proj.lora_A["default"].weight.copy_(a)


def fuse_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """TinyGPT-V's row order: the patched Phi splits its fused output with view(..., heads, 3, head_dim)."""
    parts = [t.reshape(heads, -1, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * q.shape[0], *q.shape[1:])


def released_file(
    path, model, lora_infix: str = "", fused: bool = False, norm_biases: bool = False
) -> Dict[str, torch.Tensor]:
    """Write what the original runner saves: the trained tensors, original names, inside {"model": ...}."""
    own = {
        canonical_name(n): p.detach().clone()
        for n, p in model.named_parameters(remove_duplicate=False)  # a LoRA A shared by q/k/v under each name
        if p.requires_grad
    }
    has_lora = any("lora_" in n for n in own)
    llm_prefix = "llama_model.base_model.model." if has_lora else "llama_model."
    state = {}
    for name, value in own.items():
        if name.startswith("projector."):
            # projector.proj.<i>.<param> (Q-Former + linears) or projector.proj.<param> (one linear)
            parts = name.split(".")
            module = "llama_proj2" if len(parts) == 4 and parts[2] == "1" else "llama_proj"
            state[f"{module}.{parts[-1]}"] = value
        elif name.startswith("llm.model."):
            if name.endswith("bias") and "norm" in name and not norm_biases:
                continue  # TinyGPT-V sets requires_grad on norm weights only
            key = llm_prefix + name[len("llm.model.") :]
            state[key.replace(".default.weight", lora_infix + ".weight")] = value
        else:
            raise AssertionError(f"unexpected trained tensor {name}")
    if fused:
        heads = model.llm.model.config.num_attention_heads
        for key in [k for k in state if ".self_attn.q_proj." in k]:
            q, k, v = (state.pop(key.replace(".q_proj.", f".{n}_proj.")) for n in "qkv")
            fused_key = key.replace(".q_proj.", ".query_key_value.")
            state[fused_key] = q if ".lora_A" in key else fuse_rows(q, k, v, heads)
    torch.save(
        {"model": state, "optimizer": {"state": {}}, "epoch": 3, "config": {"run": {"lr": 1e-4}}}, path
    )
    return state


def test_tinygptv_stage4_with_lora_on_fused_qkv(tmp_path):
    source = build("tinygptv", tinygptv_overrides(4))
    before = outputs(source)
    train_the_trained_parts(source)
    share_lora_a(source)
    state = released_file(tmp_path / "TinyGPT-V_for_Stage4.pth", source, fused=True)
    # the file really is in the original layout
    assert "llama_model.base_model.model.model.layers.0.self_attn.query_key_value.lora_B.weight" in state
    assert "llama_model.base_model.model.model.layers.1.post_layernorm.weight" in state
    assert "llama_model.base_model.model.model.final_layernorm.weight" in state
    assert {"llama_proj.weight", "llama_proj2.bias"} <= set(state)

    target = build("tinygptv", tinygptv_overrides(4), checkpoint=str(tmp_path / "TinyGPT-V_for_Stage4.pth"))
    assert not torch.allclose(before, outputs(source), atol=1e-3)  # the file changes the model
    assert torch.allclose(outputs(target), outputs(source), atol=1e-5)


def test_tinygptv_stage1_without_lora(tmp_path):
    source = build("tinygptv", tinygptv_overrides(0))
    train_the_trained_parts(source)
    state = released_file(tmp_path / "stage1.pth", source)
    assert "llama_model.model.layers.0.self_attn.q_layernorm.weight" in state
    assert not any("base_model" in k for k in state)
    target = build("tinygptv", tinygptv_overrides(0))
    assert not torch.allclose(outputs(target), outputs(source), atol=1e-3)
    target.load_checkpoint(str(tmp_path / "stage1.pth"))
    assert torch.allclose(outputs(target), outputs(source), atol=1e-5)

    # stage 2 starts from the stage-1 file with fresh LoRA (B = 0): same outputs, LoRA reported missing
    from minigpt.models.weights.released import load_released

    with_lora = build("tinygptv", tinygptv_overrides(4))
    # LoRA's initialisation draws random numbers before the Q-Former is built: give it the source's frozen parts
    with_lora.vision_encoder.load_state_dict(source.vision_encoder.state_dict())
    with_lora.projector.load_state_dict(source.projector.state_dict())
    report = load_released(with_lora, str(tmp_path / "stage1.pth"))
    assert torch.allclose(outputs(with_lora), outputs(source), atol=1e-5)
    assert report.layout == "tinygptv" and not report.unexpected
    assert report.missing and all("lora_" in n or n.endswith("bias") for n in report.missing)


def test_minigpt4_projection_only(tmp_path):
    source = build("minigpt4", MINIGPT4)
    train_the_trained_parts(source)
    state = released_file(tmp_path / "pretrained_minigpt4_7b.pth", source)
    assert set(state) == {"llama_proj.weight", "llama_proj.bias"}
    target = build("minigpt4", MINIGPT4, checkpoint=str(tmp_path / "pretrained_minigpt4_7b.pth"))
    assert torch.allclose(outputs(target), outputs(source), atol=1e-5)


@pytest.mark.parametrize("lora_infix", ["", ".default"], ids=["peft0.2", "peft-default"])
def test_minigpt_v2_projection_and_lora(tmp_path, lora_infix):
    source = build("minigpt_v2", MINIGPT_V2)
    train_the_trained_parts(source)
    state = released_file(tmp_path / "minigptv2_checkpoint.pth", source, lora_infix=lora_infix)
    key = f"llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A{lora_infix}.weight"
    assert key in state and "llama_proj.weight" in state
    target = build("minigpt_v2", MINIGPT_V2)
    assert not torch.allclose(outputs(target), outputs(source), atol=1e-3)
    from minigpt.models.weights.released import load_released

    report = load_released(target, str(tmp_path / "minigptv2_checkpoint.pth"))
    assert report.layout == "minigpt_v2" and not report.missing and not report.unexpected
    assert len(report.loaded) == len(state)
    assert torch.allclose(outputs(target), outputs(source), atol=1e-5)


def test_released_file_errors_name_the_file(tmp_path):
    model = build("minigpt4", MINIGPT4)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        model.load_checkpoint(str(tmp_path / "nothing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        model.load_checkpoint(str(garbage))
    no_model = tmp_path / "no_model.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}}, no_model)
    with pytest.raises(ValueError, match="no_model.pth.*'model'"):
        model.load_checkpoint(str(no_model))
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.weight": torch.ones(2)}}, foreign)
    with pytest.raises(ValueError, match="foreign.pth: not a TinyGPT-V"):
        model.load_checkpoint(str(foreign))
    not_safetensors = tmp_path / "trained.safetensors"
    not_safetensors.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        model.load_checkpoint(str(not_safetensors))


def test_a_file_for_another_projector_is_refused(tmp_path):
    source = build("tinygptv", tinygptv_overrides(0))
    released_file(tmp_path / "tinygptv.pth", source)
    one_linear = build("minigpt4", MINIGPT4)
    with pytest.raises(ValueError, match="llama_proj2"):
        one_linear.load_checkpoint(str(tmp_path / "tinygptv.pth"))
    mlp = build("minigpt_v2", {**MINIGPT_V2, "projector": {"hidden_dim": 16, "out_norm": False}})
    with pytest.raises(ValueError, match="hidden_dim"):
        mlp.load_checkpoint(str(tmp_path / "tinygptv.pth"))
