"""MM-LLaMA: one token per image or video, the Llama-2 chat layout, features instead of pixels, real-size shapes."""

from __future__ import annotations

import pytest
import torch
from test_imagebind_vit import IMAGEBIND_HUGE_VISION
from test_presets_meta import LLAMA_7B

from minigpt.common.constants import IGNORE_INDEX
from minigpt.models import load_model
from minigpt.models.parts.vision_encoders.precomputed import PrecomputedFeatures

IMG = "<Img><ImageHere></Img>"
VID = "<Vid><ImageHere></Vid>"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("mm_llama", "tiny")


def test_tiny_trains_projector_and_lora_only(tiny):
    assert tiny.num_image_tokens() == 1
    trainable = [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert "projector.proj.weight" in trainable and "projector.proj.bias" not in dict(tiny.named_parameters())
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(("q_proj" in n or "v_proj" in n) for n in lora)
    assert set(trainable) == {"projector.proj.weight", *lora}
    assert isinstance(tiny.projector.dropout, torch.nn.Dropout) and tiny.projector.dropout.p == 0.1


def test_llama2_chat_layout_puts_one_slot_after_the_question(tiny):
    tok = tiny.tokenizer
    batch = tiny.build_inputs([[f"{IMG} What colour?", "And now?"]], [["red", "blue"]], 1)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    slot = ids.index(tiny.image_token_id)
    assert ids.count(tiny.image_token_id) == 1
    before, after = tok.decode(ids[:slot]), tok.decode(ids[slot + 1 :])
    assert before == "<s>[INST] What colour? <<IMG>>"
    assert after == "<</IMG>> [/INST] red</s><s>[INST] And now? [/INST] blue</s>"
    supervised = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert supervised == " red</s> blue</s>"
    last = tiny.layout.__class__(tok, tiny.template, 128, image_markers="text", supervise="last")
    batch = last.build([[f"{IMG} What colour?", "And now?"]], [["red", "blue"]], 1, truncate=True)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]) == " blue</s>"
    video = tiny.build_inputs([f"{VID} Where does it go?"], ["left"], 1)["input_ids"][0].tolist()
    assert tok.decode(video[: video.index(tiny.image_token_id)]) == "<s>[INST] Where does it go? <<VID>>"


def test_batch_mixing_images_and_text_only_and_videos(tiny):
    tiny.train()
    out = tiny({"image": torch.randn(2, 3, 64, 64), "instruction_input": [f"{IMG} q", "text only"], "answer": ["a", "b"]})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and tiny.projector.proj.weight.grad is not None
    videos = torch.randn(2, 15, 3, 2, 64, 64)  # the video_imagebind processor's views, batched
    out = tiny({"image": videos, "instruction_input": [f"{VID} q"] * 2, "answer": ["a", "b"]})
    assert torch.isfinite(out["loss"])
    mixed = [videos[0], None]  # a video and a text-only sample, as collate keeps them
    out = tiny({"image": mixed, "instruction_input": [f"{VID} q", "text only"], "answer": ["a", "b"]})
    assert torch.isfinite(out["loss"])
    tiny.eval()
    with torch.no_grad():
        texts = tiny.generate([torch.randn(3, 64, 64), None], [f"{IMG} q", "text only"], max_new_tokens=2)
    assert len(texts) == 2


def test_media_input_features_swaps_in_the_precomputed_encoder():
    model = load_model("mm_llama", "tiny", overrides={"media_input": "features"})
    assert isinstance(model.vision_encoder, PrecomputedFeatures) and model.vision_encoder.out_dim == 128
    feats = [torch.randn(128), None]  # one stored embedding a media item
    out = model({"image": feats, "instruction_input": [f"{IMG} q", "t"], "answer": ["a", "b"]})
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="model.media_input must be one of pixels, features"):
        load_model("mm_llama", "tiny", overrides={"media_input": "embeddings"})


def test_more_than_one_token_per_item_is_refused():
    with pytest.raises(ValueError, match="mm_llama puts one LLM token per image or video"):
        load_model("mm_llama", "tiny", overrides={"vision_encoder": {"name": "precomputed", "dim": 8, "tokens": 2}})


def test_qlora_without_cuda_names_the_key():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: 4-bit loading is possible here")
    with pytest.raises(RuntimeError, match=r"llm\.low_resource \(low_resource_bits=4\): 4-bit loading is impossible here"):
        load_model("mm_llama", "tiny", overrides={"llm": {"low_resource": True}})


def test_real_preset_on_meta_has_the_published_shapes():
    model = load_model("mm_llama", "llama2_chat_7b", device="meta")
    count = lambda m, trainable=False: sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)  # noqa: E731
    projector = 1024 * 4096  # Linear(1024 -> 4096), no bias
    lora = 32 * 2 * 64 * (4096 + 4096)  # r 64 on q_proj and v_proj of 32 layers
    assert count(model.vision_encoder) == IMAGEBIND_HUGE_VISION
    assert count(model.projector) == projector
    assert count(model.llm) == LLAMA_7B + lora  # the vocabulary stays Llama's 32000 (no rows for media tokens)
    assert count(model, trainable=True) == projector + lora
    assert model.num_image_tokens() == 1
    assert model.layout.prompt_text([f"{IMG} Describe it."]) == "<s>[INST] Describe it. <<IMG>><ImageHere><</IMG>> [/INST]"
