"""Synthetic clips: mp4 files decord reads, VideoChat-format questions whose answers the frames show."""

from __future__ import annotations

import json

import decord
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from minigpt.common.feature_store import FEATURES_FORMAT, shard_file_name
from minigpt.common.registry import registry
from minigpt.datasets.synthetic import __main__ as synthetic_cli
from minigpt.datasets.synthetic.mp4 import write_mjpeg_mp4
from minigpt.datasets.synthetic.scenes import COLOURS
from minigpt.datasets.synthetic.videos import DIRECTIONS, VIDEO_FPS, VIDEO_FRAMES, make_clip, videos_complete


def _shape_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(COLOURS[colour])).sum(-1) < 60


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos") / "synthetic"  # where the builder's default paths look
    assert synthetic_cli.main(["--out", str(out), "--n-train", "4", "--n-test", "2", "--videos", "--n-train-videos", "12",
                               "--n-test-videos", "4", "--no-progress"]) == 0
    return out


def test_clips_read_back_with_their_frame_count_and_rate(root):
    vr = decord.VideoReader(str(root / "videochat" / "videos" / "train" / "000003.mp4"))
    assert (len(vr), vr.get_avg_fps(), vr[0].shape) == (VIDEO_FRAMES, VIDEO_FPS, (64, 64, 3))
    assert videos_complete(root, 12, 4, 0) and not videos_complete(root, 13, 4, 0)


def test_the_answer_is_what_the_frames_show():
    kinds = set()
    for i in range(16):
        clip = make_clip(0, "test", i)
        qa, frames = clip["qa"], clip["frames"]
        kinds.add(qa["question_type"])
        if qa["question_type"] == "motion":
            first, last = (np.argwhere(_shape_mask(f, clip["colours"][0])).mean(0) for f in (frames[0], frames[-1]))
            dx, dy = DIRECTIONS[qa["a"]]
            moved = last - first  # (row, column)
            assert moved[1] * dx + moved[0] * dy > 15 and abs(moved[1] * dy + moved[0] * dx) < 3
        else:
            assert _shape_mask(frames[0], clip["colours"][0]).sum() > 50
            assert _shape_mask(frames[-1], qa["a"]).sum() > 50 and qa["a"] != clip["colours"][0]
    assert kinds == {"motion", "colour"}
    assert make_clip(0, "test", 5)["qa"] == make_clip(0, "test", 5)["qa"]  # seeded by (seed, split, index)


def test_the_json_is_videochat_instruct_layout_and_the_builder_reads_it(root):
    entries = json.loads((root / "videochat" / "videochat_instruct_test.json").read_text())
    assert len(entries) == 4 and set(entries[0]) == {"video", "QA"}
    assert set(entries[0]["QA"][0]) == {"i", "q", "a", "question_type"}
    splits = registry.get_builder_class("synthetic_videochat")({}, data_root=str(root.parent)).build_datasets()
    # the builder's default paths hang off <data_root>/synthetic
    sample = splits["test"][1]
    assert sample["image"].shape == (2, 3, 64, 64)  # the two frames the clip embedding sees
    # frames go in the video slot, which every family fills frame by frame (in an image slot: 2 images)
    assert sample["instruction_input"].startswith("<Video><VideoHere></Video> ")
    assert sample["answer"] == entries[1]["QA"][0]["a"] and sample["question_type"] == entries[1]["QA"][0]["question_type"]
    assert len(splits["train"]) == 12


def test_a_clip_read_whole_fills_an_image_slot(root, tmp_path):
    """Stored features (one vector a clip) are one item: the question's image slot, the conversation's <Vid> slot."""
    entries = json.loads((root / "videochat" / "videochat_instruct_test.json").read_text())
    features = tmp_path / "features"
    features.mkdir()
    save_file({e["video"]: torch.full((8,), float(i)) for i, e in enumerate(entries)},
              str(features / shard_file_name(0, 1)))
    (features / "features.json").write_text(json.dumps({"format": FEATURES_FORMAT, "shards": [shard_file_name(0, 1)]}))
    builder = registry.get_builder_class("synthetic_videochat")
    question = builder({"features_dir": str(features)}, data_root=str(root.parent)).build_datasets()["test"][2]
    assert question["image"].shape == (8,) and float(question["image"][0]) == 2.0
    assert question["instruction_input"].startswith("<Img><ImageHere></Img> ")
    chat = builder({"features_dir": str(features), "samples": "conversation"}, data_root=str(root.parent))
    assert chat.build_datasets()["test"][0]["instruction_input"][0].startswith("<Vid><ImageHere></Vid> ")
    frames = builder({"samples": "conversation"}, data_root=str(root.parent)).build_datasets()["test"][0]
    assert frames["image"].shape == (2, 3, 64, 64) and frames["instruction_input"][0].startswith("<Video><VideoHere></Video> ")


def test_malformed_videochat_entries_are_named(tmp_path):
    from minigpt.common.io import DatasetError
    from minigpt.datasets.datasets.videochat_datasets import VideoChatDataset

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([{"video": "a.mp4", "QA": [{"q": "why?", "a": "because"}, {"i": "Look.", "q": "what?", "a": "x"}]},
                               {"video": "b.mp4", "QA": "not a list"}]))
    ds = VideoChatDataset("vc", [str(ann)], None, None, str(tmp_path), samples="question")
    assert [r["question"] for r in ds.records] == ["why?", "Look. what?"]
    assert len(ds.malformed_records) == 1 and "'QA' a list" in ds.malformed_records[0]["error"]
    ann.write_text(json.dumps([{"video": "b.mp4", "QA": "not a list"}]))
    with pytest.raises(DatasetError, match=r"entry 0 of .*ann.json"):
        VideoChatDataset("vc", [str(ann)], None, None, str(tmp_path), samples="question")


def test_the_mp4_writer_checks_its_frames(tmp_path):
    with pytest.raises(ValueError, match="at least one frame"):
        write_mjpeg_mp4(tmp_path / "x.mp4", [])
    with pytest.raises(ValueError, match=r"frame 1: expected uint8 \[8, 8, 3\]"):
        write_mjpeg_mp4(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(ValueError, match="positive integer"):
        write_mjpeg_mp4(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8)], fps=7.5)
