"""kill -9 a tiny training run mid-step and mid-checkpoint-write; the resumed run ends bitwise equal.

Each run is a ``python train.py`` subprocess on CPU with deterministic settings (one thread,
``run.deterministic``, no loader workers). A run to be killed starts through the test's own
launcher, ``crash_launcher.py`` (next to this file): the same entry point as train.py, with the
runner function at ``<point>@<step>`` wrapped to write a marker file and park the process there;
the test then sends SIGKILL, so the crash lands where the test says rather than at a random time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch
from safetensors.torch import load_file

from minigpt.runners.checkpointing import latest_checkpoint, load_training_state

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "train_configs" / "quickstart_stage1.yaml"
LAUNCHER = Path(__file__).resolve().parent / "crash_launcher.py"
MAX_ITERS = 6


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("MINIGPT_DATA_ROOT", None)
    return env


def _args(tiny_options, out: Path, resume: bool, launch: Optional[List[str]] = None) -> List[str]:
    """The command line: ``python train.py ...``, or ``launch`` (e.g. the pausing launcher) in place of train.py."""
    return [
        sys.executable, *(launch or ["train.py"]), "--cfg-path", str(STAGE1), "--options",
        *tiny_options(out, MAX_ITERS),
        "run.test_splits=[]", "run.save_freq=2", "run.keep_last=2", "run.deterministic=true",
        "run.num_workers=0", *(["run.resume_ckpt_path=auto"] if resume else []),
    ]


def _run(tiny_options, out: Path, resume: bool = False) -> None:
    proc = subprocess.run(_args(tiny_options, out, resume), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _run_and_kill_at(tiny_options, out: Path, pause: str, resume: bool, tmp_path: Path) -> None:
    """Start a run that parks at ``pause``; SIGKILL it once it is there."""
    marker = tmp_path / f"paused_{pause.replace('@', '_')}"
    launch = [str(LAUNCHER), pause, str(marker)]
    proc = subprocess.Popen(_args(tiny_options, out, resume, launch), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"run exited ({proc.returncode}) before reaching {pause}: {proc.stderr.read()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"run did not reach {pause} in time")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _final_weights(out: Path) -> Dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{MAX_ITERS:06d}" / "trained.safetensors"))


def _assert_bitwise_equal(out: Path, reference: Path) -> None:
    got, want = _final_weights(out), _final_weights(reference)
    assert set(got) == set(want)
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"{len(differ)} of {len(want)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
    # the optimizer moments and step counters are part of "the same run" too
    s_got, s_want = load_training_state(str(out / "checkpoints" / f"step_{MAX_ITERS:06d}")), load_training_state(
        str(reference / "checkpoints" / f"step_{MAX_ITERS:06d}"))
    for pid, st in s_want["optimizer"]["state"].items():
        for key, value in st.items():
            assert torch.equal(s_got["optimizer"]["state"][pid][key], value), (pid, key)
    assert s_got["loss_ema"] == s_want["loss_ema"]


@pytest.fixture(scope="module")
def reference(tiny_options, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run(tiny_options, out)
    return out


def test_kill_mid_step_then_resume_is_bitwise_equal(reference, tiny_options, tmp_path):
    out = tmp_path / "run"
    # step 3 has done its forward/backward (after the step-2 checkpoint) when the process dies
    _run_and_kill_at(tiny_options, out, "step@3", resume=False, tmp_path=tmp_path)
    assert latest_checkpoint(str(out)) == str(out / "checkpoints" / "step_000002")
    _run(tiny_options, out, resume=True)
    _assert_bitwise_equal(out, reference)


def test_kill_mid_checkpoint_write_then_resume_is_bitwise_equal(reference, tiny_options, tmp_path):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    # 1) dies with the step-4 weights written into the temporary directory, the rest not yet
    _run_and_kill_at(tiny_options, out, "ckpt_files@4", resume=False, tmp_path=tmp_path)
    assert (ckpts / ".tmp_step_000004" / "trained.safetensors").is_file()
    assert not (ckpts / "step_000004").exists()
    assert latest_checkpoint(str(out)) == str(ckpts / "step_000002")
    # 2) the resumed run dies after renaming step 4 into place, before `latest` moves to it
    _run_and_kill_at(tiny_options, out, "ckpt_latest@4", resume=True, tmp_path=tmp_path)
    assert (ckpts / "latest").read_text().strip() == "step_000002"
    assert (ckpts / "step_000004" / "manifest.json").is_file()
    # 3) resumes from whatever `auto` picks and finishes
    _run(tiny_options, out, resume=True)
    _assert_bitwise_equal(out, reference)
    # keep_last=2: only the two newest complete checkpoints remain, no temporary leftovers
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000004", "step_000006"]
