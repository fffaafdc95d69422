"""Real-size presets built on the meta device: no weight file read, published parameter counts.

Reference figures (each part is checked on its own, then the whole model within 0.5%):

* Phi-2: 2,779,683,840 parameters, the size of microsoft/phi-2 (its model.safetensors.index.json
  gives total_size 5,559,367,680 bytes in float16 = 2 bytes a parameter).
* Vicuna-7B (v0) and Llama-2-7b-chat: 6,738,415,616 parameters, the LLaMA-7B shapes (Llama-2-7b-hf's
  model.safetensors.index.json: total_size 13,476,839,424 bytes in float16; LLaMA paper: "6.7B").
* EVA ViT-g/14 as BLIP-2 / MiniGPT-4 / TinyGPT-V use it: 39 of EVA-CLIP-g's 40 blocks, width 1408,
  MLP 6144, patch 14 (LAVIS ``create_eva_vit_g``), about 0.99 B parameters (EVA-CLIP reports 1.0 B
  for the 40-block tower); counted below from those published shapes.
* BLIP-2's Q-Former keeps only its query path in MiniGPT-4 (word/position embeddings and the text
  FFN removed): BERT-base layers (768 wide, FFN 3072, 12 layers) with cross-attention to the 1408-wide
  image every 2nd layer, 32 queries, plus ``ln_vision``; about 0.105 B parameters.
* LoRA of rank r on a Linear(i -> o) adds r * (i + o) parameters.
"""

import importlib.util

import pytest
import torch

from minigpt.models import load_model

PHI2 = 2_779_683_840
LLAMA_7B = 6_738_415_616


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def eva_vit_g(image_size: int, depth: int = 39, width: int = 1408, mlp: int = 6144) -> int:
    block = (
        2 * 2 * width  # norm1, norm2
        + 3 * width * width
        + 2 * width  # fused qkv weight, q_bias and v_bias (no k bias)
        + linear(width, width)  # attention output
        + linear(width, mlp)
        + linear(mlp, width)
    )
    tokens = (image_size // 14) ** 2 + 1
    # + patch embedding, class token, position table
    return depth * block + linear(3 * 14 * 14, width) + width + tokens * width


def blip2_query_qformer(
    vision_width: int = 1408, hidden: int = 768, ffn: int = 3072, layers: int = 12
) -> int:
    self_attn = 3 * linear(hidden, hidden) + linear(hidden, hidden) + 2 * hidden
    cross_attn = (
        linear(hidden, hidden) + 2 * linear(vision_width, hidden) + linear(hidden, hidden) + 2 * hidden
    )
    ffn_query = linear(hidden, ffn) + linear(ffn, hidden) + 2 * hidden
    queries, emb_norm, ln_vision = 32 * hidden, 2 * hidden, 2 * vision_width
    return layers * (self_attn + ffn_query) + layers // 2 * cross_attn + queries + emb_norm + ln_vision


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def empty_model_root(tmp_path, monkeypatch):
    """Every `pretrained` path of the presets points into an empty directory: nothing can be read."""
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))


def test_the_vision_figures_are_the_published_sizes():
    assert eva_vit_g(224) == pytest.approx(0.99e9, rel=0.005)
    assert blip2_query_qformer() == pytest.approx(0.105e9, rel=0.005)


@pytest.mark.parametrize("model_type,image_size", [("stage1_2_3", 224), ("stage4", 448)])
def test_tinygptv_has_the_published_size(model_type, image_size):
    m = load_model("tinygptv", model_type, device="meta")
    assert all(p.is_meta for p in m.parameters())
    hidden, layers, heads = 2560, 32, 32
    # TinyGPT-V's norms on Phi-2: per-head LayerNorm on Q and K (weight + bias over 80), RMSNorm weight
    variant_norms = layers * (2 * 2 * (hidden // heads) + hidden)
    # LoRA r=64 on the fused query_key_value (one A [64, 2560], one B [7680, 64]: q/k/v share the A)
    # and on dense, as the original
    lora = layers * 64 * ((hidden + 3 * hidden) + (hidden + hidden))
    projection = linear(768, 4096) + linear(4096, hidden)
    assert count(m.vision_encoder) == pytest.approx(eva_vit_g(image_size), rel=0.005)
    assert count(m.projector) == pytest.approx(blip2_query_qformer() + projection, rel=0.005)
    assert count(m.llm) == pytest.approx(PHI2 + variant_norms + lora, rel=0.005)
    expected = eva_vit_g(image_size) + blip2_query_qformer() + projection + PHI2 + lora
    assert m.num_parameters() == pytest.approx(expected, rel=0.005)
    # without its LoRA the LLM is exactly Phi-2 plus TinyGPT-V's norms
    assert sum(p.numel() for n, p in m.llm.named_parameters() if "lora_" in n) == lora
    assert count(m.llm) - lora == PHI2 + variant_norms
    cfg = m.llm.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.qk_layernorm) == (
        hidden,
        layers,
        51200,
        True,
    )
    assert m.llm.model.base_model.model.model.layers[0].post_layernorm.weight.shape == (hidden,)
    assert m.num_image_tokens() == 32


@pytest.mark.parametrize("model_type", ["stage1_2_3", "stage4"])
def test_tinygptv_trains_what_the_published_recipe_trains(model_type):
    """45,266,944 trainable: the two projections, LoRA r64 on the fused query_key_value (one A for
    q/k/v) and dense, and the norm weights (not biases) of TinyGPT-V's recipe."""
    m = load_model("tinygptv", model_type, device="meta")
    trainable = {n: p.numel() for n, p in m.named_parameters() if p.requires_grad}
    assert sum(v for n, v in trainable.items() if n.startswith("projector.proj")) == 13_638_144
    assert sum(v for n, v in trainable.items() if "lora_" in n) == 31_457_280
    assert sum(v for n, v in trainable.items() if n.startswith("llm.") and "lora_" not in n) == 171_520
    assert m.num_parameters(trainable_only=True) == 45_266_944
    attn = m.llm.model.base_model.model.model.layers[5].self_attn
    assert attn.k_proj.lora_A["default"].weight is attn.q_proj.lora_A["default"].weight
    assert attn.v_proj.lora_A["default"].weight is attn.q_proj.lora_A["default"].weight


def test_three_separate_lora_a_and_norm_biases_remain_a_switch():
    overrides = {"llm": {"lora_share_qkv_a": False, "trainable_norm_bias": True}}
    m = load_model("tinygptv", "stage1_2_3", device="meta", overrides=overrides)
    lora = sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and "lora_" in n)
    assert lora == 41_943_040


def test_minigpt4_vicuna7b_has_the_published_size():
    m = load_model("minigpt4", "vicuna7b", device="meta")
    assert all(p.is_meta for p in m.parameters())
    assert count(m.llm) == LLAMA_7B
    assert count(m.projector) == pytest.approx(blip2_query_qformer() + linear(768, 4096), rel=0.005)
    expected = eva_vit_g(224) + blip2_query_qformer() + linear(768, 4096) + LLAMA_7B
    assert m.num_parameters() == pytest.approx(expected, rel=0.005)
    # MiniGPT-4 trains its one projection and nothing else
    assert m.num_parameters(trainable_only=True) == linear(768, 4096)
    assert m.template.name == "human_assistant" and m.max_txt_len == 160


def test_minigpt_v2_llama2_chat_7b_has_the_published_size():
    m = load_model("minigpt_v2", "llama2_chat_7b", device="meta")
    assert all(p.is_meta for p in m.parameters())
    lora = 32 * 2 * 64 * (4096 + 4096)  # r=64 on q_proj and v_proj of 32 layers
    assert count(m.llm) == LLAMA_7B + lora
    assert count(m.projector) == linear(4 * 1408, 4096)
    expected = eva_vit_g(448) + linear(5632, 4096) + LLAMA_7B + lora
    assert m.num_parameters() == pytest.approx(expected, rel=0.005)
    assert m.num_parameters(trainable_only=True) == linear(5632, 4096) + lora
    assert m.template.name == "llama2_inst"
    # ln_vision, then the class token dropped: 32 x 32 patches merged 4 at a time -> 256 LLM tokens
    assert m.vision_encoder.num_tokens == 1024 and m.num_image_tokens() == 256


def test_meta_build_without_config_block_or_weights_names_the_directory(tmp_path):
    from minigpt.models.parts.llms.hf_causal_lm import HFCausalLM

    missing = str(tmp_path / "no-such-llm")
    with torch.device("meta"), pytest.raises(FileNotFoundError, match="no-such-llm"):
        HFCausalLM(pretrained=missing)
    # off the meta device a missing directory is an error even with a config block
    with pytest.raises(FileNotFoundError, match="no-such-llm"):
        HFCausalLM(pretrained=missing, config={"model_type": "phi", "hidden_size": 32})


def test_meta_build_falls_back_to_the_shipped_tokenizer():
    from minigpt.models.parts.llms.hf_causal_lm import load_tokenizer

    m = load_model("tinygptv", "stage1_2_3", device="meta", overrides={"llm": {"lora_r": 0}})
    assert m.tokenizer.get_vocab() == load_tokenizer(None).get_vocab()


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None,
    reason="8-bit loading is possible on this machine",
)
def test_low_resource_is_a_clear_error_without_bitsandbytes_and_cuda(tmp_path):
    from minigpt.models.parts.llms.hf_causal_lm import SHIPPED_TOKENIZER, HFCausalLM

    with pytest.raises(RuntimeError, match="llm.low_resource"):
        HFCausalLM(pretrained=str(tmp_path), tokenizer=SHIPPED_TOKENIZER, low_resource=True)


def test_meta_build_reads_only_the_config_of_an_existing_directory(tmp_path):
    from transformers import PhiConfig, PhiForCausalLM

    from minigpt.models.parts.llms.hf_causal_lm import HFCausalLM, load_tokenizer

    cfg = PhiConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1100
    )
    PhiForCausalLM(cfg).save_pretrained(tmp_path)
    load_tokenizer(None).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not weights: a meta build must not open this file")
    with torch.device("meta"):
        llm = HFCausalLM(pretrained=str(tmp_path), phi_variant="tinygptv")
    assert all(p.is_meta for p in llm.parameters())
    assert llm.model.config.qk_layernorm and llm.model.config.vocab_size == 1100
    assert hasattr(llm.model.model.layers[1], "post_layernorm")
