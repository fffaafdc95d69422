"""The demo page in a real browser: Debian's chromium, headless, driven by Playwright (no browser download).

Uploads a file that is not an image (and reads the page's message), then an image, picks the
[caption] shortcut, sends, and watches the answer stream into the page, then saves a screenshot as a test artifact: under ``$MINIGPT_TEST_ARTIFACTS`` when set, else the
test's temporary folder; its path is printed. A second page uploads a corrupt video (and reads the
page's message), then a small MP4, asks about it and gets the taught answer. Without ``/usr/bin/chromium`` (or Playwright) the test
skips, except under CI (``$CI`` set), where it fails: CI must exercise the browser.
"""

from __future__ import annotations

import contextlib
import html
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image

CHROMIUM = os.environ.get("MINIGPT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records every text the last answer bubble shows, as the page changes (polling could miss steps).
RECORD_ANSWERS = """
() => {
  window.__answers = [];
  const chat = document.querySelector('#chat');
  const seen = () => {
    const bots = chat.querySelectorAll('.bot');
    if (bots.length) {
      const text = bots[bots.length - 1].innerText.trim();
      if (window.__answers[window.__answers.length - 1] !== text) window.__answers.push(text);
    }
  };
  new MutationObserver(seen).observe(chat, {subtree: true, childList: true, characterData: true});
}
"""


try:
    from playwright import sync_api
except ImportError:  # the test extra installs it
    sync_api = None

MISSING = [
    what
    for what, present in (
        (f"chromium at {CHROMIUM} (Debian: apt-get install chromium)", os.access(CHROMIUM, os.X_OK)),
        ("playwright (pip install playwright; never `playwright install`)", sync_api is not None),
    )
    if not present
]
# Skipped before the fixtures train a model and start a server; under CI the test runs and fails.
pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"), reason=f"needs {' and '.join(MISSING)}"
)


def _artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MINIGPT_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _require_browser() -> None:
    if MISSING:
        pytest.fail(
            f"CI must run the browser test (.ci/run installs chromium), but it lacks {' and '.join(MISSING)}"
        )


@contextlib.contextmanager
def _demo_page(demo_server, tmp_path: Path, height: int) -> Iterator[Any]:
    """The demo's page, loaded and ready for a message, in headless chromium with a fresh profile."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": height},
        )
        try:
            page = browser.new_page()
            page.goto(demo_server.url, wait_until="domcontentloaded")
            page.wait_for_selector("#message textarea", timeout=60_000)
            yield page
        finally:
            browser.close()


def test_upload_ask_and_watch_the_answer_stream(demo_server, tmp_path):
    _require_browser()
    caption = demo_server.taught.sample("caption", 1)
    screenshot = _artifacts_dir(tmp_path) / "demo_browser.png"
    with _demo_page(demo_server, tmp_path, height=1000) as page:
        # a file that is not an image gets a message on the page, and the page carries on
        not_image = tmp_path / "notes.png"
        not_image.write_text("these are not pixels")
        page.set_input_files("#image-input input[type=file]", str(not_image))
        sync_api.expect(page.locator("#status")).to_contain_text(
            "notes.png is not an image", timeout=30_000
        )

        page.set_input_files("#image-input input[type=file]", caption.image_path)
        sync_api.expect(page.locator("#status")).to_contain_text("Image ready", timeout=30_000)

        page.get_by_label("[caption]").check()
        page.evaluate(RECORD_ANSWERS)
        page.click("#send")
        sync_api.expect(page.locator("#status")).to_contain_text("Answered in", timeout=60_000)

        final = page.locator("#chat .bot").last.inner_text().strip()
        user = page.locator("#chat .user").last.inner_text().strip()
        seen = [html.unescape(t) for t in page.evaluate("window.__answers") if t]
        page.screenshot(path=str(screenshot), full_page=True)

    print(f"\nscreenshot: {screenshot}")
    assert user.startswith("[caption] ")
    assert final == caption.answer
    # streamed: before the whole answer, the bubble showed growing beginnings of it (besides gradio's
    # own "Loading content" placeholder)
    beginnings = [t for t in seen if final.startswith(t) and t != final]
    assert len(beginnings) >= 2, f"the answer did not appear piece by piece: {seen}"
    assert [len(t) for t in beginnings] == sorted(len(t) for t in beginnings), seen
    assert seen[-1] == final
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG" and shot.width >= 1280


def test_upload_a_video_and_get_the_answer(demo_server, tmp_path):
    _require_browser()
    if not any(s.task == "video" for s in demo_server.taught.samples):
        pytest.skip("the taught model learned no video (needs av and decord)")
    clip = demo_server.taught.sample("video")
    screenshot = _artifacts_dir(tmp_path) / "demo_browser_video.png"

    with _demo_page(demo_server, tmp_path, height=1100) as page:
        # a file that is not a video gets a message on the page
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
        page.set_input_files("#video-input input[type=file]", str(broken))
        sync_api.expect(page.locator("#status")).to_contain_text(
            "broken.mp4 cannot be read as a video", timeout=30_000
        )

        page.set_input_files("#video-input input[type=file]", clip.image_path)
        sync_api.expect(page.locator("#status")).to_contain_text("Video ready", timeout=30_000)
        page.fill("#message textarea", clip.message)
        page.click("#send")
        sync_api.expect(page.locator("#status")).to_contain_text("Answered in", timeout=60_000)
        final = page.locator("#chat .bot").last.inner_text().strip()
        user = page.locator("#chat .user").last.inner_text().strip()
        page.screenshot(path=str(screenshot), full_page=True)

    print(f"\nscreenshot: {screenshot}")
    assert user == clip.message
    assert final == clip.answer
