"""The multimodal composition: loss masking, image splicing, generation, checkpoints, presets."""

import pytest
import torch

from minigpt.common.constants import IGNORE_INDEX
from minigpt.models import load_model, load_model_and_preprocess, model_zoo
from minigpt.models.weights.checkpoint import load_trained, save_trained
from minigpt.models.weights.names import canonical_name

PROMPT = "<Img><ImageHere></Img> [vqa] what color is the circle?"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tinygptv", "tiny", is_eval=True)


def test_load_model_and_preprocess_gives_processors_that_feed_the_model():
    from PIL import Image

    m, vis, txt = load_model_and_preprocess("tinygptv", "tiny", is_eval=True, device="cpu")
    img = vis["eval"](Image.new("RGB", (90, 70), (200, 30, 30)))
    assert img.shape == (3, 64, 64)
    out = m({"image": img[None], "instruction_input": [PROMPT], "answer": ["red"]})
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert "tinygptv" in str(model_zoo) and "tiny" in str(model_zoo)


def test_labels_cover_only_answer_tokens_and_eos(model):
    batch = model.build_inputs([PROMPT, ["<Img><ImageHere></Img> hi", "and then?"]], ["red", ["a b", "c"]], 16)
    tok = model.tokenizer
    labels, ids = batch["labels"], batch["input_ids"]
    for i, answers in enumerate([["red"], ["a b", "c"]]):
        supervised = ids[i][labels[i] != IGNORE_INDEX].tolist()
        expected = []
        for a in answers:
            expected += tok(" " + a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert supervised == expected
    # the one placeholder became 16 image slots, never supervised
    assert batch["media_mask"].sum(1).tolist() == [16, 16]
    assert (labels[batch["media_mask"]] == IGNORE_INDEX).all()


def test_image_embeddings_land_in_the_image_slots(model):
    images = torch.randn(2, 3, 64, 64)
    batch = model.build_inputs([PROMPT, "<Img><ImageHere></Img> x"], None, model.num_image_tokens(), "left")
    emb = model.embed(batch, images)
    img = model.encode_images(images)
    for i in range(2):
        assert torch.allclose(emb[i][batch["media_mask"][i]], img[i])


def test_loss_depends_on_the_image(model):
    s = {"instruction_input": [PROMPT] * 2, "answer": ["red"] * 2}
    a = model({**s, "image": torch.zeros(2, 3, 64, 64)})["loss"]
    b = model({**s, "image": torch.randn(2, 3, 64, 64)})["loss"]
    assert not torch.allclose(a, b)


def test_generation_with_cache_equals_without_and_batch_equals_single(model):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 64, 64)
    prompts = [PROMPT, "<Img><ImageHere></Img> [caption] describe this picture in a few words please", "hello"]
    with_cache = model.generate(images, prompts, max_new_tokens=8, use_cache=True)
    no_cache = model.generate(images, prompts, max_new_tokens=8, use_cache=False)
    assert with_cache == no_cache
    singles = [model.generate(images[i : i + 1], [p], max_new_tokens=8)[0] for i, p in enumerate(prompts)]
    assert singles == with_cache


def test_checkpoint_names_survive_adding_lora(tmp_path):
    torch.manual_seed(0)
    plain = load_model("tinygptv", "tiny")
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01)
    save_trained(plain, str(tmp_path / "ck"))
    lora = load_model("tinygptv", "tiny", overrides={"llm": {"lora_r": 4}})
    loaded, unexpected = load_trained(lora, str(tmp_path / "ck"))
    assert not unexpected and len(loaded) > 0
    ref = dict(plain.named_parameters())
    for name, p in lora.named_parameters():
        c = canonical_name(name)
        if "lora_" not in c:
            assert torch.equal(p, ref[c]), name
    # LoRA B starts at zero, so the wrapped model computes exactly what the plain one does
    s = {"image": torch.randn(1, 3, 64, 64), "instruction_input": [PROMPT], "answer": ["red"]}
    plain.eval(), lora.eval()
    assert torch.allclose(plain(s)["loss"], lora(s)["loss"], atol=1e-6)


def test_a_pipeline_folder_loads_every_stage_in_order(tmp_path):
    """model.ckpt=<pipeline output folder>: the stages' checkpoints, in order, give the whole model even
    where a stage froze a part (its checkpoint lacks it) and where stages overlap (the later wins)."""
    from minigpt.common.constants import PIPELINE_FILE
    from minigpt.models.weights.checkpoint import expand_checkpoints
    from minigpt.runners.pipeline import write_manifest

    torch.manual_seed(0)
    trained = load_model("tinygptv", "tiny")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    out = tmp_path / "pipe"
    is_vision = lambda n: n.startswith("vision_encoder.")  # noqa: E731
    for n, p in trained.named_parameters():  # stage1 froze the encoder: its checkpoint lacks it
        p.requires_grad_(not is_vision(n))
    save_trained(trained, str(out / "stage1"))
    # stage0 holds the encoder and a stale copy of one LLM tensor, which stage1 overrides
    head = next(n for n, _ in trained.named_parameters() if n.startswith("llm."))
    stale = load_model("tinygptv", "tiny")
    ref = dict(trained.named_parameters())
    with torch.no_grad():
        for n, p in stale.named_parameters():
            p.requires_grad_(n == head or is_vision(n))
            if is_vision(n):
                p.copy_(ref[n])
        dict(stale.named_parameters())[head].add_(5.0)
    save_trained(stale, str(out / "stage0"))
    write_manifest(str(out), "p", "pipe.yaml", {"stage0": str(out / "stage0"), "stage1": str(out / "stage1")})

    assert expand_checkpoints(str(out)) == [str(out / "stage0"), str(out / "stage1")]
    assert expand_checkpoints([str(out / "stage1"), str(out)])[0] == str(out / "stage1")  # plain paths stay
    loaded = load_model("tinygptv", "tiny", checkpoint=str(out))
    for n, p in loaded.named_parameters():
        assert torch.equal(p, ref[n]), n

    (out / PIPELINE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"pipeline.json is not a pipeline manifest"):
        expand_checkpoints(str(out))


def test_lora_and_freezing_policy():
    m = load_model("tinygptv", "tiny", overrides={"llm": {"freeze": True, "trainable_norms": True, "lora_r": 8},
                                                  "vision_encoder": {"freeze": True}})
    trained = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trained)
    assert any("layernorm" in n for n in trained)
    assert not any(n.startswith("vision_encoder.") for n in trained)
    assert any(n.startswith("projector.") for n in trained)
    assert not any(n.endswith("q_proj.base_layer.weight") for n in trained)


@pytest.mark.parametrize("name", ["tinygptv", "minigpt4", "minigpt_v2"])
def test_every_family_builds_on_meta_and_runs_tiny(name):
    meta = load_model(name, "tiny", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    m = load_model(name, "tiny")
    assert meta.num_parameters() == m.num_parameters()
    out = m({"image": torch.randn(2, 3, 64, 64), "instruction_input": [PROMPT] * 2, "answer": ["red", "blue"]})
    out["loss"].backward()
    assert all(p.grad is not None for p in m.projector.parameters())


def test_unknown_model_type_lists_the_known_ones():
    with pytest.raises(KeyError, match="available: tiny"):
        load_model("tinygptv", "huge")


def test_grid_token_embeddings_start_ordered_by_value(model):
    tok = model.tokenizer
    emb = model.llm.model.get_input_embeddings().weight
    out = model.llm.model.get_output_embeddings().weight
    ids = [tok.convert_tokens_to_ids(f"<{i}>") for i in (10, 12, 60)]
    for w in (emb, out):
        e = torch.nn.functional.normalize(w[ids], dim=1)
        near, far = float(e[0] @ e[1]), float(e[0] @ e[2])
        assert near > 0.8 and near > far + 0.3
    # the scale matches the other (randomly initialised) rows
    other = emb[: tok.convert_tokens_to_ids("<0>")]
    assert 0.5 < float(emb[ids].std() / other.std()) < 2.0
