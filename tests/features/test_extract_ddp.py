"""Feature extraction under torchrun: each process writes every other shard; the folder equals a one-process run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from minigpt.datasets.synthetic.videos import generate_synthetic_videos
from minigpt.features.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def test_two_processes_split_the_shards_and_write_what_one_process_writes(tmp_path, capsys):
    generate_synthetic_videos(tmp_path / "synthetic", n_train=20, n_test=4)
    args = ["extract", "--encoder", "vision_pretrain:tinygptv_tiny", "--dataset", "synthetic_videochat",
            "--data-root", str(tmp_path), "--shard-size", "6", "--pool-grid", "2", "--centre", "--num-threads", "1",
            "--no-progress"]
    main([*args, "--out", str(tmp_path / "one")])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MINIGPT_DATA_ROOT", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "minigpt.features", *args, "--out", str(tmp_path / "two")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0's: shards 0 and 2 of 4
    assert (summary["world_size"], summary["shards"], summary["computed_shards"]) == (2, 4, 2)
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
