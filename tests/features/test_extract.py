"""python -m minigpt.features extract: shards keyed by media id, resumable after kill -9, read back by datasets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigpt.common.feature_store import FeatureStore
from minigpt.common.registry import registry
from minigpt.datasets.synthetic.videos import generate_synthetic_videos
from minigpt.features.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    generate_synthetic_videos(root / "synthetic", n_train=40, n_test=8, seed=0)
    return root


def _args(root: Path, out: Path, *extra: str):
    return ["extract", "--encoder", "vision_pretrain:tinygptv_tiny", "--dataset", "synthetic_videochat",
            "--data-root", str(root), "--out", str(out), "--shard-size", "8", "--batch-size", "4",
            "--pool-grid", "2", "--num-threads", "1", "--no-progress", *extra]


# the killed run is slowed by the test, not by the library: each encoder call sleeps first
_SLOW_RUN = """
import sys, time
from minigpt.features import embedding
forward = embedding.ClipEmbedder.forward
def slow(self, media):
    time.sleep(0.4)
    return forward(self, media)
embedding.ClipEmbedder.forward = slow
from minigpt.features.__main__ import main
main(sys.argv[1:])
"""


def test_kill_9_then_rerun_gives_the_uninterrupted_bytes_and_skips_done_shards(video_root, tmp_path, capsys):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, *_args(video_root, resumed)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        main(_args(video_root, reference))  # meanwhile, the uninterrupted run in this process
        deadline = time.time() + 120
        while len(list(resumed.glob("*.safetensors"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the extraction wrote no shard in 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    manifest = json.loads((reference / "features.json").read_text())
    shards = manifest["shards"]
    assert manifest["count"] == 48 and len(shards) == 6
    done = {p.name: p.stat() for p in resumed.glob("*.safetensors")}
    assert 2 <= len(done) < len(shards)  # killed mid-way; a half-written shard is only ever a .tmp file
    capsys.readouterr()
    main(_args(video_root, resumed))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped_shards"] == len(done) and summary["computed_shards"] == len(shards) - len(done)
    for name, before in done.items():  # the done shards were left alone, not rewritten
        after = (resumed / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    for name in shards + ["features.json"]:
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(resumed.glob("*.tmp"))
    store = FeatureStore(str(resumed))
    assert len(store) == 48 and store["test/000007.mp4"].shape == (1024,)
    assert set(load_file(str(resumed / shards[0]))) <= set(store.ids)


def test_a_rerun_with_other_settings_into_the_same_folder_is_refused(video_root, tmp_path):
    main(_args(video_root, tmp_path / "f", "--splits", "test"))
    with pytest.raises(ValueError, match=r"another extraction \(differs in .*embedding"):
        main(_args(video_root, tmp_path / "f", "--splits", "test", "--frames", "3"))


def test_an_image_dataset_reads_its_stored_features_instead_of_pixels(data_root, tmp_path):
    from minigpt.features.embedding import build_embedder

    out = tmp_path / "vqa_features"
    main(["extract", "--encoder", "vision_pretrain:tinygptv_tiny", "--dataset", "synthetic_vqa", "--splits", "test",
          "--data-root", str(data_root), "--out", str(out), "--shard-size", "16", "--no-progress"])
    builder_cls = registry.get_builder_class("synthetic_vqa")
    pixels = builder_cls({}, data_root=str(data_root)).build_datasets(["test"])["test"]
    stored = builder_cls({"features_dir": str(out)}, data_root=str(data_root)).build_datasets(["test"])["test"]
    torch.manual_seed(0)  # the extraction's seed: the same random-init encoder
    embed = build_embedder("vision_pretrain:tinygptv_tiny")
    for i in (0, 7):
        sample = stored[i]
        assert sample["image"].shape == (embed.out_dim,)
        assert torch.allclose(sample["image"], embed(pixels[i]["image"][None])[0], atol=1e-5)
        assert sample["answer"] == pixels[i]["answer"]
    stored.records[0] = {**stored.records[0], "image": "not/extracted.jpg"}
    with pytest.raises(FileNotFoundError, match=r"sample .*no stored features for media 'not/extracted.jpg'"):
        stored[0]
