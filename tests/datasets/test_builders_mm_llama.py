"""MM-LLaMA's data in the released layouts: LLaVA-CC3M-595K chat.json, LLaVA-Instruct-150K, VideoChat-Instruct-11K."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minigpt.common.registry import registry

av = pytest.importorskip("av")

IMG, VID = "<Img><ImageHere></Img>", "<Vid><ImageHere></Vid>"
SMALL_IMAGES = {"vis_processor": {"train": {"name": "image_eval", "image_size": 32}, "eval": {"name": "image_eval", "image_size": 32}}}
SMALL_VIDEOS = {
    "vis_processor": {
        k: {"name": "video_imagebind", "image_size": 32, "clips": 5, "clip_duration": 2.0, "frames": 2, "crops": 3}
        for k in ("train", "eval")
    }
}


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(path)


def _mp4(path, n=24, fps=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"  # decord misreads some narrow widths (48)
    for i in range(n):
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def test_llava_cc3m_chat_json(tmp_path):
    _image(tmp_path / "llava_cc3m/images/GCC_train_000000001.jpg")
    rows = [
        {
            "id": "GCC_train_000000001",
            "image": "GCC_train_000000001.jpg",
            "conversations": [
                {"from": "human", "value": "Give a brief description of the image.\n<image>"},
                {"from": "gpt", "value": "a red circle on a grey wall"},
            ],
        },
        {"id": "GCC_train_000000002", "image": "GCC_train_000000002.jpg", "conversations": [{"from": "human", "value": "x"}]},
    ]
    (tmp_path / "llava_cc3m/chat.json").write_text(json.dumps(rows))
    ds = registry.get_builder_class("llava_cc3m")(SMALL_IMAGES, data_root=str(tmp_path)).build_datasets()["train"]
    assert len(ds) == 1 and len(ds.malformed_records) == 1  # the unpaired entry is left out, counted
    s = ds[0]
    assert s["instruction_input"] == f"{IMG} Give a brief description of the image."
    assert s["answer"] == "a red circle on a grey wall"
    assert tuple(s["image"].shape) == (3, 32, 32)


def test_llava_instruct_150k_multi_turn(tmp_path):
    _image(tmp_path / "coco/images/train2017/000000033471.jpg")
    rows = [
        {
            "id": "000000033471",
            "image": "000000033471.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colors are the bus?"},
                {"from": "gpt", "value": "White and red."},
                {"from": "human", "value": "What is it doing?"},
                {"from": "gpt", "value": "Driving."},
            ],
        }
    ]
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava/llava_instruct_150k.json").write_text(json.dumps(rows))
    ds = registry.get_builder_class("llava_instruct_150k")(SMALL_IMAGES, data_root=str(tmp_path)).build_datasets()["train"]
    s = ds[0]
    assert s["instruction_input"] == [f"{IMG} What colors are the bus?", "What is it doing?"]
    assert s["answer"] == ["White and red.", "Driving."]


def _videochat_rows():
    return [
        {
            "video": "000001_000050/1001.mp4",
            "caption": "a ball rolls left",
            "QA": [{"i": "Describe the following video in detail.", "q": "", "a": "A ball rolls to the left."}],
        },
        {
            "video": "000001_000050/1002.mp4",
            "QA": [
                {"i": "", "q": "What moves?", "a": "A ball."},
                {"i": "", "q": "Where to?", "a": "Left."},
                {"q": "How fast?", "a": "Slowly."},
            ],
        },
        {"video": "000001_000050/1003.mp4", "QA": [{"q": "No answer?"}]},
    ]


def test_videochat_instruct_released_layout(tmp_path):
    for vid in ("1001", "1002"):
        _mp4(tmp_path / f"videochat/videos/000001_000050/{vid}.mp4")
    (tmp_path / "videochat/videochat_instruct_11k.json").write_text(json.dumps(_videochat_rows()))
    builder = registry.get_builder_class("videochat_instruct")({**SMALL_VIDEOS, "max_turns": 2}, data_root=str(tmp_path))
    ds = builder.build_datasets()["train"]
    assert len(ds) == 3 and len(ds.malformed_records) == 1  # 1 + the 3-turn chat cut into 2 + 1; one entry lacks 'a'
    s = ds[0]
    assert s["instruction_input"] == [f"{VID} Describe the following video in detail."]
    assert s["answer"] == ["A ball rolls to the left."]
    assert tuple(s["image"].shape) == (15, 3, 2, 32, 32)  # ImageBind's 5 clips x 3 crops, 2 frames each
    assert ds[1]["instruction_input"] == [f"{VID} What moves?", "Where to?"]
    assert ds[2]["instruction_input"] == [f"{VID} How fast?"] and ds[2]["answer"] == ["Slowly."]


def test_videochat_file_name_reads_one_flat_folder(tmp_path):
    _mp4(tmp_path / "videochat/videos/1002.mp4")
    (tmp_path / "videochat/videochat_instruct_11k.json").write_text(json.dumps(_videochat_rows()[1:2]))
    cfg = {**SMALL_VIDEOS, "video_path": "file_name"}
    ds = registry.get_builder_class("videochat_instruct")(cfg, data_root=str(tmp_path)).build_datasets()["train"]
    assert ds[0]["video_id"] == "1002.mp4" and ds[0]["image"].shape[0] == 15
    with pytest.raises(ValueError, match=r"datasets\.videochat_instruct\.video_path must be one of as_written, file_name"):
        registry.get_builder_class("videochat_instruct")({"video_path": "flat"}, data_root=str(tmp_path)).build_datasets()
