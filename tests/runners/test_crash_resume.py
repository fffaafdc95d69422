"""kill -9 a tiny training run mid-step and mid-checkpoint-write; the resumed run ends bitwise equal.

Each run is a ``python train.py`` subprocess on CPU with deterministic settings (one thread,
``run.deterministic``; no loader workers, except in the test that kills a run with two workers
and random crops three times). A run to be killed starts through the test's own
launcher, ``crash_launcher.py`` (next to this file): the same entry point as train.py, with the
runner function at ``<point>@<step>`` wrapped to write a marker file and park the process there;
the test then sends SIGKILL, so the crash lands where the test says rather than at a random time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import pytest
import torch
from safetensors.torch import load_file

from minigpt.runners.checkpointing import clean_checkpoints, latest_checkpoint, load_training_state

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


def _args(tiny_options, out: Path, resume: Union[bool, Path], launch: Optional[List[str]] = None,
          setup: Sequence[str] = ()) -> List[str]:
    """The command line: ``python train.py ...``, or ``launch`` (e.g. the pausing launcher) in place of train.py.

    ``resume``: True resumes ``auto``, a path resumes that checkpoint folder. ``setup``: another
    ``--cfg-path`` and its options (default: quickstart stage 1, ``MAX_ITERS`` steps, no workers).
    """
    resume_opts = [] if resume is False else [f"run.resume_ckpt_path={'auto' if resume is True else resume}"]
    cfg, *options = setup or [str(STAGE1), *tiny_options(out, MAX_ITERS), "run.num_workers=0"]
    return [
        sys.executable, *(launch or ["train.py"]), "--cfg-path", cfg, "--options", *options,
        "run.test_splits=[]", "run.save_freq=2", "run.keep_last=2", "run.deterministic=true", *resume_opts,
    ]


def _run(tiny_options, out: Path, resume: bool = False, setup: Sequence[str] = ()) -> None:
    proc = subprocess.run(_args(tiny_options, out, resume, setup=setup), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _run_and_kill_at(tiny_options, out: Path, pause: str, resume: Union[bool, Path], tmp_path: Path,
                     setup: Sequence[str] = ()) -> None:
    """Start a run that parks at ``pause``; SIGKILL it once it is there."""
    marker = tmp_path / f"paused_{pause.replace('@', '_')}"
    launch = [str(LAUNCHER), pause, str(marker)]
    proc = subprocess.Popen(_args(tiny_options, out, resume, launch, setup), cwd=REPO, env=_env(),
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


def _final_weights(out: Path, step: int = MAX_ITERS) -> Dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{step:06d}" / "trained.safetensors"))


def _assert_bitwise_equal(out: Path, reference: Path, step: int = MAX_ITERS) -> None:
    got, want = _final_weights(out, step), _final_weights(reference, step)
    assert set(got) == set(want)
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"{len(differ)} of {len(want)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
    # the optimizer moments and step counters are part of "the same run" too
    s_got, s_want = load_training_state(str(out / "checkpoints" / f"step_{step:06d}")), load_training_state(
        str(reference / "checkpoints" / f"step_{step:06d}"))
    for pid, st in s_want["optimizer"]["state"].items():
        for key, value in st.items():
            assert torch.equal(s_got["optimizer"]["state"][pid][key], value), (pid, key)
    assert s_got["loss_ema"] == s_want["loss_ema"]


@pytest.fixture(scope="module")
def reference(tiny_options, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run(tiny_options, out)
    return out


def _rows(out: Path) -> List[Dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_kill_mid_step_then_resume_is_bitwise_equal(reference, tiny_options, tmp_path):
    out = tmp_path / "run"
    # step 4 has done its forward/backward (steps 1-3 logged, the step-2 checkpoint written) when the process dies
    _run_and_kill_at(tiny_options, out, "step@4", resume=False, tmp_path=tmp_path)
    assert latest_checkpoint(str(out)) == str(out / "checkpoints" / "step_000002")
    assert [r["step"] for r in _rows(out) if "event" not in r] == [1, 2, 3]
    _run(tiny_options, out, resume=True)
    _assert_bitwise_equal(out, reference)
    # metrics.jsonl: step 3's row from the killed run is gone, each step appears once, after a resumed row
    rows = _rows(out)
    assert [r["step"] for r in rows if "event" not in r] == [1, 2, 3, 4, 5, 6]
    assert [(r["event"], r["step"]) for r in rows if r.get("event") == "resumed"] == [("resumed", 2)]
    assert [r.get("event") for r in rows].index("resumed") == 2


def test_kill_between_the_halves_of_a_resave_leaves_a_complete_checkpoint(reference, tiny_options, tmp_path):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    _run(tiny_options, out)
    # run again from step 4, writing step 6 once more; dies with the old step 6 renamed aside, the new one not in
    _run_and_kill_at(tiny_options, out, "ckpt_swap@6", resume=ckpts / "step_000004", tmp_path=tmp_path)
    assert not (ckpts / "step_000006").exists()
    assert (ckpts / ".old_step_000006" / "manifest.json").is_file()
    # the next start puts the whole old copy back (and removes the temporary new one)
    clean_checkpoints(str(out))
    assert latest_checkpoint(str(out), hashes=True) == str(ckpts / "step_000006")
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000004", "step_000006"]
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


# Random resized crops on a stream (webdataset shards, two per worker) and a map-style dataset, read
# by two loader workers: the crops must come out the same after a resume, whose workers start afresh.
WORKER_ITERS = 8
CROPS = "vis_processor: {train: {name: image_train, image_size: 64}}"
KILL_SEED = 21


def _workers_setup(tiny_options, tmp_path: Path, out: Path) -> List[str]:
    cfg = tmp_path / "crops_two_workers.yaml"
    if not cfg.exists():
        text = STAGE1.read_text()
        block = "  synthetic_caption_wds:\n    sample_ratio: 1.0\n"
        assert block in text
        cfg.write_text(text.replace(block, (
            f"  synthetic_caption_wds:\n    sample_ratio: 1.0\n    {CROPS}\n"
            f"  synthetic_coco_caption:\n    sample_ratio: 1.0\n    {CROPS}\n")))
    return [str(cfg), *tiny_options(out, WORKER_ITERS), "run.num_workers=2"]


def _kill_points(seed: int, n: int = 3) -> List[str]:
    """``n`` distinct pause points of a ``WORKER_ITERS``-step run, drawn with ``seed``, in the order a run meets them.

    Mid-step points (after step ``s``'s backward pass) and checkpoint points (step ``s`` saved,
    ``latest`` not yet moved to it; save_freq=2).
    """
    points: List[Tuple[int, int, str]] = [(s, 0, f"step@{s}") for s in range(1, WORKER_ITERS)]
    points += [(s, 1, f"ckpt_latest@{s}") for s in range(2, WORKER_ITERS, 2)]
    return [p for *_, p in sorted(random.Random(seed).sample(points, n))]


def test_kill_three_times_with_workers_and_random_crops_then_resume_is_bitwise_equal(tiny_options, tmp_path):
    reference = tmp_path / "uninterrupted"
    _run(tiny_options, reference, setup=_workers_setup(tiny_options, tmp_path, reference))
    out = tmp_path / "run"
    setup = _workers_setup(tiny_options, tmp_path, out)
    kills = _kill_points(KILL_SEED)
    for n, pause in enumerate(kills):
        _run_and_kill_at(tiny_options, out, pause, resume=n > 0, tmp_path=tmp_path, setup=setup)
    _run(tiny_options, out, resume=True, setup=setup)
    _assert_bitwise_equal(out, reference, WORKER_ITERS)
    rows = _rows(out)
    assert [r["step"] for r in rows if "event" not in r] == list(range(1, WORKER_ITERS + 1)), kills
    # each kill after the first checkpoint resumed from the one `latest` names (save_freq=2): the newest
    # before the step it died in, or before the checkpoint `latest` was not yet moved to
    before = [int(p.split("@")[1]) - 1 for p in kills]
    resumed_at = [s - s % 2 for s in before if s >= 2]
    assert [r["step"] for r in rows if r.get("event") == "resumed"] == resumed_at, kills
