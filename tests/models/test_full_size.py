"""Full-size TinyGPT-V (stage1_2_3) in bf16 on CPU with random weights: build, generate 8 tokens, measure.

No weight file exists (``MINIGPT_MODEL_ROOT`` is an empty directory): the model is built on the meta
device, materialised with ``to_empty`` and filled with cheap pseudo-random values, so the shapes, the
dtypes and the code paths are the real ones while nothing is downloaded. The meta build uses the
shipped tokenizer (Phi-2's is not on disk); it only decides the prompt's token count.

Published sizes the count is checked against (the same figures as tests/models/test_presets_meta.py):

* Phi-2: 2,779,683,840 parameters (microsoft/phi-2 model.safetensors.index.json: total_size
  5,559,367,680 bytes in float16);
* EVA ViT-g/14 as LAVIS builds it (``create_eva_vit_g``: 39 blocks, width 1408, MLP 6144, patch 14):
  about 0.99 B parameters at 224 px;
* BLIP-2's Q-Former, query path only as MiniGPT-4 keeps it (BERT-base layers, cross-attention to the
  1408-wide image every 2nd layer, 32 queries) plus ``ln_vision``: about 0.105 B;
* TinyGPT-V's ``Linear(768->4096)`` and ``Linear(4096->2560)``; LoRA r=64 on q/k/v/dense adds
  r * (in + out) per projection.

Run with ``python -m pytest -m slow tests/models/test_full_size.py -s`` to see the figures
(recorded in docs/benchmarks.md).
"""

from __future__ import annotations

import resource
import time

import pytest
import torch

from minigpt.models import load_model
from minigpt.models.weights.random_init import materialize_random

PHI2 = 2_779_683_840
HIDDEN, LAYERS, HEADS, LORA_R = 2560, 32, 32, 64
NEW_TOKENS = 8
# Below this much available memory the ~8 GiB model plus the float32 upcasts of the vision
# encoder's blocks risk the OOM killer on the 24 GiB machine this runs on
NEEDED_GIB = 12


def linear(i: int, o: int) -> int:
    return i * o + o


def eva_vit_g_224(depth: int = 39, width: int = 1408, mlp: int = 6144) -> int:
    block = 4 * width + 3 * width * width + 2 * width + linear(width, width) + linear(width, mlp) + linear(mlp, width)
    return depth * block + linear(3 * 14 * 14, width) + width + (16 * 16 + 1) * width


def blip2_query_qformer(vision: int = 1408, hidden: int = 768, ffn: int = 3072, layers: int = 12) -> int:
    self_attn = 4 * linear(hidden, hidden) + 2 * hidden
    cross_attn = 2 * linear(hidden, hidden) + 2 * linear(vision, hidden) + 2 * hidden
    ffn_query = linear(hidden, ffn) + linear(ffn, hidden) + 2 * hidden
    return layers * (self_attn + ffn_query) + layers // 2 * cross_attn + 32 * hidden + 2 * hidden + 2 * vision


def available_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


@pytest.mark.slow
def test_full_size_tinygptv_generates_8_tokens_in_bf16_on_cpu(tmp_path, monkeypatch):
    if available_gib() < NEEDED_GIB:
        pytest.skip(f"needs about {NEEDED_GIB} GiB of available memory, {available_gib():.1f} GiB here")
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))  # empty: no weight file can be read
    t0 = time.perf_counter()
    model = load_model(
        "tinygptv",
        "stage1_2_3",
        device="meta",
        overrides={"vision_encoder": {"precision": "bf16"}, "llm": {"torch_dtype": "bfloat16"}},
    )
    t_meta = time.perf_counter() - t0
    materialize_random(model, "cpu")
    model.eval()
    build_s = time.perf_counter() - t0

    lora = LAYERS * 4 * LORA_R * (HIDDEN + HIDDEN)
    variant_norms = LAYERS * (2 * 2 * (HIDDEN // HEADS) + HIDDEN)  # q/k LayerNorms, post_layernorm
    projection = linear(768, 4096) + linear(4096, HIDDEN)
    n_params = model.num_parameters()
    llm_params = sum(p.numel() for p in model.llm.parameters())
    assert llm_params - lora == PHI2 + variant_norms
    assert n_params == pytest.approx(eva_vit_g_224() + blip2_query_qformer() + projection + PHI2 + lora, rel=0.005)
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
    llm_dtypes = {p.dtype for n, p in model.llm.named_parameters() if "norm" not in n and "lora_" not in n}
    assert llm_dtypes == {torch.bfloat16}

    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    t1 = time.perf_counter()
    with torch.no_grad():
        batch = model.build_generation_inputs(["<Img><ImageHere></Img> Describe this image in detail."])
        emb = model.embed(batch, image)
        encode_s = time.perf_counter() - t1
        out = model.llm.generate(
            inputs_embeds=emb,
            attention_mask=batch["attention_mask"],
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,  # random weights may emit EOS at once; the timing wants all 8
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **model.stopping_kwargs([]),
        )
    gen_s = time.perf_counter() - t1
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    assert out.sequences.shape == (1, NEW_TOKENS)
    assert torch.isfinite(emb.float()).all() and torch.isfinite(torch.stack(out.logits).float()).all()
    print(
        f"\nfull-size tinygptv stage1_2_3, bf16, CPU ({torch.get_num_threads()} threads, torch {torch.__version__}): "
        f"{n_params:,} parameters ({llm_params:,} in the LLM incl. LoRA r=64); "
        f"prompt {int(batch['attention_mask'].sum())} tokens incl. {model.num_image_tokens()} image slots\n"
        f"build {build_s:.1f} s (meta {t_meta:.1f} s + materialise), generate {NEW_TOKENS} tokens {gen_s:.1f} s "
        f"(image encoding + embedding {encode_s:.1f} s, then prefill and decoding {gen_s - encode_s:.1f} s), "
        f"peak RSS {peak_gib:.2f} GiB"
    )
