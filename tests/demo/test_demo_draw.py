"""The demo with a model that draws (dreamllm): the draw shortcut, drawn images in the chat."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from minigpt.demo.inputs import DRAW_TASK, DemoInputError, compose_prompt
from minigpt.demo.session import MIN_DRAWING_SIDE, DemoChat
from minigpt.models import load_model


def test_draw_shortcut_makes_a_drawing_request():
    assert compose_prompt("a red circle in the top left", DRAW_TASK) == "draw a red circle in the top left"
    assert compose_prompt("Paint a blue square", DRAW_TASK) == "Paint a blue square"
    with pytest.raises(DemoInputError, match="what to draw"):
        compose_prompt("  ", DRAW_TASK)
    with pytest.raises(DemoInputError, match="ImageHere"):
        compose_prompt("<Img><ImageHere></Img> a cat", DRAW_TASK)


@pytest.fixture(scope="module")
def drawing_chat():
    torch.manual_seed(0)
    model = load_model("dreamllm", "tiny", is_eval=True)
    with torch.no_grad():  # the model writes <dream> first whatever it is asked
        model.llm.causal_lm.get_output_embeddings().bias[model.dream_token_id] = 1.0e4
    model.dream_head.sampling_steps = 2
    return DemoChat(model, max_new_tokens=4, text_only=True)


def test_a_drawing_appears_in_the_chat_after_the_request(drawing_chat):
    assert drawing_chat.can_draw
    replies = list(drawing_chat.respond(None, None, "a green triangle in the bottom right", DRAW_TASK))
    assert not replies[0].done and replies[-1].done and not replies[-1].error, replies[-1].status
    final = replies[-1]
    assert final.conversation.turns[0][0] == "draw a green triangle in the bottom right"
    assert len(final.conversation.drawings) == 1 and final.conversation.drawings[0][0] == 0
    assert "1 image generated" in final.status
    images = [m["content"] for m in final.messages if isinstance(m["content"], Image.Image)]
    assert len(images) == 1 and min(images[0].size) >= MIN_DRAWING_SIDE
    assert final.messages[0] == {"role": "user", "content": "draw a green triangle in the bottom right"}
    assert all(m["role"] == "assistant" for m in final.messages[1:])
    # the next turn keeps the first drawing where it was
    again = list(drawing_chat.respond(final.conversation, None, "a red square", DRAW_TASK))[-1]
    assert [t for t, _ in again.conversation.drawings] == [0, 1]
    assert sum(isinstance(m["content"], Image.Image) for m in again.messages) == 2
