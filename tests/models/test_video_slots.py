"""Video in the TinyGPT-V / MiniGPT-4 / MiniGPT-v2 families: a <VideoHere> slot filled frame by frame.

Each frame of a video goes through the family's own encoder and projector; ``model.video_pooling``
averages the frames' tokens (``mean``) or lays them out one frame after another (``concat``), at the
one slot. Text-only, image and video samples mix in one batch, in training and in generation.
"""

from __future__ import annotations

import pytest
import torch
from shared_helpers import assert_trains_vision_encoder

from minigpt.common.constants import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, VIDEO_TOKEN
from minigpt.models import load_model
from minigpt.models.composition.layout import media_kinds
from minigpt.models.composition.media import gather_media

IMG, VID = IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER
T = 3  # frames per test video


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["tinygptv", "minigpt4", "minigpt_v2"])
def family(request):
    torch.manual_seed(0)
    model = load_model(request.param, "tiny", is_eval=True)
    return model, int(model.cfg.vision_encoder.image_size)


def _mixed(size: int):
    """Four samples: an image, a video, text only, and an image then a video in one prompt."""
    img, vid, vid2 = _pixels(3, size, size), _pixels(T, 3, size, size, seed=1), _pixels(T, 3, size, size, seed=2)
    return {
        "image": [img, vid, None, [img, vid2]],
        "instruction_input": [f"{IMG} what?", f"{VID} where does it go?", "hello", f"{IMG} then {VID} same?"],
        "answer": ["a circle", "left", "hi", "no"],
    }


def test_slot_kinds_come_from_the_text_in_order():
    assert media_kinds(f"{IMG} a {VID} b {IMG}") == ["image", "video", "image"]
    from minigpt.models.composition.layout import PromptLayout

    assert PromptLayout.slot_kinds([f"{VID} x", ["hi", f"{IMG} y"], "none"]) == [["video"], ["image"], []]


def test_gather_media_reads_each_item_against_its_slot_kind():
    img, vid = _pixels(3, 8, 8), _pixels(T, 3, 8, 8)
    media = gather_media([vid, img, [img, vid], None], [["video"], ["image"], ["image", "video"], []])
    assert media.kinds == ["video", "image", "image", "video"] and media.counts == [1, 1, 2, 0]
    assert media.items.shape == (2, 3, 8, 8) and media.videos.shape == (2, T, 3, 8, 8)
    # a stacked batch of videos [B, T, 3, H, W]: one per sample with a slot
    batched = gather_media(torch.stack([vid, vid]), [["video"], []])
    assert batched.items is None and batched.videos.shape == (1, T, 3, 8, 8)
    # a [T, 3, H, W] tensor on an image slot is T images, not one video
    with pytest.raises(ValueError, match=r"sample 0: 1 <ImageHere> slot\(s\) in the text but 3 image"):
        gather_media([vid], [["image"]])
    with pytest.raises(ValueError, match=r"sample 0: media slot 0 is <VideoHere>, which takes \[T, 3, H, W\]"):
        gather_media([img], [["video"]])
    with pytest.raises(ValueError, match="videos of one batch must share a shape"):
        gather_media([vid, _pixels(T + 1, 3, 8, 8)], [["video"], ["video"]])
    with pytest.raises(ValueError, match="but no media were given"):
        gather_media(None, [["video"]])


@pytest.mark.parametrize("pooling", ["mean", "concat"])
def test_video_slot_holds_the_pooled_frames(family, pooling):
    model, size = family
    model.video_pooling = pooling
    try:
        samples = _mixed(size)
        media = gather_media(samples["image"], model.layout.slot_kinds(samples["instruction_input"]))
        lengths = model.media_lengths(media)
        n = model.num_image_tokens()
        per_video = n if pooling == "mean" else n * T
        assert lengths == [[n], [per_video], [], [n, per_video]]
        batch = model.build_inputs(samples["instruction_input"], None, lengths)
        assert batch["media_mask"].sum(1).tolist() == [n, per_video, 0, n + per_video]
        emb = model.embed_media(batch, media)
        frames = model.encode_images(samples["image"][1])  # [T, N, D], each frame as an image
        want = frames.mean(0) if pooling == "mean" else frames.flatten(0, 1)
        assert torch.allclose(emb[1][batch["media_mask"][1]], want, atol=1e-5)
        # the image then the video, each at its own slot
        got = emb[3][batch["media_mask"][3]]
        assert torch.allclose(got[:n], model.encode_images(samples["image"][0][None])[0], atol=1e-5)
        second = model.encode_images(samples["image"][3][1])
        want2 = second.mean(0) if pooling == "mean" else second.flatten(0, 1)
        assert torch.allclose(got[n:], want2, atol=1e-5)
    finally:
        model.video_pooling = "mean"


def test_a_mixed_batch_trains(family):
    model, size = family
    assert_trains_vision_encoder(model, _mixed(size))


def test_generation_answers_a_video_alone_as_in_a_mixed_batch(family):
    model, size = family
    samples = _mixed(size)
    together = model.generate(samples["image"], samples["instruction_input"], max_new_tokens=5)
    alone = model.generate([samples["image"][1]], [samples["instruction_input"][1]], max_new_tokens=5)
    assert together[1] == alone[0]
    streamed = "".join(model.stream_generate(samples["image"][1][None], samples["instruction_input"][1], max_new_tokens=5))
    assert streamed == alone[0]


def test_video_needs_its_lengths_and_pooling_is_checked(family):
    model, _ = family
    with pytest.raises(ValueError, match="need media_lengths"):
        model.build_generation_inputs([f"{VID} x"])
    with pytest.raises(ValueError, match="model.video_pooling must be one of mean, concat, got 'max'"):
        type(model)(model.vision_encoder, model.projector, model.llm, video_pooling="max")


def test_untagged_layout_puts_the_video_slot_in_bare():
    torch.manual_seed(0)
    model = load_model("tinygptv", "tiny", is_eval=True, overrides={"image_tags": False, "image_markers": "text"})
    text = model.layout.prompt_text([f"{VID} where?"])
    assert VIDEO_TOKEN in text and "<Video>" not in text
    vid = _pixels(T, 3, 64, 64)
    out = model({"image": [vid], "instruction_input": [f"{VID} where?"], "answer": ["left"]})
    assert torch.isfinite(out["loss"])
