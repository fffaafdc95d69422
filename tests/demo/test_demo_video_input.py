"""Video uploads in the demo: the caps (bytes, declared frame size, length), corrupt files, and DemoChat on a video."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shared_helpers import moving_square_frames, write_mp4

from minigpt.common.config import Config
from minigpt.demo.cli import load_demo_model, parse_args
from minigpt.demo.inputs import DemoInputError, UploadLimits
from minigpt.demo.session import DemoChat
from minigpt.demo.video_input import check_video, load_video
from minigpt.models.generation.chat import video_eval_processor

pytest.importorskip("decord")
pytest.importorskip("av")

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "eval_configs" / "quickstart_demo.yaml"


@pytest.fixture(scope="module")
def model():
    cfg = Config(DEMO_CONFIG, ["model.ckpt=null", "run.num_threads=1"])
    return load_demo_model(cfg, torch.device("cpu"))


@pytest.fixture()
def clip(tmp_path) -> str:
    """One second: 8 frames of 64 px at 8 fps."""
    return str(write_mp4(tmp_path / "clip.mp4", moving_square_frames("right")))


def test_a_good_clip_is_sampled_by_the_presets_processor(model, clip):
    frames, seconds = load_video(clip, video_eval_processor(model))
    assert frames.shape == (4, 3, 64, 64) and seconds == pytest.approx(1.0)


@pytest.mark.parametrize(
    "limits,match",
    [
        (UploadLimits(max_video_bytes=100), r"clip\.mp4 is 0\.0 MB; this demo takes videos up to 0\.0 MB"),
        (UploadLimits(max_video_seconds=0.5), r"clip\.mp4 lasts 1\.0 s; this demo takes videos up to 0\.5 s"),
        (UploadLimits(max_video_frame_pixels=1000), r"clip\.mp4 has 64x64 frames .* up to 0\.0 megapixels a frame"),
    ],
)
def test_uploads_over_a_cap_are_refused_with_the_cap(clip, limits, match):
    with pytest.raises(DemoInputError, match=match):
        check_video(clip, limits)


def test_missing_empty_corrupt_and_truncated_files_are_refused(tmp_path, clip):
    with pytest.raises(DemoInputError, match="Upload a video first"):
        check_video(None)
    with pytest.raises(DemoInputError, match=r"The upload gone\.mp4 cannot be read"):
        check_video(tmp_path / "gone.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DemoInputError, match=r"empty\.mp4 is empty \(0 bytes\)"):
        check_video(empty)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DemoInputError, match=r"noise\.mp4 cannot be read as a video .*it may be corrupt\. Upload an MP4"):
        check_video(noise)
    data = Path(clip).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) comes last: gone
    with pytest.raises(DemoInputError, match=r"cut\.mp4 cannot be read as a video"):
        check_video(cut)


def test_upload_limits_and_command_line_take_the_video_caps():
    with pytest.raises(ValueError, match="max_video_seconds must be a positive number"):
        UploadLimits(max_video_seconds=0)
    with pytest.raises(ValueError, match="max_video_bytes must be a positive int"):
        UploadLimits(max_video_bytes=-1)
    args = parse_args(["--cfg-path", "quickstart_demo", "--max-video-mb", "5", "--max-video-seconds", "30"])
    assert args.max_video_mb == 5 and args.max_video_seconds == 30
    with pytest.raises(SystemExit):
        parse_args(["--cfg-path", "quickstart_demo", "--max-video-seconds", "0"])


def test_demo_chat_answers_about_a_video_and_keeps_its_conversation(model, clip, tmp_path):
    chat = DemoChat(model, max_new_tokens=4)
    ready = chat.on_video(None, clip)
    assert not ready.error and ready.status.startswith("Video ready (1.0 s, 4 frames sampled)")
    replies = list(chat.respond(ready.conversation, None, "which way does it move?", video_path=clip))
    final = replies[-1]
    assert final.done and not final.error, final.status
    assert final.conversation.video.shape == (4, 3, 64, 64) and final.conversation.image is None
    assert final.conversation.turns[0][0] == "which way does it move?"
    # the answer is the model's own for that video and question
    want = model.generate([final.conversation.video], ["<Video><VideoHere></Video> which way does it move?"], max_new_tokens=4)
    assert final.conversation.turns[0][1] == want[0]
    again = list(chat.respond(final.conversation, None, "and its colour?", video_path=clip))[-1]
    assert len(again.conversation.turns) == 2  # the same clip: the same conversation
    other = str(write_mp4(tmp_path / "other.mp4", moving_square_frames("left", "blue")))
    switched = list(chat.respond(again.conversation, None, "which way?", video_path=other))[-1]
    assert len(switched.conversation.turns) == 1 and "New video" in switched.status


def test_demo_chat_refuses_bad_videos_and_image_with_video(model, clip, tmp_path):
    chat = DemoChat(model, max_new_tokens=4)
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"\x00" * 64)
    refused = chat.on_video(None, str(noise))
    assert refused.error and "cannot be read as a video" in refused.status
    image = tmp_path / "scene.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    both = list(chat.respond(None, str(image), "what is it?", video_path=clip))
    assert len(both) == 1 and both[0].error and "not both" in both[0].status
    long = list(DemoChat(model, limits=UploadLimits(max_video_seconds=0.25)).respond(None, None, "what?", video_path=clip))
    assert long[-1].error and "lasts 1.0 s" in long[-1].status
    chat.video_processor = None  # a preset without preprocess.video_processor
    assert "takes no video" in chat.on_video(None, clip).status
