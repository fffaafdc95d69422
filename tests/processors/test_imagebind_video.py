"""ImageBind's video protocol on a tiny generated mp4: 5 clips of 2 s, 2 frames each, 3 spatial crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minigpt.common.io import DatasetError
from minigpt.common.registry import registry
from minigpt.models.parts.vision_encoders.imagebind_vit import ImageBindViTEncoder
from minigpt.processors.image import CLIP_MEAN, CLIP_STD
from minigpt.processors.imagebind_video import clip_windows, even_indices

av = pytest.importorskip("av")

FPS, N_FRAMES, H, W = 8, 40, 48, 80  # 5 s, landscape


def write_mp4(path, n=N_FRAMES, fps=FPS):
    """Frame i is grey level 5 * i on the left half and black on the right half."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    for i in range(n):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:, : W // 2] = 5 * i
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def test_clip_windows_and_frames_follow_imagebind():
    assert clip_windows(5.0, 5, 2.0) == [(0.0, 2.0), (0.75, 2.75), (1.5, 3.5), (2.25, 4.25), (3.0, 5.0)]
    assert clip_windows(1.0, 3, 2.0) == [(0.0, 2.0)] * 3  # shorter than a window
    assert even_indices(6, 22, 2) == [6, 21]  # first and last frame of the window
    p = registry.get_processor_class("video_imagebind").from_config({"name": "video_imagebind"})
    assert p.frame_indices(N_FRAMES, FPS) == [[0, 15], [6, 21], [12, 27], [18, 33], [24, 39]]


def test_views_of_a_tiny_mp4(tmp_path):
    path = write_mp4(tmp_path / "tiny.mp4")
    p = registry.get_processor_class("video_imagebind").from_config({"name": "video_imagebind", "image_size": 32})
    views = p(path)
    assert views.shape == (15, 3, 2, 32, 32)  # 5 clips x 3 crops, 2 frames, short side 32 -> 32 x 32 crops
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    grey = views[:, :, :, 16, 2] * std[None, :, None] + mean[None, :, None]  # left edge, un-normalised
    want = torch.tensor([[0, 15], [6, 21], [12, 27], [18, 33], [24, 39]], dtype=torch.float32) * 5 / 255
    # the start crop of each clip sees the left (grey) half; its two frames are the window's first and last
    torch.testing.assert_close(grey[0::3].mean(1), want, atol=0.03, rtol=0)
    # the end crop sees only the black right half
    end = views[2::3, :, :, :, 24:] * std[None, :, None, None, None] + mean[None, :, None, None, None]
    assert end.abs().max() < 0.05
    enc = ImageBindViTEncoder(image_size=32, patch_size=16, width=16, depth=1, num_heads=2, out_dim=8).eval()
    with torch.no_grad():
        emb = enc(views.unsqueeze(0))  # [1, 15, 3, 2, 32, 32] -> one token
    assert emb.shape == (1, 1, 8)


def test_corrupt_video_is_named(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    p = registry.get_processor_class("video_imagebind")()
    with pytest.raises(DatasetError, match=r"bad\.mp4"):
        p(bad)
    with pytest.raises(ValueError, match="crops must be 1 or 3"):
        registry.get_processor_class("video_imagebind")(crops=2)
