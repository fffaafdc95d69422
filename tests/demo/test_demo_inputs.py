"""What the demo accepts: uploads (non-image, corrupt, empty, enormous, transparent, rotated) and messages."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image, ImageFile

from minigpt.common.grounding import parse_box
from minigpt.datasets.datasets.base_dataset import load_prompts
from minigpt.demo.examples import write_examples
from minigpt.demo.inputs import (
    DEMO_TASKS,
    DemoInputError,
    UploadLimits,
    compose_prompt,
    image_key,
    load_image,
)


def _png(path, size=(40, 30), colour=(200, 30, 40), mode="RGB") -> str:
    Image.new(mode, size, colour).save(path)
    return str(path)


# -- uploads ---------------------------------------------------------------------------------------
def test_no_image_asks_for_one():
    with pytest.raises(DemoInputError, match="Upload an image first"):
        load_image(None)


def test_a_file_that_is_not_an_image_is_named_and_refused(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 not pixels at all")
    with pytest.raises(DemoInputError, match=r"report\.pdf is not an image .*JPEG, PNG"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("pil_global", [False, True])
def test_a_truncated_image_is_refused_as_corrupt(tmp_path, fmt, pil_global, monkeypatch):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    # with the global on (lmms-eval turns it on when imported) PIL itself would fill the missing half with grey
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pil_global)
    with pytest.raises(DemoInputError, match=rf"cut\.{fmt.lower()} .*(corrupt|truncated)"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is pil_global  # the setting is left as it was


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DemoInputError, match="empty.jpg is empty"):
        load_image(path)


def test_a_file_over_the_byte_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.png"
    Image.effect_noise((200, 200), 80).convert("RGB").save(path)
    size = os.path.getsize(path)
    with pytest.raises(DemoInputError, match=r"big\.png is .* MB; this demo takes images up to"):
        load_image(path, UploadLimits(max_bytes=size - 1))
    assert load_image(path, UploadLimits(max_bytes=size)).size == (200, 200)


def test_an_enormous_image_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    path = _png(tmp_path / "wide.png", size=(3000, 2000), colour=0, mode="L")  # small file, 6 MP

    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(
        DemoInputError, match=r"wide\.png is 3000x2000 \(6\.0 megapixels\).*up to 5\.0 megapixels"
    ):
        load_image(path, UploadLimits(max_pixels=5_000_000))


def test_pils_own_bomb_limit_is_reported_as_too_large(tmp_path, monkeypatch):
    path = _png(tmp_path / "bomb.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x 1,000: PIL refuses to open it
    with pytest.raises(DemoInputError, match=r"bomb\.png is too large to decode safely"):
        load_image(path, UploadLimits(max_pixels=10**9))


def test_large_images_are_shrunk_to_max_side_keeping_the_aspect_ratio(tmp_path):
    path = _png(tmp_path / "photo.png", size=(1600, 800))
    image = load_image(path, UploadLimits(max_side=400))
    assert image.size == (400, 200) and image.mode == "RGB"


def test_transparency_is_laid_over_white_and_exif_rotation_applied(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "clear.png")
    image = load_image(tmp_path / "clear.png")
    assert image.getpixel((5, 5)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 255)

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate 90 degrees clockwise
    Image.new("RGB", (60, 20), (10, 200, 10)).save(tmp_path / "turned.jpg", exif=exif)
    assert load_image(tmp_path / "turned.jpg").size == (20, 60)


def test_image_key_follows_the_pixels():
    a = Image.new("RGB", (8, 8), (1, 2, 3))
    assert image_key(a) == image_key(a.copy())
    b = a.copy()
    b.putpixel((7, 7), (1, 2, 4))
    assert image_key(a) != image_key(b)
    assert image_key(a) != image_key(Image.new("RGB", (4, 16), (1, 2, 3)))  # same bytes, other shape


def test_upload_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_pixels"):
        UploadLimits(max_pixels=0)
    with pytest.raises(ValueError, match="max_side"):
        UploadLimits(max_side=-5)


# -- messages --------------------------------------------------------------------------------------
@pytest.mark.parametrize("message", ["", "   ", None, "\n\t"])
def test_an_empty_message_is_refused(message):
    with pytest.raises(DemoInputError, match="Type a message first"):
        compose_prompt(message, "chat")
    with pytest.raises(DemoInputError, match="Type a message first"):
        compose_prompt(message, "refer")


def test_the_task_shortcut_puts_its_tag_in_front():
    assert compose_prompt("  what colour is it? ", "vqa") == "[vqa] what colour is it?"
    assert compose_prompt("what colour is it?", "chat") == "what colour is it?"
    assert compose_prompt("what colour is it?", None) == "what colour is it?"
    # a tag the user typed wins over the shortcut
    assert compose_prompt("[refer] the red circle", "vqa") == "[refer] the red circle"


def test_caption_and_grounding_need_no_text():
    caption = load_prompts("prompts/caption.txt")[0]
    grounded = load_prompts("prompts/grounded_caption.txt")[0]
    assert compose_prompt("", "caption") == f"[caption] {caption}"
    assert compose_prompt("[grounding]", "chat") == f"[grounding] {grounded}"
    assert compose_prompt("describe the circle", "caption") == "[caption] describe the circle"


def test_identify_needs_a_box():
    with pytest.raises(DemoInputError, match=r"\{<10><20><50><60>\}"):
        compose_prompt("what is this", "identify")
    assert (
        compose_prompt("what is this {<1><2><30><40>}", "identify")
        == "[identify] what is this {<1><2><30><40>}"
    )


def test_other_bad_messages():
    with pytest.raises(DemoInputError, match="Unknown task 'detect'"):
        compose_prompt("x", "detect")
    with pytest.raises(DemoInputError, match="keep it under 50"):
        compose_prompt("x" * 51, "chat", max_chars=50)
    with pytest.raises(DemoInputError, match="places the image itself"):
        compose_prompt("<Img><ImageHere></Img> what is it?", "vqa")


# -- examples --------------------------------------------------------------------------------------
def test_examples_are_inputs_the_demo_accepts(tmp_path):
    examples = write_examples(str(tmp_path / "examples"))
    assert {e.task for e in examples} == set(DEMO_TASKS)
    for e in examples:
        assert load_image(e.image_path).size == (64, 64)
        prompt = compose_prompt(e.message, e.task)
        assert prompt.startswith(f"[{e.task}] ")
    refer = next(e for e in examples if e.task == "refer")
    assert parse_box(refer.expected) is not None
    # drawn again, the same scenes: examples do not change between starts
    again = write_examples(str(tmp_path / "again"))
    for a, b in zip(examples, again):
        assert image_key(load_image(a.image_path)) == image_key(load_image(b.image_path))
