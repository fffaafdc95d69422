"""The video_instruct builder on a VideoInstruct-100K fixture: JSON of {video_id, q, a} + tiny AVI files."""

import json
import os
import struct

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.datasets import DatasetError, MissingDataError
from minigpt.datasets.datasets.base_dataset import READ_STATS_KEY, skip_bad_samples
from minigpt.datasets.datasets.video_datasets import VideoInstructDataset, write_mjpeg_avi

pytest.importorskip("decord")

PH = "<Video><VideoHere></Video>"
STEP = 20
SMALL = {
    "vis_processor": {
        "train": {"name": "video_train", "image_size": 16, "n_frms": 4},
        "eval": {"name": "video_eval", "image_size": 16, "n_frms": 4},
    }
}


def _video(path, n, base=0):
    """``n`` flat frames; frame i has red = base + STEP * i."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frames = [np.full((24, 32, 3), (base + STEP * i, 60, 200), np.uint8) for i in range(n)]
    return write_mjpeg_avi(path, frames, fps=10)


def _fixture(root):
    """The default layout: video_instruct/VideoInstruct100K.json, video_instruct/videos/<video_id>.avi."""
    _video(root / "video_instruct/videos/v_abc123.avi", 12)
    _video(root / "video_instruct/videos/v_xyz789.avi", 8, base=40)
    entries = [
        {
            "q": "What is happening  in the\nvideo?",
            "a": "A man is\n\nwashing a car. ",
            "video_id": "v_abc123",
        },
        {"q": "What colour is the car?", "a": "Red.", "video_id": "v_abc123"},
        {"q": "Describe the video.", "a": "Someone surfs.", "video_id": "v_xyz789"},
    ]
    path = root / "video_instruct/VideoInstruct100K.json"
    path.write_text(json.dumps(entries))
    return entries


def _build(root, cfg=None, splits=None):
    builder = registry.get_builder_class("video_instruct")({**SMALL, **(cfg or {})}, data_root=str(root))
    return builder.build_datasets(splits)


def test_default_yaml_metadata_and_processors(tmp_path):
    cls = registry.get_builder_class("video_instruct")
    with open(cls.default_config_path()) as f:
        text = f.read()
    raw = yaml.safe_load(text)["datasets"]["video_instruct"]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped not in ("datasets:", "video_instruct:"):
            assert "#" in stripped, f"undocumented line {line!r}"
    assert raw["build_info"]["annotations"]["train"] == ["video_instruct/VideoInstruct100K.json"]
    assert not os.path.isabs(raw["build_info"]["videos"])
    assert raw["vis_processor"]["train"]["name"] == "video_train"
    assert raw["vis_processor"]["eval"]["name"] == "video_eval"
    assert cls.TASK == "video_conversation" and "VideoInstruct" in cls.FORMAT and cls.APPROX_SIZE
    assert "``video_instruct``" in cls.__doc__
    builder = cls(None, data_root=str(tmp_path))
    assert builder.splits() == ["train"]
    vis, text = builder.build_processors("train")
    assert type(vis).__name__ == "VideoTrainProcessor" and vis.n_frms == 8 and text is None


def test_samples_hold_frames_in_image_and_the_instruction_in_the_schema(tmp_path):
    entries = _fixture(tmp_path)
    ds = _build(tmp_path)["train"]
    assert isinstance(ds, VideoInstructDataset) and len(ds) == 3
    torch.manual_seed(0)
    s = ds[0]
    assert s["image"].shape == (4, 3, 16, 16) and s["image"].dtype == torch.float32
    assert s["instruction_input"] == f"{PH} What is happening in the video?"
    assert s["answer"] == "A man is\n\nwashing a car."  # answers are kept as written, ends stripped
    assert s["sample_id"] == "video_instruct:0:v_abc123" and s["video_id"] == "v_abc123"
    assert s["task"] == "video_conversation"
    assert ds[2]["sample_id"] == "video_instruct:2:v_xyz789" and ds[2]["answer"] == entries[2]["a"]
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 4, 3, 16, 16)  # [B, T, 3, H, W]
    assert batch["video_id"] == ["v_abc123", "v_abc123", "v_xyz789"]


def test_frames_come_from_the_named_video_and_eval_split_samples_uniformly(tmp_path):
    _fixture(tmp_path)
    cfg = {
        "task_tag": "[vqa]",
        "build_info": {
            "annotations": {"test": ["video_instruct/VideoInstruct100K.json"]},
            "videos": "video_instruct/videos",
        },
        # mean 0 / std 1: the output is the frame in [0, 1], so its red value tells the frame index
        "vis_processor": {
            "eval": {"name": "video_eval", "image_size": 8, "n_frms": 4, "mean": [0, 0, 0], "std": [1, 1, 1]}
        },
    }
    ds = _build(tmp_path, cfg)["test"]
    first, third = ds[0], ds[2]
    assert first["instruction_input"] == f"{PH} [vqa] What is happening in the video?"
    reds = [round(float(r) * 255 / STEP) for r in first["image"][:, 0].mean(dim=(1, 2))]
    assert reds == [1, 4, 7, 10]  # 12 frames, the middle of each of 4 segments
    reds = [round((float(r) * 255 - 40) / STEP) for r in third["image"][:, 0].mean(dim=(1, 2))]
    assert reds == [1, 3, 5, 7]  # v_xyz789: 8 frames
    assert torch.equal(ds[0]["image"], first["image"])


def test_extension_order_and_ids_with_an_extension(tmp_path):
    _fixture(tmp_path)
    _video(
        tmp_path / "video_instruct/videos/v_abc123.mp4", 12, base=20
    )  # an AVI stream under .mp4: ffmpeg probes
    ann = tmp_path / "video_instruct/VideoInstruct100K.json"
    cfg = {
        "vis_processor": {
            "train": {"name": "video_eval", "image_size": 8, "n_frms": 2, "mean": [0, 0, 0], "std": [1, 1, 1]}
        }
    }
    ds = _build(tmp_path, cfg)["train"]
    assert round(float(ds[0]["image"][0, 0].mean()) * 255) == 20 + STEP * 3  # .mp4 comes before .avi
    ds = _build(tmp_path, {**cfg, "build_info": {"video_extensions": ["avi", "mp4"]}})["train"]
    assert round(float(ds[0]["image"][0, 0].mean()) * 255) == STEP * 3
    ann.write_text(json.dumps([{"video_id": "v_abc123.avi", "q": "q?", "a": "a."}]))
    assert round(float(_build(tmp_path, cfg)["train"][0]["image"][0, 0].mean()) * 255) == STEP * 3


def test_missing_and_corrupt_videos_name_dataset_sample_and_path(tmp_path):
    _fixture(tmp_path)
    os.remove(tmp_path / "video_instruct/videos/v_xyz789.avi")
    (tmp_path / "video_instruct/videos/v_abc123.avi").write_bytes(b"\x00garbage, not a video" * 10)
    ds = _build(tmp_path)["train"]
    with pytest.raises(
        MissingDataError,
        match=r"video_instruct:2:v_xyz789.*no video file for 'v_xyz789'.*v_xyz789\.mp4.*v_xyz789\.avi",
    ):
        ds[2]
    with pytest.raises(
        DatasetError,
        match=r"'video_instruct', sample 'video_instruct:0:v_abc123'.*corrupt video .*v_abc123\.avi",
    ):
        ds[0]


def test_malformed_entries_are_left_out_and_counted_and_a_bad_file_is_named(tmp_path):
    _fixture(tmp_path)
    ann = tmp_path / "video_instruct/VideoInstruct100K.json"
    ann.write_text(
        json.dumps(
            [
                {"video_id": "v_abc123", "q": "q?", "a": "a."},
                {"video_id": "v_abc123", "question": "q?", "a": "a."},
                {"video_id": "v_xyz789", "q": "  ", "a": "a."},
                {"video_id": "v_xyz789", "q": "Why?", "a": "Because."},
            ]
        )
    )
    ds = _build(tmp_path)["train"]
    assert [ds.records[i]["video_id"] for i in range(len(ds))] == ["v_abc123", "v_xyz789"]
    assert ds[1]["sample_id"] == "video_instruct:1:v_xyz789" and ds[1]["answer"] == "Because."
    assert [m["index"] for m in ds.malformed_records] == [1, 2]
    assert "lacks key(s) q" in ds.malformed_records[0]["error"]
    assert "'q' must be non-empty text" in ds.malformed_records[1]["error"]
    # a file with no good entry is an error naming its first entry
    ann.write_text(json.dumps([{"video_id": "v_abc123", "question": "q?", "a": "a."}]))
    with pytest.raises(DatasetError, match=r"entry 0 of .*VideoInstruct100K\.json lacks key\(s\) q"):
        _build(tmp_path)
    ann.write_text(json.dumps([{"video_id": "v_abc123", "q": "q?", "a": ["not", "text"]}]))
    with pytest.raises(
        DatasetError, match=r"entry 0 of .*VideoInstruct100K\.json: 'a' must be non-empty text"
    ):
        _build(tmp_path)
    ann.write_text(json.dumps({"video_id": "v_abc123"}))
    with pytest.raises(DatasetError, match="must hold a JSON list"):
        _build(tmp_path)
    with pytest.raises(KeyError, match="unknown key 'frames'"):
        _build(tmp_path, {"build_info": {"frames": 3}})


def test_bad_videos_are_refused_by_kind_and_ids_stay_in_the_videos_root(tmp_path):
    entries = _fixture(tmp_path)
    entries += [
        {"q": "Corrupt?", "a": "Yes.", "video_id": "v_corrupt"},
        {"q": "Outside?", "a": "Yes.", "video_id": "../../outside"},
    ]
    (tmp_path / "video_instruct/videos/v_corrupt.avi").write_bytes(b"RIFF not really an avi")
    (tmp_path / "video_instruct/VideoInstruct100K.json").write_text(json.dumps(entries))
    ds = _build(tmp_path, splits=["train"])["train"]
    kinds = {}
    for i in (3, 4):
        with pytest.raises(DatasetError) as info:
            ds[i]
        kinds[entries[i]["video_id"]] = info.value.kind
    assert kinds == {"v_corrupt": "decode_error", "../../outside": "outside_data_root"}


def _declare_frames(path, width, height):
    """Rewrite an AVI's headers (main header and video stream format) to declare ``width`` x ``height`` frames."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, data.index(b"avih") + 8 + 32, width, height)
    struct.pack_into("<ii", data, data.index(b"strf") + 8 + 4, width, height)
    path.write_bytes(bytes(data))


def test_oversize_videos_and_absurd_frame_sizes_are_skipped_as_too_large_before_decoding(tmp_path, monkeypatch):
    import decord

    entries = _fixture(tmp_path)
    videos = tmp_path / "video_instruct/videos"
    _video(videos / "v_fine.avi", 4)
    entries.append({"q": "Fine?", "a": "Yes.", "video_id": "v_fine"})
    (tmp_path / "video_instruct/VideoInstruct100K.json").write_text(json.dumps(entries))
    _declare_frames(videos / "v_xyz789.avi", 20000, 20000)  # 400 megapixels a frame
    cap = (videos / "v_abc123.avi").stat().st_size - 1  # the 12-frame video is the largest file
    assert (videos / "v_fine.avi").stat().st_size <= cap and (videos / "v_xyz789.avi").stat().st_size <= cap
    ds = _build(tmp_path, {"read_limits": {"max_video_bytes": cap}}, splits=["train"])["train"]

    opened = []
    real_reader = decord.VideoReader
    monkeypatch.setattr(decord, "VideoReader", lambda path, **kw: opened.append(path) or real_reader(path, **kw))
    with pytest.raises(DatasetError, match=rf"sample 'video_instruct:0:v_abc123'.*holds \d+ bytes.*max_video_bytes={cap}"):
        ds[0]
    with pytest.raises(DatasetError, match=r"v_xyz789\.avi declares 20000x20000 frames.*max_video_frame_pixels") as info:
        ds[2]
    assert info.value.kind == "too_large" and opened == []  # refused before the decoder saw either file
    # in training: replaced, and counted as too_large
    sample = skip_bad_samples(ds, "video_instruct", seed=0)[0]
    assert sample["video_id"] == "v_fine" and opened
    skipped = sample[READ_STATS_KEY]["skipped"]
    assert skipped and {r["kind"] for r in skipped} == {"too_large"}
    assert skipped[0]["sample_id"] == "video_instruct:0:v_abc123" and skipped[0]["path"].endswith("v_abc123.avi")
