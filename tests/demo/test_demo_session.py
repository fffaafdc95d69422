"""DemoChat with the demo config's model (random init, ``model.ckpt=null``): streaming, turns, refusals, boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from minigpt.common.config import Config
from minigpt.datasets.synthetic import make_example
from minigpt.demo.cli import load_demo_model
from minigpt.demo.inputs import compose_prompt
from minigpt.demo.session import Conversation, DemoChat
from minigpt.models.generation.chat import Chat

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "eval_configs" / "quickstart_demo.yaml"


@pytest.fixture(scope="module")
def model():
    cfg = Config(DEMO_CONFIG, ["model.ckpt=null", "run.num_threads=1"])
    return load_demo_model(cfg, torch.device("cpu"))


@pytest.fixture(scope="module")
def chat(model):
    return DemoChat(model, max_new_tokens=8, max_new_tokens_limit=600)


@pytest.fixture()
def scene(tmp_path):
    ex = make_example(3, "test", 0)
    path = tmp_path / "scene.png"
    ex.image.save(path)
    return str(path), ex


def _final(replies):
    replies = list(replies)
    assert replies[-1].done and all(not r.done for r in replies[:-1])
    return replies[-1], replies


def test_answers_stream_and_match_a_plain_chat(model, chat, scene):
    path, ex = scene
    final, replies = _final(chat.respond(None, path, "what color is the square?", "vqa"))
    assert not final.error and "Answered in" in final.status
    ((question, answer),) = final.conversation.turns
    assert question == "[vqa] what color is the square?"
    # each streamed reply shows a beginning of the final answer, growing
    shown = [r.messages[-1]["content"] for r in replies[:-1]]
    assert len(shown) >= 2  # seeded: this random model says a few words here
    assert all(final.messages[-1]["content"].startswith(s) for s in shown)
    assert [len(s) for s in shown] == sorted(len(s) for s in shown)

    # the demo asks the model what a Chat asks it: same image, same prompt, same answer
    plain = Chat(model, require_image=True, max_new_tokens=8)
    plain.upload_image(Image.open(path).convert("RGB"))
    plain.ask(question)
    assert plain.answer() == answer


def test_turns_build_up_and_a_new_image_starts_over(chat, scene, tmp_path):
    path, _ = scene
    first, _ = _final(chat.respond(None, path, "how many shapes are there?", "vqa"))
    second, _ = _final(chat.respond(first.conversation, path, "", "caption"))
    assert [q for q, _ in second.conversation.turns] == [
        "[vqa] how many shapes are there?",
        compose_prompt("", "caption"),
    ]
    assert second.conversation.turns[0] == first.conversation.turns[0]
    assert [m["role"] for m in second.messages] == ["user", "assistant"] * 2

    other = tmp_path / "other.png"
    make_example(3, "test", 1).image.save(other)
    third, _ = _final(chat.respond(second.conversation, str(other), "how many shapes are there?", "vqa"))
    assert len(third.conversation.turns) == 1 and "new conversation" in third.status


@pytest.mark.parametrize(
    "image, message, settings, expected",
    [
        (None, "what is it?", {}, "Upload an image first"),
        ("scene", "  ", {}, "Type a message first"),
        ("scene", "what is this", {"task": "identify"}, "write the box"),
        ("scene", "hi", {"num_beams": 0}, "Beams must lie between 1 and 5"),
        ("scene", "hi", {"temperature": -0.5}, "Temperature must lie between 0 and 2"),
        ("scene", "hi", {"temperature": float("nan")}, "Temperature"),
        ("scene", "hi", {"max_new_tokens": 601}, "Max new tokens must lie between 1 and 600"),
        ("scene", "hi", {"max_new_tokens": "many"}, "not numbers"),
        # the prompt plus 500 new tokens does not fit the model's 512 positions
        ("scene", "describe " * 40, {"max_new_tokens": 500}, "does not fit the model's context"),
    ],
)
def test_refusals_leave_the_conversation_as_it_was(chat, scene, image, message, settings, expected):
    path, _ = scene
    before, _ = _final(chat.respond(None, path, "how many shapes are there?", "vqa"))
    args = {"task": "chat", **settings}
    replies = list(chat.respond(before.conversation, path if image == "scene" else image, message, **args))
    assert len(replies) == 1 and replies[0].error and replies[0].done
    assert expected in replies[0].status
    assert replies[0].conversation.turns == before.conversation.turns
    assert replies[0].messages == before.messages


def test_a_failure_in_the_model_is_reported_and_the_next_request_works(chat, scene, monkeypatch):
    path, _ = scene

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (injected)")

    with monkeypatch.context() as m:
        m.setattr(chat.model, "stream_generate", broken)
        replies = list(chat.respond(None, path, "how many shapes are there?", "vqa"))
    assert (
        replies[-1].error
        and "The model failed on this request: out of memory (injected)" in replies[-1].status
    )
    assert replies[-1].conversation.turns == []
    final, _ = _final(chat.respond(replies[-1].conversation, path, "how many shapes are there?", "vqa"))
    assert not final.error and len(final.conversation.turns) == 1


def test_on_image_reads_validates_and_resets(chat, scene, tmp_path):
    path, _ = scene
    ready = chat.on_image(None, path)
    assert not ready.error and ready.status.startswith("Image ready (64x64)")
    assert ready.conversation.image is not None and ready.conversation.turns == []

    bad = tmp_path / "bad.gif"
    bad.write_bytes(b"GIF89a" + b"\x00" * 5)
    refused = chat.on_image(ready.conversation, str(bad))
    assert refused.error and "bad.gif" in refused.status
    assert refused.conversation == Conversation()
    assert chat.on_image(ready.conversation, None).conversation == Conversation()


def test_boxes_to_draw():
    # the answer's own boxes, numbered when the answer names none
    boxes = DemoChat.answer_boxes("[refer] the circles", "{<0><0><10><10>} and {<50><50><60><60>}")
    assert boxes == [("1", [0, 0, 10, 10]), ("2", [50, 50, 60, 60])]
    assert DemoChat.answer_boxes("[grounding] x", "<p>a red circle</p> {<1><2><3><4>}") == [
        ("a red circle", [1, 2, 3, 4])
    ]
    # [identify] answers in words: the asked box is drawn, named by the answer
    assert DemoChat.answer_boxes("[identify] what is this {<5><6><70><80>}", "the red circle") == [
        ("the red circle", [5, 6, 70, 80])
    ]
    assert DemoChat.answer_boxes("[vqa] what colour?", "red") == []


def test_small_images_are_enlarged_by_a_whole_factor_before_drawing():
    image = Image.new("RGB", (64, 48), (255, 255, 255))
    drawn = DemoChat.draw(image, [(None, [25, 25, 75, 75])])
    assert drawn.size == (64 * 6, 48 * 6)  # 384 / 64 = 6
    assert drawn.getpixel((96, 72)) != (255, 255, 255)  # the top-left corner of the box
    assert drawn.getpixel((10, 10)) == (255, 255, 255)
    big = Image.new("RGB", (800, 600))
    assert DemoChat.draw(big, [(None, [0, 0, 50, 50])]).size == (800, 600)


def test_a_lavin_demo_answers_questions_with_and_without_an_image(scene):
    """eval_configs/lavin_demo.yaml at toy width: LaVIN answers a question without an image (text-only
    modality), then one about an image; leaving the image out again starts a new conversation."""
    cfg = Config(
        DEMO_CONFIG.parent / "lavin_demo.yaml",
        ["model.scale=toy", "model.ckpt=null", "run.device=cpu", "run.precision=fp32", "run.num_threads=1"],
    )
    lavin = load_demo_model(cfg, torch.device("cpu"))
    assert getattr(lavin, "ANSWERS_TEXT_ONLY", False)
    chat = DemoChat(lavin, max_new_tokens=4, text_only=True)
    final, _ = _final(chat.respond(None, None, "Which number is larger, 3 or 7?"))
    assert not final.error and final.conversation.image is None and len(final.conversation.turns) == 1
    path, _ = scene
    with_image, _ = _final(chat.respond(final.conversation, path, "what shape is shown?"))
    assert not with_image.error and with_image.conversation.image is not None
    again, _ = _final(chat.respond(with_image.conversation, None, "and 2 or 5?"))
    assert not again.error and again.conversation.image is None and len(again.conversation.turns) == 1
    assert "started a new conversation" in again.status
    # a model not built for it keeps asking for an image
    refused, _ = _final(DemoChat(lavin, max_new_tokens=4).respond(None, None, "hello"))
    assert refused.error and "Upload an image first" in refused.status


def test_question_first_tasks_put_the_image_after_the_question(model, scene):
    from minigpt.models.generation.conversation import IMAGE_PROMPT

    path, _ = scene
    demo = DemoChat(model, max_new_tokens=4, image_last_tags=("[identify]",))
    final, _ = _final(demo.respond(None, path, "what is this {<10><20><50><60>}", "identify"))
    assert not final.error
    chat = demo._chat(final.conversation)
    chat.answers.pop()  # ask the same question again: the prompt the model read
    (turn,) = chat.turns()
    assert turn == "[identify] what is this {<10><20><50><60>} " + IMAGE_PROMPT
    # other tasks keep the image first, in the same conversation too
    chat.answers.append(final.conversation.turns[0][1])
    chat.ask("[vqa] what color is the square?")
    assert chat.turns()[0].endswith(IMAGE_PROMPT) and not chat.turns()[1].startswith(IMAGE_PROMPT)
    plain = demo._chat(Conversation(image=final.conversation.image))
    plain.ask("[refer] the square")
    assert plain.turns() == [IMAGE_PROMPT + " [refer] the square"]
