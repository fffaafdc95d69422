"""model.media_paths: a stored-feature chain beside the pixel chain, so pixel images, videos, stored
features and text-only samples train in one batch."""

from __future__ import annotations

import pytest
import torch

from minigpt.common.constants import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER
from minigpt.models import load_model
from minigpt.models.composition.media import FEATURE, IMAGE, VIDEO, gather_media

FEATURES = {"features": {"vision_encoder": {"name": "precomputed", "dim": 32, "tokens": 1},
                         "projector": {"name": "linear", "bias": False, "dropout": 0.1}}}
PROMPTS = [f"{IMAGE_PLACEHOLDER} what is it?", f"{VIDEO_PLACEHOLDER} where does it go?",
           f"{IMAGE_PLACEHOLDER} which colour?", "add 2 and 3"]
ANSWERS = ["a circle", "left", "red", "5"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("minigpt4", "tiny", overrides={"media_paths": FEATURES})


def four_kinds(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g), torch.randn(32, generator=g), None]


def test_gather_reads_one_and_two_dimensional_items_as_stored_features_only_with_a_feature_chain():
    media = four_kinds(0)
    slots = [[IMAGE], [VIDEO], [IMAGE], []]
    mixed = gather_media(media, slots, stored_features=True)
    assert mixed.kinds == [IMAGE, VIDEO, FEATURE]
    assert mixed.items.shape == (1, 3, 64, 64) and mixed.videos.shape == (1, 2, 3, 64, 64)
    assert mixed.features.shape == (1, 32)
    with pytest.raises(ValueError, match="images of one batch must share a shape"):
        gather_media(media, slots)  # a one-chain model: pixels and features cannot share its encoder
    plain = gather_media([media[0], None], [[IMAGE], []])
    assert plain.kinds == [IMAGE] and plain.features is None
    batched = gather_media(torch.randn(3, 32), [[IMAGE], [], [IMAGE]], stored_features=True)
    assert batched.kinds == [FEATURE, FEATURE] and batched.features.shape == (2, 32) and batched.items is None


def test_one_batch_of_image_video_features_and_text_trains_both_projectors(model):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model({"image": four_kinds(1), "instruction_input": PROMPTS, "answer": ANSWERS})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    for name, part in (("pixel", model.projector), ("features", model.media_paths["features"].projector)):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, f"no gradient reached the {name} projector"
    model.zero_grad(set_to_none=True)


def _logits(model, media) -> torch.Tensor:
    kinds = model.layout.slot_kinds(PROMPTS, ANSWERS)
    gathered = model.gather(media, kinds)
    batch = model.build_inputs(PROMPTS, ANSWERS, model.media_lengths(gathered))
    emb = model.embed_media(batch, gathered)
    return model.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]).logits


def test_the_text_only_rows_logits_do_not_depend_on_the_media(model):
    model.eval()
    with torch.no_grad():
        a, b = _logits(model, four_kinds(2)), _logits(model, four_kinds(3))
    assert not torch.allclose(a[:3], b[:3])  # the media rows see their media
    torch.testing.assert_close(a[3], b[3], rtol=0, atol=1e-5)


def test_an_image_only_step_still_gives_the_idle_feature_chain_a_gradient(model):
    # data-parallel training waits for every trainable parameter's gradient, also of a chain a step does not use
    model.train()
    model.zero_grad(set_to_none=True)
    out = model({"image": [torch.randn(3, 64, 64)], "instruction_input": PROMPTS[:1], "answer": ANSWERS[:1]})
    out["loss"].backward()
    grads = [p.grad for p in model.media_paths["features"].parameters() if p.requires_grad]
    assert grads and all(g is not None and not g.any() for g in grads)
    model.zero_grad(set_to_none=True)


def test_the_feature_chain_saves_and_loads_alone(model, tmp_path):
    model.save_media_path("features", str(tmp_path / "features"))
    other = load_model("minigpt4", "tiny", overrides={"media_paths": FEATURES})
    key = "media_paths.features.projector.proj.weight"
    assert not torch.equal(other.state_dict()[key], model.state_dict()[key])
    loaded = other.load_checkpoint(str(tmp_path / "features"))
    assert loaded == [key]
    torch.testing.assert_close(other.state_dict()[key], model.state_dict()[key])
    with pytest.raises(ValueError, match="no media path 'pixels'"):
        model.save_media_path("pixels", str(tmp_path / "x"))


def test_default_presets_have_no_feature_chain():
    plain = load_model("minigpt4", "tiny")
    assert len(plain.media_paths) == 0
    assert not any(k.startswith("media_paths.") for k in plain.state_dict())


@pytest.mark.parametrize(
    "block, message",
    [
        ({"audio": FEATURES["features"]}, r"model\.media_paths\.audio: unknown media kind"),
        ({"features": {"projector": {"name": "linear"}}}, r"model\.media_paths\.features needs a vision_encoder"),
        ({"features": {**FEATURES["features"], "vision_encoder": {"name": "tiny_vit"}}},
         r"model\.media_paths\.features\.vision_encoder: .*'tiny_vit' reads pixels"),
    ],
)
def test_a_bad_media_paths_block_is_refused_naming_the_key(block, message):
    with pytest.raises(ValueError, match=message):
        load_model("minigpt4", "tiny", overrides={"media_paths": block})


def test_a_vision_feature_cache_beside_a_feature_chain_is_refused(model):
    model.vision_feature_point = "projector"  # what run.vision_feature_cache sets on the model
    try:
        with pytest.raises(ValueError, match="run.vision_feature_cache .* model.media_paths.features"):
            model.gather(torch.randn(2, 64, 128), [[IMAGE], [IMAGE]])
    finally:
        del model.vision_feature_point
