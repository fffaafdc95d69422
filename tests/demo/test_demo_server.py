"""``demo.py`` as a user starts it, driven over HTTP with ``gradio_client``: answers, boxes, bad uploads, queueing."""

from __future__ import annotations

import html
import os
import threading
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from PIL import Image

from minigpt.common.grounding import grid_to_pixels, parse_boxes

gradio_client = pytest.importorskip("gradio_client")


def ask(client: Any, image: str, message: str, task: str = "chat", beams: int = 1, max_new_tokens: int = 48):
    """One ``/ask`` call; returns (chat messages, boxes image path or None, status line)."""
    chat, boxes, status, _message = client.predict(
        gradio_client.handle_file(image), message, task, 0.0, beams, max_new_tokens, api_name="/ask"
    )
    return chat, boxes, status


def text_of(message: Dict[str, Any]) -> str:
    """A chat message's text as the model or the user wrote it (the page gets it HTML-escaped)."""
    content = message["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return html.unescape(str(content))


def turns(chat: List[Dict[str, Any]]) -> List[tuple]:
    assert [m["role"] for m in chat] == ["user", "assistant"] * (len(chat) // 2)
    return [(text_of(chat[i]), text_of(chat[i + 1])) for i in range(0, len(chat), 2)]


def connect(url: str, downloads) -> Any:
    """A client that keeps answer images in ``downloads`` and sends no usage statistics."""
    return gradio_client.Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


@pytest.fixture()
def client(demo_server, tmp_path):
    c = connect(demo_server.url, tmp_path / "downloads")
    yield c
    c.close()


def test_image_and_question_get_the_models_answer(demo_server, client):
    vqa = demo_server.taught.sample("vqa", 1)
    chat, boxes, status = ask(client, vqa.image_path, vqa.message, "vqa")
    assert turns(chat) == [(f"[vqa] {vqa.message}", vqa.answer)], status
    assert boxes is None  # a colour has no box
    assert "Answered in" in status

    # the next question continues the conversation about the same image
    caption = demo_server.taught.sample("caption", 1)
    chat, _, status = ask(client, caption.image_path, "", "caption")
    got = turns(chat)
    assert len(got) == 2 and got[0] == (f"[vqa] {vqa.message}", vqa.answer)
    assert got[1][0].startswith("[caption] ") and got[1][1] == caption.answer, status

    # another picture starts a new conversation
    other = demo_server.taught.sample("vqa", 0)
    chat, _, status = ask(client, other.image_path, other.message, "vqa")
    assert turns(chat) == [(f"[vqa] {other.message}", other.answer)]
    assert "new conversation" in status

    # so does Clear, even with the same picture
    cleared = client.predict(api_name="/clear")
    assert cleared[0] is None and cleared[1] == []
    chat, _, status = ask(client, other.image_path, other.message, "vqa")
    assert turns(chat) == [(f"[vqa] {other.message}", other.answer)] and "new conversation" not in status


def test_grounding_prompt_returns_the_image_with_its_box(demo_server, client):
    refer = demo_server.taught.sample("refer", 0)
    chat, boxes_path, status = ask(client, refer.image_path, refer.message, "refer")
    ((question, answer),) = turns(chat)
    assert question == f"[refer] {refer.message}" and answer == refer.answer
    assert "1 box drawn" in status
    assert boxes_path is not None and os.path.isfile(boxes_path)

    drawn = np.asarray(Image.open(boxes_path).convert("RGB")).astype(int)
    h, w, _ = drawn.shape
    source = Image.open(refer.image_path).convert("RGB")
    assert w % source.width == 0 and w // source.width == h // source.height  # enlarged by a whole factor
    plain = np.asarray(source.resize((w, h), Image.Resampling.NEAREST)).astype(int)

    ((_, grid_box),) = parse_boxes(answer)
    x1, y1, x2, y2 = (round(v) for v in grid_to_pixels(grid_box, w, h))
    changed = np.abs(drawn - plain).sum(axis=2) > 60
    rows, cols = range(y1 + 4, y2 - 3), range(x1 + 4, x2 - 3)  # along each side, corners left out
    sides = {
        "left": [changed[y, x1 - 2 : x1 + 3].any() for y in rows],
        "right": [changed[y, x2 - 3 : x2 + 2].any() for y in rows],
        "top": [changed[y1 - 2 : y1 + 3, x].any() for x in cols],
        "bottom": [changed[y2 - 3 : y2 + 2, x].any() for x in cols],
    }
    for side, hits in sides.items():
        assert hits and np.mean(hits) > 0.9, f"the box's {side} side is not drawn where the answer puts it"
    far = np.ones_like(changed)
    far[max(0, y1 - 8) : y2 + 9, max(0, x1 - 8) : x2 + 9] = False
    assert changed[far].mean() < 0.001, "pixels away from the box changed"


def test_corrupt_upload_gets_a_message_and_the_server_keeps_serving(demo_server, client, tmp_path):
    good = demo_server.taught.sample("vqa", 0)
    data = Path(good.image_path).read_bytes()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(data[: len(data) // 3])  # a PNG header and a third of its data
    chat, boxes, status = ask(client, str(corrupt), good.message, "vqa")
    assert chat == [] and boxes is None
    assert "corrupt.png" in status and "corrupt" in status.lower()

    not_image = tmp_path / "notes.png"
    not_image.write_text("these are not pixels")
    _, _, status = ask(client, str(not_image), good.message, "vqa")
    assert "notes.png is not an image" in status

    chat, _, status = ask(client, good.image_path, good.message, "vqa")
    assert turns(chat) == [(f"[vqa] {good.message}", good.answer)], status


def test_empty_message_and_beams(demo_server, client):
    vqa = demo_server.taught.sample("vqa", 0)
    chat, _, status = ask(client, vqa.image_path, "   ", "chat")
    assert chat == [] and "Type a message" in status
    # beam search cannot stream; the answer arrives whole and is the same one here
    chat, _, status = ask(client, vqa.image_path, vqa.message, "vqa", beams=3)
    assert turns(chat) == [(f"[vqa] {vqa.message}", vqa.answer)], status


def test_concurrent_users_are_queued_and_kept_apart(demo_server, tmp_path):
    samples = [demo_server.taught.sample("caption", 0), demo_server.taught.sample("caption", 1)]
    results: Dict[int, Any] = {}

    def user(i: int) -> None:
        c = connect(demo_server.url, tmp_path / f"downloads_{i}")
        try:
            jobs = [
                c.submit(
                    gradio_client.handle_file(samples[i].image_path),
                    "",
                    "caption",
                    0.0,
                    1,
                    48,
                    api_name="/ask",
                )
            ]
            results[i] = jobs[0].result(timeout=120)
        finally:
            c.close()

    threads = [threading.Thread(target=user, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    for i, sample in enumerate(samples):
        ((question, answer),) = turns(results[i][0])  # one turn each: the sessions do not mix
        assert question.startswith("[caption] ") and answer == sample.answer, f"user {i}"


def test_listens_on_loopback_only(demo_server):
    """Without --server-name the server is reachable from this machine only."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    listening = []
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == demo_server.port:  # 0A: LISTEN
            listening.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    assert listening == ["127.0.0.1"]
    tcp6 = Path("/proc/net/tcp6")
    if tcp6.exists():
        ports = [int(line.split()[1].split(":")[1], 16) for line in tcp6.read_text().splitlines()[1:]
                 if line.split()[3] == "0A"]  # fmt: skip
        assert demo_server.port not in ports


def test_a_question_about_a_video_over_the_api(demo_server, client):
    if not any(s.task == "video" for s in demo_server.taught.samples):
        pytest.skip("the taught model learned no video (needs av and decord)")
    clip = demo_server.taught.sample("video")
    chat, boxes, status, _message = client.predict(
        None, clip.message, "chat", 0.0, 1, 48, gradio_client.handle_file(clip.image_path), api_name="/ask"
    )
    assert turns(chat) == [(clip.message, clip.answer)] and boxes is None and "Answered in" in status
