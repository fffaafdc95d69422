"""export --format hf: transformers loads each export without minigpt and computes the source's logits."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt.models import load_model, load_preprocess
from minigpt.models.weights.hf_export import ADAPTER_DIR, export_hf
from minigpt.models.weights.hf_layouts import BLIP2, LLAVA, REMOTE, hf_layout

TOL = 1e-4
IMG = "<Img><ImageHere></Img>"
PROMPTS = [f"{IMG} [vqa] what color is the circle?", f"{IMG} [caption] describe the picture"]
ANSWERS = ["red", "a blue square"]
CLIP_MLP = {
    "vision_encoder": {
        "name": "clip_vit",
        "select_layer": -2,
        "drop_cls": True,
        "freeze": True,
        "config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": 16,
            "image_size": 64,
        },
    },
    "projector": {"name": "mlp"},
}


def images(model) -> torch.Tensor:
    size = model.vision_encoder.image_size
    return torch.randn(len(PROMPTS), 3, size, size, generator=torch.Generator().manual_seed(3))


def batch(model):
    return model.build_inputs(PROMPTS, ANSWERS, model.num_image_tokens())


@torch.no_grad()
def our_logits(model) -> torch.Tensor:
    b = batch(model)
    return model.llm(inputs_embeds=model.embed(b, images(model)), attention_mask=b["attention_mask"]).logits


@torch.no_grad()
def max_diff(model, hf_model) -> float:
    b = batch(model)
    theirs = hf_model(
        input_ids=b["input_ids"], attention_mask=b["attention_mask"], pixel_values=images(model)
    ).logits
    ours = our_logits(model)
    assert ours.shape == theirs.shape
    return float((ours - theirs)[b["attention_mask"].bool()].abs().max())


def hf_greedy_text(model, hf_model) -> str:
    """The exported model's greedy answer (transformers' generate) to our layout of the first prompt."""
    ids = model.build_generation_inputs(PROMPTS[:1])
    gen = hf_model.generate(
        input_ids=ids["input_ids"],
        attention_mask=ids["attention_mask"],
        pixel_values=images(model)[:1],
        max_new_tokens=6,
        do_sample=False,
    )
    text = model.tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    return model.template.cut_at_stop(text)


def no_minigpt_in(folder) -> None:
    """The folder names no minigpt module: transformers needs nothing of this library to load it."""
    for name in os.listdir(folder):
        if name.endswith((".json", ".py")):
            text = open(os.path.join(folder, name), encoding="utf-8").read()
            assert not re.search(r"^\s*(import|from) minigpt", text, re.M), name


def test_released_layout_with_text_image_markers_exports_as_blip2(tmp_path):
    """The released presets keep <Img>/<ImageHere> as text: the export adds the image token, same logits."""
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    torch.manual_seed(0)
    small = {"scale": "toy", "vision_encoder": {"image_size": 56}, "llm": {"torch_dtype": "float32"}}
    model = load_model("minigpt4", "released_vicuna7b", overrides=small).eval()
    assert model.image_token_id < 0 and hf_layout(model)[0] == BLIP2
    out = export_hf(model, str(tmp_path / "released"))
    slot = json.load(open(os.path.join(out, "config.json")))["image_token_index"]
    assert json.load(open(os.path.join(out, "generation_config.json")))["suppress_tokens"] == [slot]
    hf = Blip2ForConditionalGeneration.from_pretrained(out).eval()
    b = batch(model)
    with torch.no_grad():
        theirs = hf(
            input_ids=b["input_ids"].masked_fill(b["media_mask"], slot),
            attention_mask=b["attention_mask"],
            pixel_values=images(model),
        ).logits
    assert float((our_logits(model) - theirs)[b["attention_mask"].bool()].abs().max()) <= TOL
    # the chat template and the tokenizer give the ids the original layout builds (vicuna0_chat, BOS policy)
    tok = AutoTokenizer.from_pretrained(out)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "[vqa] what is it?"}]}
    prompt = tok.apply_chat_template([user], tokenize=False).replace("<ImageHere>", "<ImageHere>" * 32)
    ids = model.build_generation_inputs([f"{IMG} [vqa] what is it?"])
    want = ids["input_ids"].masked_fill(ids["media_mask"], slot)[0].tolist()
    assert tok(prompt, add_special_tokens=False)["input_ids"] == want


def test_text_image_markers_grow_the_vocabulary_by_the_image_token(tmp_path):
    """A vocabulary with no row to spare gets one for <ImageHere>; the other tokens' logits are unchanged."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    words = "<unk> <s> </s> <pad> <Img> </Img> ### what color is the circle ? red a blue square".split()
    wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    PreTrainedTokenizerFast(tokenizer_object=wl, **special).save_pretrained(str(tmp_path / "tok"))
    torch.manual_seed(0)
    llm = {"tokenizer": str(tmp_path / "tok"), "ordinal_grid_init": False}
    model = load_model("tinygptv", "tiny", overrides={"image_markers": "text", "llm": llm}).eval()
    rows = model.llm.causal_lm.get_input_embeddings().weight.shape[0]
    assert rows == len(words)
    out = export_hf(model, str(tmp_path / "grown"))
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert (cfg["image_token_id"], cfg["text_config"]["vocab_size"]) == (rows, rows + 1)
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    b = model.build_inputs(
        ["<Img> <ImageHere> </Img> what color is the circle ?"], ["red"], model.num_image_tokens()
    )
    pixels = images(model)[:1]
    with torch.no_grad():
        ours = model.llm(inputs_embeds=model.embed(b, pixels), attention_mask=b["attention_mask"]).logits
        ids = b["input_ids"].masked_fill(b["media_mask"], rows)
        theirs = hf(input_ids=ids, attention_mask=b["attention_mask"], pixel_values=pixels).logits
    assert theirs.shape[-1] == rows + 1 and float((ours - theirs[..., :rows]).abs().max()) <= TOL


@pytest.fixture(scope="module")
def llava_export(tmp_path_factory):
    torch.manual_seed(0)
    model = load_model("minigpt4", "tiny", overrides=CLIP_MLP).eval()
    assert hf_layout(model)[0] == LLAVA
    return model, export_hf(model, str(tmp_path_factory.mktemp("hf") / "llava"))


def test_minigpt4_exports_as_blip2(tmp_path):
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    torch.manual_seed(0)
    small = {"scale": "toy", "vision_encoder": {"image_size": 56}, "llm": {"torch_dtype": "float32"}}
    model = load_model("minigpt4", "vicuna7b", overrides=small).eval()
    assert hf_layout(model)[0] == BLIP2
    out = export_hf(model, str(tmp_path / "blip2"))
    hf = Blip2ForConditionalGeneration.from_pretrained(out).eval()
    assert max_diff(model, hf) <= TOL
    assert hf_greedy_text(model, hf) == model.generate(images(model)[:1], PROMPTS[:1], max_new_tokens=6)[0]
    assert json.load(open(os.path.join(out, "config.json")))["model_type"] == "blip-2"
    assert type(AutoProcessor.from_pretrained(out)).__name__ == "Blip2Processor"
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "Blip2ForConditionalGeneration" in card and "pipeline_tag: image-text-to-text" in card
    no_minigpt_in(out)


def test_clip_mlp_exports_as_llava(llava_export):
    from transformers import AutoModelForImageTextToText, LlavaForConditionalGeneration

    model, out = llava_export
    assert max_diff(model, LlavaForConditionalGeneration.from_pretrained(out).eval()) <= TOL
    auto = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert type(auto).__name__ == "LlavaForConditionalGeneration" and max_diff(model, auto) <= TOL
    no_minigpt_in(out)


def test_llava_export_chat_template_processor_and_pipeline(llava_export):
    from transformers import AutoProcessor, AutoTokenizer, pipeline

    model, out = llava_export
    question = "what color is the circle?"
    tok = AutoTokenizer.from_pretrained(out)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    prompt = tok.apply_chat_template([user], tokenize=False)
    assert json.load(open(os.path.join(out, "tokenizer_config.json")))["chat_template"] == tok.chat_template
    assert prompt == model.layout.prompt_text([f"{IMG} {question}"])
    history = [user, {"role": "assistant", "content": "red"}, {"role": "user", "content": "and the square?"}]
    assert tok.apply_chat_template(history, tokenize=False) == model.layout.prompt_text(
        [f"{IMG} {question}", "and the square?"], ["red"]
    )
    # the processor lays out the token ids our model builds, and prepares the image as ours does
    size = model.vision_encoder.image_size
    picture = Image.fromarray((np.random.RandomState(0).rand(size, size, 3) * 255).astype("uint8"))
    inputs = AutoProcessor.from_pretrained(out)(images=picture, text=prompt, return_tensors="pt")
    assert (
        inputs["input_ids"].tolist()
        == model.build_generation_inputs([f"{IMG} {question}"])["input_ids"].tolist()
    )
    pixels = load_preprocess(model.cfg)[0]["eval"](picture)
    assert float((inputs["pixel_values"][0] - pixels).abs().max()) < 1e-5
    # the pipeline answers what our model answers (greedy)
    pipe = pipeline("image-text-to-text", model=out)
    user_with_image = {
        "role": "user",
        "content": [{"type": "image", "image": picture}, {"type": "text", "text": question}],
    }
    got = pipe(
        text=[user_with_image],
        generate_kwargs={"max_new_tokens": 8, "do_sample": False},
        return_full_text=False,
    )
    want = model.generate(pixels[None], [f"{IMG} {question}"], max_new_tokens=8)
    assert got[0]["generated_text"].strip() == want[0]


TOY_56 = {"scale": "toy", "vision_encoder": {"image_size": 56}, "llm": {"torch_dtype": "float32"}}


@pytest.mark.parametrize(
    "arch, model_type, overrides",
    [
        # tiny_vit + concat_linear (square 2x2 groups) + TinyGPT-V's Phi
        ("tinygptv", "tiny", {"llm": {"phi_variant": "tinygptv"}}),
        # the real composition at toy width: EVA ViT-g + Q-Former + 2 Linear + TinyGPT-V's Phi
        ("tinygptv", "stage1_2_3", TOY_56),
        # MiniGPT-v2: EVA ViT-g without its class token, ln_vision, 4 tokens concatenated, Llama
        ("minigpt_v2", "llama2_chat_7b", TOY_56),
    ],
    ids=["tinygptv-tiny", "tinygptv-real-toy", "minigpt_v2-toy"],
)
def test_other_compositions_export_as_remote_code(tmp_path, arch, model_type, overrides):
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = load_model(arch, model_type, overrides=overrides).eval()
    assert hf_layout(model)[0] == REMOTE
    out = export_hf(model, str(tmp_path / "remote"))
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_minigpt.MiniGPTForConditionalGeneration"
    assert cfg["text_variant"] == (model.cfg.llm.phi_variant) and os.path.isfile(
        os.path.join(out, "modeling_minigpt.py")
    )
    no_minigpt_in(out)
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert max_diff(model, hf) <= TOL
    assert max_diff(model, AutoModel.from_pretrained(out, trust_remote_code=True).eval()) <= TOL
    size = model.vision_encoder.image_size
    assert AutoImageProcessor.from_pretrained(out, trust_remote_code=True).size == {
        "height": size,
        "width": size,
    }
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}
    assert tok.apply_chat_template([user], tokenize=False) == model.layout.prompt_text([f"{IMG} what is it?"])
    if model_type == "tiny":  # greedy decoding through transformers' generate gives our tokens
        assert (
            hf_greedy_text(model, hf) == model.generate(images(model)[:1], PROMPTS[:1], max_new_tokens=6)[0]
        )


@pytest.mark.parametrize("composition", ["tinygptv", "llava"])
def test_lora_is_a_peft_adapter_on_the_exported_base(tmp_path, composition):
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    torch.manual_seed(0)
    lora = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    if composition == "tinygptv":  # remote code; one LoRA A shared by q/k/v, as TinyGPT-V's fused LoRA
        model = load_model("tinygptv", "tiny", overrides={"llm": {**lora, "lora_share_qkv_a": True}})
        load = lambda folder: AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)  # noqa: E731
    else:  # LLaVA: CLIP's own q_proj / v_proj must stay without LoRA
        model = load_model("minigpt4", "tiny", overrides={**CLIP_MLP, "llm": lora})
        load = AutoModelForImageTextToText.from_pretrained
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model({"image": images(model), "instruction_input": PROMPTS, "answer": ANSWERS})["loss"].backward()
    opt.step()  # LoRA B leaves zero
    model.eval()
    out = export_hf(model, str(tmp_path / "kept"), merge_lora=False)
    adapter = os.path.join(out, ADAPTER_DIR)
    assert sorted(os.listdir(adapter)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert PeftConfig.from_pretrained(adapter).r == 4
    base = load(out).eval()
    assert max_diff(model, base) > 1e-3  # the base alone lacks the trained LoRA
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    assert max_diff(model, peft_model) <= TOL
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and not any("vision" in n for n in lora_names)
    merged = export_hf(model, str(tmp_path / "merged"))
    assert not os.path.exists(os.path.join(merged, ADAPTER_DIR))
    assert max_diff(model, load(merged).eval()) <= TOL


def test_unsupported_models_and_offline_push_fail_clearly(llava_export, tmp_path, monkeypatch):
    model, _ = llava_export
    with pytest.raises(ValueError, match="model.adapters"):  # LaVIN's adapters sit inside the LLM's layers
        export_hf(load_model("lavin", "tiny"), str(tmp_path / "lavin"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE") as err:
        export_hf(model, str(tmp_path / "pushed"), push_to="someone/tiny")
    assert str(tmp_path / "pushed") in str(err.value) and os.path.isfile(tmp_path / "pushed" / "config.json")


def test_push_to_hub_uploads_the_folder(llava_export, monkeypatch):
    import huggingface_hub

    from minigpt.models.weights.hf_export import push_to_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", folder_path, repo_id))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    _, out = llava_export
    assert push_to_hub(out, "someone/tiny", private=True) == "https://huggingface.co/someone/tiny"
    assert calls == [("token", None), ("create", "someone/tiny", True, True), ("upload", out, "someone/tiny")]


def test_command_line_format_hf(repo_root, tmp_path):
    from transformers import AutoModelForCausalLM

    from minigpt.models.weights.export import main

    cfg_path = str(repo_root / "train_configs" / "quickstart_stage1.yaml")
    out = main(
        ["--cfg-path", cfg_path, "--out", str(tmp_path / "hf"), "--format", "hf", "--dtype", "bfloat16"]
    )
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert hf.dtype == torch.bfloat16 and type(hf).__name__ == "MiniGPTForConditionalGeneration"
    with pytest.raises(SystemExit, match="--format hf"):
        main(["--cfg-path", cfg_path, "--out", str(tmp_path / "plain"), "--push-to-hub", "someone/tiny"])
