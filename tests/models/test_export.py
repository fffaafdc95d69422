"""Export: a trained tiny model with LoRA, written merged and unmerged, reloads with identical outputs."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from minigpt.models import load_model, load_model_and_preprocess
from minigpt.models.weights.checkpoint import save_trained
from minigpt.models.weights.export import (
    CONFIG_FILE,
    LORA_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    export_model,
    load_exported,
    main,
)

IMG = "<Img><ImageHere></Img>"
PROMPTS = [f"{IMG} [vqa] what color is the circle?", f"{IMG} [caption] describe the picture"]
LORA = {"llm": {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}}


def file_keys(path) -> list:
    with safe_open(str(path), framework="pt") as fh:
        return list(fh.keys())


def images() -> torch.Tensor:
    return torch.randn(len(PROMPTS), 3, 64, 64, generator=torch.Generator().manual_seed(3))


def logits(model) -> torch.Tensor:
    batch = model.build_inputs(PROMPTS, ["red", "a blue square"], model.num_image_tokens())
    with torch.no_grad():
        emb = model.embed(batch, images())
        return model.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits


def lora_b(model) -> list:
    return [p for n, p in model.named_parameters() if "lora_B" in n]


@pytest.fixture(scope="module")
def trained():
    """The tiny TinyGPT-V with LoRA r=4 after one AdamW step, so LoRA B (zero at init) is not zero."""
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", overrides=LORA)
    assert lora_b(model) and all(not p.any() for p in lora_b(model))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model({"image": images(), "instruction_input": PROMPTS, "answer": ["red", "a blue square"]})["loss"].backward()
    opt.step()
    model.eval()
    assert all(p.abs().sum() > 0 for p in lora_b(model))
    return model


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    before = logits(trained)
    merged = export_model(trained, str(root / "merged"), merge_lora=True)
    kept = export_model(trained, str(root / "kept"), merge_lora=False)
    # merging works on a copy: the source keeps its LoRA and its outputs
    assert lora_b(trained) and torch.equal(logits(trained), before)
    return {"merged": merged, "kept": kept, "source_logits": before}


@pytest.mark.parametrize("kind", ["merged", "kept"])
def test_reloaded_export_computes_what_the_source_computes(trained, exports, kind):
    model, vis, txt = load_model_and_preprocess(exports[kind], is_eval=True)
    assert torch.allclose(logits(model), exports["source_logits"], atol=1e-5)
    gen = dict(max_new_tokens=8, num_beams=1, do_sample=False)
    assert model.generate(images(), PROMPTS, **gen) == trained.generate(images(), PROMPTS, **gen)
    assert model.tokenizer.get_vocab() == trained.tokenizer.get_vocab()
    # the processors the preset names come back with it
    assert set(vis) == {"train", "eval"} and set(txt) == {"train", "eval"}
    assert vis["eval"](Image.new("RGB", (80, 50))).shape == (3, 64, 64)


def test_merged_export_has_no_lora(trained, exports):
    d = exports["merged"]
    assert not any("lora_" in k for k in file_keys(os.path.join(d, WEIGHTS_FILE)))
    assert not os.path.exists(os.path.join(d, LORA_FILE))
    cfg = yaml.safe_load(open(os.path.join(d, CONFIG_FILE)))["model"]
    assert cfg["llm"]["lora_r"] == 0 and cfg["ckpt"] is None
    assert json.load(open(os.path.join(d, MANIFEST_FILE)))["lora"] == "merged"
    model = load_exported(d)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    # the merge changed the base weights: q_proj now carries B @ A
    merged_q = model.llm.model.model.layers[0].self_attn.q_proj.weight
    source_q = trained.llm.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(merged_q, source_q, atol=1e-6)


def test_unmerged_export_keeps_lora_separate(trained, exports):
    d = exports["kept"]
    base_keys, lora_keys = file_keys(os.path.join(d, WEIGHTS_FILE)), file_keys(os.path.join(d, LORA_FILE))
    assert not any("lora_" in k for k in base_keys)
    assert lora_keys and all("lora_" in k for k in lora_keys)
    cfg = yaml.safe_load(open(os.path.join(d, CONFIG_FILE)))["model"]
    assert cfg["llm"]["lora_r"] == 4
    model = load_exported(d)
    own = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    src = {n: p for n, p in trained.named_parameters() if "lora_B" in n}
    assert own.keys() == src.keys() and all(torch.equal(own[n], src[n]) for n in own)


def test_export_config_is_self_contained(trained, exports):
    """No weight path is left, and the random-init LLM's full transformers config is stored."""
    cfg = yaml.safe_load(open(os.path.join(exports["merged"], CONFIG_FILE)))["model"]
    assert cfg["vision_encoder"].get("pretrained") is None and cfg["llm"]["pretrained"] is None
    assert cfg["llm"]["tokenizer"] == "tokenizer"
    hf = trained.llm.model.get_base_model().config
    stored = cfg["llm"]["config"]
    assert stored["model_type"] == "phi" and stored["vocab_size"] == hf.vocab_size
    # keys the preset's short config block leaves to transformers' defaults are pinned in the export
    assert stored["layer_norm_eps"] == hf.layer_norm_eps and stored["rope_parameters"] == hf.rope_parameters
    assert cfg["preprocess"]["vis_processor"]["eval"]["image_size"] == 64


def test_export_builds_on_meta_without_reading_weights(exports, tmp_path):
    d = tmp_path / "exp"
    shutil.copytree(exports["kept"], d)
    (d / WEIGHTS_FILE).write_bytes(b"a meta build must not open this")
    model = load_model(str(d), device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert any("lora_" in n for n, _ in model.named_parameters())


def test_errors_name_the_missing_or_broken_file(exports, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_export"):
        load_model(str(tmp_path / "no_such_export"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=MANIFEST_FILE):
        load_model_and_preprocess(str(tmp_path / "empty"))

    def broken(name: str):
        d = tmp_path / name
        shutil.copytree(exports["kept"], d)
        return d

    d = broken("no_weights")
    (d / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"no_weights.{WEIGHTS_FILE}"):
        load_model(str(d))
    d = broken("no_tokenizer")
    (d / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_model(str(d))
    d = broken("garbage")
    (d / LORA_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"garbage.{LORA_FILE}"):
        load_model(str(d))
    d = broken("short")
    state = load_file(d / WEIGHTS_FILE)
    dropped = "projector.proj.0.weight"
    del state[dropped]
    save_file(state, d / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=f"lacks 1 tensors.*{dropped}"):
        load_model(str(d))
    with pytest.raises(ValueError, match="model type"):
        load_model(exports["kept"], "tiny")
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(load_model(exports["kept"]), exports["kept"])


def test_meta_model_cannot_be_exported(tmp_path):
    with pytest.raises(ValueError, match="meta"):
        export_model(load_model("tinygptv", "tiny", device="meta"), str(tmp_path / "x"))


@pytest.mark.parametrize("keep_lora", [False, True], ids=["merged", "keep-lora"])
def test_command_line_exports_a_trained_checkpoint(repo_root, tmp_path, keep_lora):
    from minigpt.common.config import Config
    from minigpt.common.registry import registry

    cfg_path = str(repo_root / "train_configs" / "quickstart_stage1.yaml")
    # the encoder trains too, so the checkpoint holds the whole model (stage 1 alone freezes a random one)
    options = ["model.llm.lora_r=4", "model.llm.lora_dropout=0.0", "model.vision_encoder.freeze=false"]
    model_cfg = Config(cfg_path, options).model_cfg
    source = registry.get_model_class(model_cfg.arch).from_config(model_cfg).eval()
    with torch.no_grad():  # stands in for training: LoRA that changes the outputs
        for p in lora_b(source):
            p.normal_(0, 0.1)
    save_trained(source, str(tmp_path / "ckpt"))
    argv = ["--cfg-path", cfg_path, "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]
    out = main(argv + (["--keep-lora"] if keep_lora else []) + ["--options", *options])
    assert os.path.exists(os.path.join(out, LORA_FILE)) == keep_lora
    reloaded = load_exported(out, is_eval=True)
    assert torch.allclose(logits(reloaded), logits(source), atol=1e-5)


def test_tinygptv_composition_with_qformer_and_phi_variant_round_trips(tmp_path):
    """The real TinyGPT-V composition in tiny: Q-Former + two linears, frozen parts, the Phi variant's norms."""
    overrides = {
        "vision_encoder": {"freeze": True},
        "projector": {
            "name": "qformer_linear",
            "num_query_token": 4,
            "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
            "hidden_dims": [48],
        },
        "llm": {"phi_variant": "tinygptv", "freeze": True, "trainable_norms": True, **LORA["llm"]},
    }
    torch.manual_seed(0)
    source = load_model("tinygptv", "tiny", is_eval=True, overrides=overrides)
    with torch.no_grad():  # stands in for training: every trained tensor moves, LoRA B included
        for p in source.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    assert source.llm.model.base_model.model.model.layers[0].post_layernorm.weight.requires_grad
    for merge in (True, False):
        out = export_model(source, str(tmp_path / f"merge_{merge}"), merge_lora=merge)
        reloaded = load_model(out, is_eval=True)
        assert torch.allclose(logits(reloaded), logits(source), atol=1e-5)
        # the recipe comes back too: what was frozen is frozen, the norms train
        trains = {n for n, p in reloaded.named_parameters() if p.requires_grad}
        assert any("post_layernorm" in n for n in trains) and not any(n.startswith("vision_encoder.") for n in trains)
