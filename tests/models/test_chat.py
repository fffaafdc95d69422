"""Chat: multi-turn prompts with one image, reset, errors, streaming, context overflow, batches for eval."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from shared_helpers import ForceTokens
from transformers import LogitsProcessorList

from minigpt.models import load_model
from minigpt.models.generation.chat import Chat
from minigpt.models.generation.conversation import IMAGE_PROMPT


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tinygptv", "tiny", is_eval=True)


@pytest.fixture()
def image():
    torch.manual_seed(1)
    return torch.randn(3, 64, 64)


def _say(model, text):
    """Generation arguments that make the model answer exactly ``text``."""
    tok = model.tokenizer
    ids = tok(" " + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return {"logits_processor": LogitsProcessorList([ForceTokens(ids)])}


def test_second_turn_prompt_holds_the_first_turn_and_one_image(model, image):
    tok = model.tokenizer
    chat = Chat(model, max_new_tokens=12)
    chat.upload_image(image)
    chat.ask("[vqa] what colour is the circle?")
    assert chat.answer(**_say(model, "bright red")) == "bright red"
    chat.ask("and the square?")

    text = chat.prompt_text()
    assert text.count(IMAGE_PROMPT) == 1
    order = [
        text.index(s) for s in (IMAGE_PROMPT, "what colour is the circle?", "bright red", "and the square?")
    ]
    assert order == sorted(order)
    assert text.endswith("###Human: and the square? ###Assistant:")  # ends where the answer starts

    inputs = chat.model_inputs()
    assert int(inputs["media_mask"].sum()) == model.num_image_tokens()  # exactly one image's slots
    ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool() & ~inputs["media_mask"][0]]
    decoded = tok.decode(ids)
    for s in ("what colour is the circle?", "bright red", "and the square?"):
        assert s in decoded
    assert decoded.count("<ImageHere>") == 0 and decoded.count("<Img>") == 1

    # the chat answers what the model answers for the same conversation
    expected = model.generate(image[None], [chat.turns()], history=[["bright red"]], max_new_tokens=12)[0]
    assert chat.answer() == expected
    assert chat.history == [("[vqa] what colour is the circle?", "bright red"), ("and the square?", expected)]


def test_reset_clears_image_and_turns(model, image):
    chat = Chat(model, max_new_tokens=4)
    chat.upload_image(image)
    chat.ask("hi")
    chat.answer()
    chat.reset()
    assert chat.history == [] and chat.image is None and not chat.pending
    chat.ask("a question without an image")  # allowed: the models also train on text-only samples
    assert IMAGE_PROMPT not in chat.prompt_text()
    assert not chat.model_inputs()["media_mask"].any()
    chat.upload_image(image)  # a new conversation may have its image again


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_empty_message_is_a_clear_error(model, message):
    with pytest.raises(ValueError, match="empty message"):
        Chat(model).ask(message)


def test_misuse_is_a_clear_error(model, image):
    chat = Chat(model, max_new_tokens=4)
    with pytest.raises(ValueError, match="call ask\\(\\) first"):
        chat.answer()
    chat.upload_image(image)
    with pytest.raises(ValueError, match="already has an image"):
        chat.upload_image(image)
    chat.ask("q")
    with pytest.raises(ValueError, match="no answer yet"):
        chat.ask("another")
    with pytest.raises(ValueError, match="without <Img><ImageHere></Img>"):
        Chat(model).ask(f"{IMAGE_PROMPT} q")
    with pytest.raises(ValueError, match="needs an image"):
        Chat(model, require_image=True).ask("q")
    with pytest.raises(ValueError, match=r"must be \[3, H, W\]"):
        Chat(model).upload_image(torch.zeros(2, 3, 64, 64))


def test_images_from_pil_and_path_go_through_the_eval_processor(model, tmp_path):
    chat = Chat(model)
    pil = Image.new("RGB", (90, 70), (200, 30, 30))
    chat.upload_image(pil)
    assert chat.image.shape == (3, 64, 64)
    path = tmp_path / "red.png"
    pil.save(path)
    other = Chat(model)
    other.upload_image(str(path))
    assert torch.allclose(other.image, chat.image)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        Chat(model).upload_image(str(tmp_path / "missing.png"))


def test_stream_answer_joins_to_the_answer_and_is_recorded(model, image):
    plain, streamed = Chat(model, max_new_tokens=16), Chat(model, max_new_tokens=16)
    for chat in (plain, streamed):
        chat.upload_image(image)
        chat.ask("[caption] describe it")
    full = plain.answer()
    pieces = list(streamed.stream_answer())
    assert "".join(pieces) == full
    assert streamed.history == plain.history


def test_an_overlong_conversation_leaves_out_the_oldest_turns_but_not_the_image(model, image):
    chat = Chat(model, max_new_tokens=4)
    chat.upload_image(image)
    for i, word in enumerate(["first", "second", "third"]):
        chat.ask(f"question {word}")
        chat.answer(**_say(model, f"answer {i}"))
    chat.ask("last question")
    full = int(chat.model_inputs()["attention_mask"].sum())
    chat.max_context_tokens = full + 4 - 1  # one token short of fitting with max_new_tokens=4
    text = chat.prompt_text()
    assert "question second" not in text and "answer 1" not in text  # the oldest droppable turn went
    assert IMAGE_PROMPT + " question first" in text and "question third" in text and "last question" in text
    assert int(chat.model_inputs()["media_mask"].sum()) == model.num_image_tokens()
    assert len(chat.history) == 4  # the history keeps everything
    chat.max_context_tokens = 10
    with pytest.raises(ValueError, match="does not fit the model's context"):
        chat.answer()


def test_answer_batch_matches_one_chat_per_question(model):
    torch.manual_seed(2)
    images = [torch.randn(3, 64, 64), None, torch.randn(3, 64, 64)]
    questions = ["[vqa] what colour is the circle?", "hello there", "[caption] describe it briefly"]
    chat = Chat(model, max_new_tokens=10)
    batch = chat.answer_batch(images, questions)
    for img, q, got in zip(images, questions, batch):
        single = Chat(model, max_new_tokens=10)
        if img is not None:
            single.upload_image(img)
        single.ask(q)
        assert single.answer() == got
    assert chat.history == []


def test_a_video_file_is_sampled_by_the_presets_video_processor_and_answered(model, tmp_path):
    pytest.importorskip("decord")
    pytest.importorskip("av")
    from shared_helpers import moving_square_frames, write_mp4

    from minigpt.models.generation.conversation import with_video

    path = write_mp4(tmp_path / "clip.mp4", moving_square_frames("left"))
    chat = Chat(model, max_new_tokens=6)
    chat.upload_video(path)
    assert chat.image.shape == (4, 3, 64, 64)  # the tiny preset's video_eval: 4 frames at 64 px
    with pytest.raises(ValueError, match="already has an image or a video"):
        chat.upload_video(path)
    chat.ask("which way does it move?")
    assert chat.turns() == [with_video("which way does it move?")]
    n = model.num_video_tokens(4)
    assert int(chat.model_inputs()["media_mask"].sum()) == n
    want = model.generate([chat.image], chat.turns(), max_new_tokens=6)[0]
    assert "".join(chat.stream_answer()) == want
    chat.ask("and the colour?")  # the second turn still sees the video
    assert int(chat.model_inputs()["media_mask"].sum()) == n
    want = model.generate([chat.image], [chat.turns()], history=[list(chat.answers)], max_new_tokens=6)[0]
    assert chat.answer() == want
    with pytest.raises(ValueError, match=r"without .*<VideoHere>"):
        Chat(model).ask("<VideoHere> what?")
