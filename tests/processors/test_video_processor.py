"""The decord video processors on tiny Motion-JPEG AVI files whose frames encode their own index."""

import numpy as np
import pytest
import torch
from PIL import Image

from minigpt.common.registry import registry
from minigpt.datasets.datasets import DatasetError, MissingDataError
from minigpt.datasets.datasets.video_datasets import write_mjpeg_avi
from minigpt.processors.image import ImageEvalProcessor
from minigpt.processors.video import (
    VideoEvalProcessor,
    VideoTrainProcessor,
    clip_frame_range,
    sample_frame_indices,
)

pytest.importorskip("decord")

STEP = 20  # frame i is a flat colour with red = STEP * i, so a decoded frame tells its index


def _indexed_video(path, n=12, fps=10, size=(24, 32)):
    h, w = size
    frames = [np.full((h, w, 3), (STEP * i, 255 - STEP * i, 90), np.uint8) for i in range(n)]
    return write_mjpeg_avi(path, frames, fps=fps)


def _decoded_indices(frames_uint8):
    """The index each decoded frame was written with, read back from its mean red value."""
    reds = frames_uint8[:, 0].float().mean(dim=(1, 2))
    return [round(r / STEP) for r in reds.tolist()]


def test_registry_names_and_config_keys():
    assert registry.get_processor_class("video_train") is VideoTrainProcessor
    assert registry.get_processor_class("video_eval") is VideoEvalProcessor
    p = registry.get_processor_class("video_eval").from_config(
        {"name": "video_eval", "n_frms": 3, "image_size": 8}
    )
    assert (p.n_frms, p.image_size, p.sampling) == (3, 8, "uniform")
    assert VideoTrainProcessor.from_config(None).sampling == "random"
    with pytest.raises(ValueError, match="unknown config key.*'n_frames'"):
        VideoEvalProcessor.from_config({"n_frames": 4})
    with pytest.raises(ValueError, match="n_frms must be a positive integer"):
        VideoEvalProcessor(n_frms=0)
    with pytest.raises(ValueError, match="sampling must be one of uniform, random"):
        VideoTrainProcessor(sampling="headtail")
    with pytest.raises(ValueError, match="clip_duration must be positive"):
        VideoEvalProcessor(clip_duration=0)


def test_uniform_sampling_reads_the_middle_frame_of_each_segment(tmp_path):
    path = _indexed_video(tmp_path / "v.avi", n=12)
    p = VideoEvalProcessor(image_size=16, n_frms=4)
    frames, indices = p.read_frames(path)
    # 12 frames in 4 segments of 3: the middles are 1, 4, 7, 10
    assert indices == [1, 4, 7, 10]
    assert frames.dtype == torch.uint8 and frames.shape == (4, 3, 24, 32)
    assert _decoded_indices(frames) == indices  # the frames really are those frames
    out = p(path)
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out, p(path))  # eval is deterministic


def test_transform_is_the_image_processors_own(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:56]
    frames = [
        np.stack([xx * 4, yy * 6, (xx + yy) * 2 + 10 * i], -1).clip(0, 255).astype(np.uint8) for i in range(5)
    ]
    frames[2] = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    path = write_mjpeg_avi(tmp_path / "g.avi", frames, fps=5)
    video = VideoEvalProcessor(image_size=32, n_frms=5)
    raw, indices = video.read_frames(path)
    assert indices == [0, 1, 2, 3, 4]
    out = video(path)
    image = ImageEvalProcessor(image_size=32)
    for t in range(5):
        expected = image(Image.fromarray(raw[t].permute(1, 2, 0).numpy()))
        # PIL's and torch's bicubic resize differ by at most a grey level or two (1/255 / std ~ 0.015)
        assert (out[t] - expected).abs().max() < 0.05
    mean = torch.tensor(image.mean).view(3, 1, 1)
    std = torch.tensor(image.std).view(3, 1, 1)
    assert torch.allclose(
        VideoEvalProcessor(32, 5, mean=(0, 0, 0), std=(1, 1, 1))(path), out * std + mean, atol=1e-5
    )


def test_random_sampling_takes_one_frame_per_segment_and_follows_the_seed(tmp_path):
    path = _indexed_video(tmp_path / "v.avi", n=12)
    p = VideoTrainProcessor(image_size=16, n_frms=4)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        frames, indices = p.read_frames(path)
        assert [i // 3 for i in indices] == [0, 1, 2, 3]  # one frame in each segment of 3
        assert _decoded_indices(frames) == indices
        seen.add(tuple(indices))
        torch.manual_seed(seed)
        assert p.read_frames(path)[1] == indices
    assert len(seen) > 3  # a sampler stuck on the same frames would be a bug


def test_train_crop_is_shared_by_every_frame_of_a_clip(tmp_path):
    yy, xx = np.mgrid[0:40, 0:56]
    still = np.stack([xx * 4, yy * 6, 255 - xx * 2], -1).clip(0, 255).astype(np.uint8)
    path = write_mjpeg_avi(tmp_path / "still.avi", [still] * 6, fps=6)
    p = VideoTrainProcessor(image_size=16, n_frms=6, min_scale=0.2, max_scale=0.3)
    torch.manual_seed(0)
    out = p(path)
    assert out.shape == (6, 3, 16, 16)
    # identical frames cropped with one set of random parameters stay identical
    assert all(torch.allclose(out[0], out[t], atol=1e-6) for t in range(1, 6))
    torch.manual_seed(1)
    assert not torch.allclose(p(path)[0], out[0], atol=1e-3)  # and the crop does change per clip


def test_short_video_repeats_frames_to_keep_n_frms(tmp_path):
    path = _indexed_video(tmp_path / "short.avi", n=3)
    frames, indices = VideoEvalProcessor(image_size=8, n_frms=8).read_frames(path)
    assert len(indices) == 8 and indices == sorted(indices) and set(indices) == {0, 1, 2}
    assert _decoded_indices(frames) == indices
    torch.manual_seed(0)
    assert VideoTrainProcessor(image_size=8, n_frms=8)(path).shape == (8, 3, 8, 8)


def test_clip_sampling_by_start_and_end_seconds(tmp_path):
    path = _indexed_video(tmp_path / "v.avi", n=12, fps=10)  # 1.2 s
    p = VideoEvalProcessor(image_size=8, n_frms=4)
    frames, indices = p.read_frames(path, start=0.5, end=1.0)  # frames 5..9
    assert indices == [5, 6, 8, 9] and _decoded_indices(frames) == indices
    assert p.read_frames(path, start=0.8)[1] == [8, 9, 10, 11]  # to the end
    assert p.read_frames(path, end=5.0)[1] == [1, 4, 7, 10]  # an end past the video is cut to it
    # a window of clip_duration seconds: the centred one in eval, a random one in training
    centred = VideoEvalProcessor(image_size=8, n_frms=2, clip_duration=0.4)
    assert centred.read_frames(path)[1] == [5, 7]  # window 0.4-0.8 s = frames 4..7, two segments of 2
    train = VideoTrainProcessor(image_size=8, n_frms=2, clip_duration=0.4)
    starts = set()
    for seed in range(10):
        torch.manual_seed(seed)
        indices = train.read_frames(path)[1]
        assert indices[1] - indices[0] < 4 and 0 <= indices[0] and indices[1] <= 11
        starts.add(indices[0] // 2)
    assert len(starts) > 1
    with pytest.raises(DatasetError, match=r"v\.avi.*clip starts at 2 s but the video lasts 1.2 s"):
        p(path, start=2.0)
    with pytest.raises(DatasetError, match=r"v\.avi.*not a valid range"):
        p(path, start=0.6, end=0.3)


def test_missing_and_corrupt_videos_raise_io_errors_naming_the_path(tmp_path):
    p = VideoEvalProcessor(image_size=8, n_frms=2)
    with pytest.raises(MissingDataError, match=r"video file not found: .*absent\.mp4"):
        p(tmp_path / "absent.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01 not a video at all" * 20)
    with pytest.raises(DatasetError, match=r"unreadable or corrupt video .*bad\.mp4"):
        p(bad)
    good = _indexed_video(tmp_path / "v.avi", n=12)
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])  # half the frames survive: those are sampled
    frames, indices = p.read_frames(truncated)
    assert max(indices) < 12 and _decoded_indices(frames) == indices


def test_a_frame_decord_cannot_decode_raises_dataset_error(tmp_path, monkeypatch):
    import decord

    def broken(self, indices):  # what decord raises for a frame it cannot decode or convert
        raise decord.DECORDError("Check failed: from_size == to_size")

    monkeypatch.setattr(decord.VideoReader, "get_batch", broken)
    path = _indexed_video(tmp_path / "v.avi", n=12)
    with pytest.raises(
        DatasetError, match=r"cannot decode frames \[1, 4, 7, 10\] of video .*v\.avi.*from_size"
    ):
        VideoEvalProcessor(image_size=8, n_frms=4)(path)


def test_frame_index_and_range_helpers():
    assert sample_frame_indices(0, 10, 5) == [1, 3, 5, 7, 9]
    assert sample_frame_indices(4, 5, 3) == [4, 4, 4]
    gen = torch.Generator().manual_seed(0)
    picked = sample_frame_indices(0, 100, 10, "random", generator=gen)
    assert [i // 10 for i in picked] == list(range(10))
    with pytest.raises(ValueError, match="empty"):
        sample_frame_indices(5, 5, 2)
    assert clip_frame_range(30, 10.0) == (0, 30)
    assert clip_frame_range(30, 10.0, start=1.0, end=2.0) == (10, 20)
    assert clip_frame_range(30, 10.0, start=1.02, end=1.03) == (10, 11)  # shorter than a frame: its frame
    with pytest.raises(ValueError, match="frame rate"):
        clip_frame_range(30, 0.0, start=1.0)


def test_write_mjpeg_avi_checks_its_frames(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        write_mjpeg_avi(tmp_path / "x.avi", [])
    with pytest.raises(ValueError, match=r"frame 1: expected uint8 \[4, 4, 3\]"):
        write_mjpeg_avi(tmp_path / "x.avi", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])
    import decord

    path = write_mjpeg_avi(tmp_path / "ntsc.avi", [np.zeros((8, 8, 3), np.uint8)] * 4, fps=30000 / 1001)
    reader = decord.VideoReader(path)
    assert len(reader) == 4 and abs(reader.get_avg_fps() - 29.97) < 0.01
