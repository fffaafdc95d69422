"""``minigpt chat``: the terminal chat answers about an image, streamed; driven in-process and, as a user would, in tmux."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import List

import pytest
from PIL import Image

from minigpt.demo.terminal import PROMPT, TerminalChat, run_repl

REPO_ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A text stream that keeps each write, so a test can tell a streamed answer from one printed whole."""

    def __init__(self) -> None:
        self.writes: List[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self.writes)


def _scripted(lines: List[str]):
    feed = iter(lines)

    def read_line(prompt: str) -> str:
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return read_line


@pytest.fixture(scope="module")
def taught_model(taught_checkpoint):
    import torch

    from minigpt.common.config import Config
    from minigpt.demo.cli import load_demo_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = Config(REPO_ROOT / "eval_configs" / "quickstart_demo.yaml", [f"model.ckpt={taught_checkpoint.checkpoint}"])
    yield load_demo_model(cfg, torch.device("cpu"))
    torch.set_num_threads(threads)


def test_answers_about_the_image_streamed(taught_model, taught_checkpoint, tmp_path):
    vqa, caption = taught_checkpoint.sample("vqa"), taught_checkpoint.sample("caption")
    refer = taught_checkpoint.sample("refer", 1)
    out = Recorder()
    chat = TerminalChat(taught_model, max_new_tokens=40)
    code = run_repl(chat, _scripted([
        f"[vqa] {vqa.message}",  # no image yet: refused, the chat goes on
        f"/image {vqa.image_path}", "[caption]", "/reset", f"[vqa] {vqa.message}",
        f"/image {refer.image_path}", f"/save {tmp_path / 'early.png'}", f"[refer] {refer.message}",
        f"/save {tmp_path / 'boxes.png'}",
        "/image /no/such.png", "/bogus", "/exit", "never read",
    ]), out)  # fmt: skip
    assert code == 0
    text = out.text()
    assert "error: Give an image first: /image PATH" in text
    assert f"image: {vqa.image_path} (" in text
    assert vqa.answer in text.split("the conversation starts again", 1)[1]
    assert refer.answer in text and "1 box]" in text
    assert "error: Nothing to draw yet" in text and not (tmp_path / "early.png").exists()
    assert f"saved {tmp_path / 'boxes.png'} (1 box)" in text
    with Image.open(tmp_path / "boxes.png") as drawn, Image.open(refer.image_path) as plain:
        assert drawn.width >= 384 and drawn.width % plain.width == 0  # enlarged by a whole factor, boxes drawn on
    assert "error: The upload such.png cannot be read" in text and "unknown command /bogus" in text
    # streamed: the caption arrives in several writes, not one
    assert caption.answer in text
    pieces = [w for w in out.writes if w.strip() and w in caption.answer]
    assert len(pieces) > 2, out.writes
    # the second image started a new conversation: one turn about it
    assert chat.chat.history == [(f"[refer] {refer.message}", refer.answer)]


def test_reset_keeps_the_image_and_a_failed_question_is_forgotten(taught_model, taught_checkpoint):
    vqa = taught_checkpoint.sample("vqa")
    chat = TerminalChat(taught_model, max_new_tokens=40)
    chat.set_image(vqa.image_path)
    assert "".join(chat.answer(f"[vqa] {vqa.message}")) == vqa.answer
    assert chat.reset().endswith(vqa.image_path) and chat.chat.history == []
    with pytest.raises(ValueError):  # no text after the tag
        list(chat.answer("[vqa]"))
    assert not chat.chat.pending
    assert "".join(chat.answer(f"[vqa] {vqa.message}")) == vqa.answer


def _pane(sock: str) -> str:
    return subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-J", "-S", "-200", "-t", "chat"],
                          capture_output=True, text=True).stdout  # fmt: skip


def _wait_for(sock: str, predicate, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _pane(sock)
        if predicate(screen):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"tmux: {what} did not show within {timeout} s; the screen:\n{_pane(sock)}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (CI installs it in .ci/run)")
def test_minigpt_chat_in_tmux(taught_checkpoint, tmp_path):
    """The console command in a real terminal, started outside the repository with a shipped config's name."""
    vqa = taught_checkpoint.sample("vqa")
    sock = f"minigpt-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = (f"{sys.executable} -m minigpt.cli chat --cfg-path quickstart_demo --options "
           f"model.ckpt={taught_checkpoint.checkpoint} run.num_threads=1; echo CHAT-EXITED-$?; sleep 60")  # fmt: skip
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "chat", "-x", "200", "-y", "50", "-c", str(tmp_path),
                    cmd], check=True, env=env)  # fmt: skip
    try:
        _wait_for(sock, lambda s: s.rstrip().endswith(PROMPT.strip()), 120, "the >>> prompt")
        subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "chat", f"/image {vqa.image_path}", "Enter"], check=True)
        _wait_for(sock, lambda s: "a new conversation" in s, 30, "the image line")
        subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "chat", f"[vqa] {vqa.message}", "Enter"], check=True)
        screen = _wait_for(sock, lambda s: " s]" in s, 60, "the answer")
        assert vqa.answer in screen.split(vqa.message, 1)[1], screen
        subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "chat", "/exit", "Enter"], check=True)
        _wait_for(sock, lambda s: "CHAT-EXITED-0" in s, 30, "a clean exit")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
