"""``model.scale: toy``: a real preset's twin at toy widths (minigpt/common/config/toy.py)."""

from __future__ import annotations

import re

import pytest
import torch

from minigpt.common.config import Config, ConfigError, load_model_preset
from minigpt.common.config.toy import TOY_SOURCE, toy_twin
from minigpt.common.registry import registry
from minigpt.models import load_model

REAL_PRESETS = [("tinygptv", "stage1_2_3"), ("tinygptv", "stage4"), ("minigpt4", "vicuna7b"), ("minigpt_v2", "llama2_chat_7b")]
# what a twin may change: the widths, depths, heads, vocabulary, weight files and the switch itself
SHRUNK = {
    "scale",
    "vision_encoder.width",
    "vision_encoder.depth",
    "vision_encoder.num_heads",
    "vision_encoder.mlp_dim",
    "vision_encoder.pretrained",
    "projector.pretrained",
    "projector.qformer",
    "projector.hidden_dims",
    "llm.pretrained",
    "llm.tokenizer",
    "llm.lora_r",
    *(
        f"llm.config.{k}"
        for k in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "bos_token_id",
            "eos_token_id",
        )
    ),
}


def _leaves(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _trainable_kinds(model):
    """Names of the trainable parameters with layer numbers dropped (a twin has fewer layers)."""
    return {re.sub(r"\.\d+\.", ".N.", n) for n, p in model.named_parameters() if p.requires_grad}


def _preset(name, model_type):
    return load_model_preset(registry.get_model_class(name).default_config_path(model_type))


@pytest.mark.parametrize("name,model_type", REAL_PRESETS)
def test_a_twin_changes_only_widths_depths_heads_vocabulary_and_weight_files(name, model_type):
    real = _preset(name, model_type)
    twin = toy_twin(real)
    assert twin["scale"] == "toy" and real["scale"] == "real"
    real_leaves, twin_leaves = _leaves(real), _leaves(twin)
    changed = {k for k in set(real_leaves) | set(twin_leaves) if real_leaves.get(k, "?") != twin_leaves.get(k, "?")}
    assert changed, "the twin must shrink something"
    assert {k if not k.startswith("projector.qformer.") else "projector.qformer" for k in changed} <= SHRUNK
    for key in ("image_size", "patch_size", "precision", "freeze", "use_grad_checkpoint", "drop_cls", "ln_vision"):
        assert twin["vision_encoder"].get(key) == real["vision_encoder"].get(key), key
    assert twin["projector"].get("num_query_token") == real["projector"].get("num_query_token")
    assert (twin["template"], twin["max_txt_len"]) == (real["template"], real["max_txt_len"])
    assert twin["preprocess"] == real["preprocess"]
    assert twin["vision_encoder"]["pretrained"] is None and twin["llm"]["pretrained"] is None


@pytest.mark.parametrize("name,model_type", REAL_PRESETS)
def test_a_twin_builds_without_weight_files_and_trains(name, model_type, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))  # empty: no weight file can be read
    model = load_model(name, model_type, overrides={"scale": "toy"})
    real = load_model(name, model_type, device="meta")
    assert [type(m).__name__ for m in (model.vision_encoder, model.projector)] == [
        type(m).__name__ for m in (real.vision_encoder, real.projector)
    ]
    assert type(model.llm.causal_lm).__name__ == type(real.llm.causal_lm).__name__
    assert model.vision_encoder.image_size == real.vision_encoder.image_size
    assert _trainable_kinds(model) == _trainable_kinds(real)  # the same freezing and LoRA policy
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    size = model.vision_encoder.image_size
    out = model(
        {
            "image": torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)),
            "instruction_input": ["<Img><ImageHere></Img> [vqa] What is in the image?"] * 2,
            "answer": ["a red circle"] * 2,
        }
    )
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


def test_the_switch_in_a_run_config_keeps_the_user_file_and_options_over_the_twin(tmp_path):
    cfg_path = tmp_path / "stage.yaml"
    cfg_path.write_text("model:\n  arch: tinygptv\n  model_type: stage4\n  llm: {lora_r: 64}\n")
    cfg = Config(cfg_path, ["model.scale=toy", "model.llm.config.num_hidden_layers=1"])
    model = cfg.model_cfg
    assert model.scale == "toy" and model.vision_encoder.width == 32 and model.vision_encoder.image_size == 448
    assert model.llm.lora_r == 64 and model.llm.config.num_hidden_layers == 1
    assert cfg.source_of("model.vision_encoder.width") == TOY_SOURCE
    assert cfg.source_of("model.vision_encoder.image_size").endswith("tinygptv/stage4.yaml")
    real = Config(cfg_path).model_cfg
    assert real.scale == "real" and "width" not in real.vision_encoder  # the constructor's 1408


def test_an_unknown_scale_is_an_error_naming_the_choices(tmp_path):
    cfg_path = tmp_path / "stage.yaml"
    cfg_path.write_text("model:\n  arch: tinygptv\n  model_type: stage4\n")
    with pytest.raises(ConfigError, match=r"--options: model.scale must be one of real, toy, got 'huge'"):
        Config(cfg_path, ["model.scale=huge"])
