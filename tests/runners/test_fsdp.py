"""FSDP (torch's FSDP2 ``fully_shard``) on CPU with gloo under torchrun: trains, saves full tensors,
resumes, and matches DDP on the same batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "train_configs" / "quickstart_stage1.yaml"


def _losses(out: Path) -> List[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["loss"] for r in rows if "event" not in r]


@pytest.mark.slow
def test_fsdp_trains_saves_full_tensors_resumes_and_matches_ddp(tiny_options, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("MINIGPT_DATA_ROOT", None)

    def torchrun(out: Path, iters: int, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "train.py",
             "--cfg-path", str(STAGE1), "--options", *tiny_options(out, iters), "run.batch_size_train=2",
             "run.test_splits=[]", "run.dist_backend=gloo", *extra],
            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        )

    def finish(proc: subprocess.Popen) -> str:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-4000:]
        return err

    ddp_out, fsdp_out = tmp_path / "ddp", tmp_path / "fsdp"
    ddp = torchrun(ddp_out, 3)
    err = finish(torchrun(fsdp_out, 2, "run.distributed=fsdp"))
    assert "FSDP:" in err and "sharded across 2 processes" in err
    err = finish(torchrun(fsdp_out, 3, "run.distributed=fsdp", "run.resume_ckpt_path=auto"))
    assert "resumed from" in err and "at step 2" in err
    finish(ddp)

    # the same batches and the same math: only the order of the reductions differs
    torch.testing.assert_close(torch.tensor(_losses(fsdp_out)), torch.tensor(_losses(ddp_out)), rtol=1e-3, atol=0)
    # rank 0 wrote full (unsharded) tensors, loadable like a DDP checkpoint
    fsdp_w = load_file(str(fsdp_out / "checkpoints" / "step_000003" / "trained.safetensors"))
    ddp_w = load_file(str(ddp_out / "checkpoints" / "step_000003" / "trained.safetensors"))
    assert set(fsdp_w) == set(ddp_w)
    for name, tensor in ddp_w.items():
        assert fsdp_w[name].shape == tensor.shape, name
        torch.testing.assert_close(fsdp_w[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
