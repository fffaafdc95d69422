"""Checkpoint integrity and honest resumes: sha256 manifests, leftovers removed, the run lock, a
fresh run into a used folder, resume fingerprints, and the best checkpoint saved after its evaluation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from minigpt.common.config import Config, ConfigError
from minigpt.common.registry import registry
from minigpt.models.weights.checkpoint import CheckpointIntegrityError, load_trained
from minigpt.runners.checkpointing import (
    MANIFEST,
    clean_checkpoints,
    is_complete,
    latest_checkpoint,
    load_training_state,
    save_checkpoint,
)
from minigpt.runners.run_guard import LOCK_FILE, ResumeMismatchError, RunFolderError, RunLock
from minigpt.runners.stage import run_stage

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "train_configs" / "quickstart_stage1.yaml"

VQA_STAGE = """\
model:
  arch: tinygptv
  model_type: tiny
datasets:
  synthetic_vqa:
    sample_ratio: 1.0
run:
  stage_name: integrity
  warmup_steps: 0
"""


@pytest.fixture
def stage_cfg(tiny_options):
    def make(out: Path, max_iters: int, *extra: str) -> Config:
        return Config(STAGE1, [*tiny_options(out, max_iters), "run.test_splits=[]", *extra])

    return make


def _ckpt(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:06d}"


def _corrupt_middle(path: Path, n: int = 4096) -> None:
    """Overwrite ``n`` bytes in the middle of ``path`` with 0xFF, keeping its size."""
    size = path.stat().st_size
    assert size > 2 * n, f"{path} is too small ({size} bytes) to corrupt in the middle"
    with open(path, "r+b") as fh:
        fh.seek(size // 2 - n // 2)
        fh.write(b"\xff" * n)
    assert path.stat().st_size == size


# -- 1. sha256 per file --------------------------------------------------------------------------
def test_a_corrupt_checkpoint_is_refused_and_auto_falls_back(stage_cfg, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "run"
    run_stage(stage_cfg(out, 4, "run.save_freq=2"))
    manifest = json.loads((_ckpt(out, 4) / MANIFEST).read_text())
    assert set(manifest["sha256"]) == set(manifest["files"]) and all(len(h) == 64 for h in manifest["sha256"].values())
    _corrupt_middle(_ckpt(out, 4) / "trained.safetensors")
    assert is_complete(str(_ckpt(out, 4)))  # sizes still match: only the hashes tell

    # model.ckpt=<run folder> loads what `latest` names: refused, naming the file
    with pytest.raises(CheckpointIntegrityError, match=r"trained\.safetensors"):
        load_trained(torch.nn.Linear(2, 2), str(out))
    # an explicit resume is refused before any work
    with pytest.raises(ConfigError, match=r"run\.resume_ckpt_path.*step_000004.*trained\.safetensors.*sha256"):
        run_stage(stage_cfg(out, 6, f"run.resume_ckpt_path={_ckpt(out, 4)}"))
    # auto passes over it to the previous complete checkpoint
    assert latest_checkpoint(str(out), hashes=True) == str(_ckpt(out, 2))
    summary = run_stage(stage_cfg(out, 6, "run.save_freq=2", "run.resume_ckpt_path=auto"))
    assert f"resumed from {_ckpt(out, 2)} at step 2" in caplog.text
    assert summary["steps"] == 4
    # step 4 was written again (the old folder set aside, the new one moved in): whole and verified
    latest_checkpoint(str(out), hashes=True)
    load_trained(torch.nn.Linear(2, 2), str(_ckpt(out, 4)), strict=False)


def test_explicit_resume_of_an_incomplete_folder_names_the_file(stage_cfg, tmp_path):
    out = tmp_path / "run"
    run_stage(stage_cfg(out, 2))
    (_ckpt(out, 2) / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"run\.resume_ckpt_path.*incomplete: config\.yaml is missing"):
        run_stage(stage_cfg(out, 4, f"run.resume_ckpt_path={_ckpt(out, 2)}"))
    with pytest.raises(ConfigError, match=r"not a checkpoint directory"):
        run_stage(stage_cfg(out, 4, f"run.resume_ckpt_path={tmp_path}"))


# -- 3. leftovers removed ------------------------------------------------------------------------
def _leftovers(root: Path) -> List[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") or
                  (p.name.startswith("step_") and not is_complete(str(p))))


def test_pruning_removes_incomplete_and_temporary_folders(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(str(tmp_path), 1, model, None, None, "run: {}\n")
    root = tmp_path / "checkpoints"
    (root / ".tmp_step_000007").mkdir()  # a write a crash interrupted
    (root / ".tmp_step_000007" / "trained.safetensors").write_bytes(b"\0" * 8)
    (root / ".old_step_000001").mkdir()  # a stale copy of a re-save that then finished
    broken = save_checkpoint(str(tmp_path), 3, model, None, None, "run: {}\n")
    os.remove(os.path.join(broken, "training_state.pt"))  # an incomplete step folder
    save_checkpoint(str(tmp_path), 4, model, None, None, "run: {}\n", keep_last=2)
    assert _leftovers(root) == []
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000001", "step_000004"]


def test_an_interrupted_resave_is_put_back_at_start(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(str(tmp_path), 2, model, None, None, "run: {}\n")
    root = tmp_path / "checkpoints"
    os.replace(path, root / ".old_step_000002")  # the first half of a re-save, then kill -9
    (root / ".tmp_step_000002").mkdir()
    assert latest_checkpoint(str(tmp_path)) is None
    clean_checkpoints(str(tmp_path))
    assert latest_checkpoint(str(tmp_path), hashes=True) == path
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000002"]


# -- 5. the run lock -----------------------------------------------------------------------------
def test_a_second_run_into_a_live_runs_folder_is_refused(stage_cfg, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(RunFolderError, match=rf"in use by another run \(process {holder.pid} on"):
            run_stage(stage_cfg(out, 1))
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone now: its lock is stale and taken over; released when the run ends
    summary = run_stage(stage_cfg(out, 1))
    assert summary["steps"] == 1 and not (out / LOCK_FILE).exists()


def test_run_lock_is_exclusive_and_released(tmp_path):
    with RunLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()


# -- 6. fingerprints -----------------------------------------------------------------------------
def test_resume_with_another_config_or_other_data_is_refused(stage_from_yaml, data_root, tmp_path):
    questions = json.loads((data_root / "synthetic" / "vqa" / "vqa_train.json").read_text())
    ann = tmp_path / "questions.json"
    ann.write_text(json.dumps(questions[:40]))
    data = [f"datasets.synthetic_vqa.build_info.annotations.train=[{ann}]", "run.test_splits=[]"]
    out = tmp_path / "run"
    run_stage(stage_from_yaml(VQA_STAGE, out, 2, *data))

    with pytest.raises(ResumeMismatchError, match=r"run\.init_lr: .*resume_allow_changes=true"):
        run_stage(stage_from_yaml(VQA_STAGE, out, 3, *data, "run.init_lr=0.5", "run.resume_ckpt_path=auto"))
    ann.write_text(json.dumps(questions[:41]))  # the annotation file changed under the run
    with pytest.raises(ResumeMismatchError, match=r"data:synthetic_vqa\.annotations\.train"):
        run_stage(stage_from_yaml(VQA_STAGE, out, 3, *data, "run.resume_ckpt_path=auto"))
    summary = run_stage(stage_from_yaml(VQA_STAGE, out, 3, *data, "run.resume_ckpt_path=auto",
                                        "run.resume_allow_changes=true"))
    assert summary["steps"] == 1


# -- 8. the best checkpoint records its own evaluation -------------------------------------------
def test_a_checkpoint_at_an_evaluation_step_records_that_evaluations_best(stage_from_yaml, tmp_path, monkeypatch):
    scores = [0.5, 0.2]
    calls: List[Dict] = []

    def scripted_evaluate(self, model, datasets, splits, run_cfg, output_dir, progress=True):
        calls.append({})
        return {"synthetic_vqa/test/vqa_accuracy": scores[len(calls) - 1]}

    monkeypatch.setattr(registry.get_task_class("image_text_pretrain"), "evaluate", scripted_evaluate)
    out = tmp_path / "run"
    run_stage(stage_from_yaml(VQA_STAGE, out, 4, "run.test_splits=[test]", "run.eval_every=2", "run.save_freq=2",
                              "run.best_metric=vqa_accuracy"))
    best = load_training_state(str(_ckpt(out, 2)))["best"]
    assert (best["step"], best["value"]) == (2, 0.5)


# -- 10. evaluation files written atomically -----------------------------------------------------
def test_evaluation_files_during_training_are_written_atomically(stage_from_yaml, tmp_path, monkeypatch):
    from minigpt.tasks.evaluation import loop

    written: List[str] = []
    original = loop.write_atomically

    def recording(path, write, prefix="."):
        written.append(os.path.relpath(path, out))
        return original(path, write, prefix)

    monkeypatch.setattr(loop, "write_atomically", recording)
    out = tmp_path / "run"
    run_stage(stage_from_yaml(VQA_STAGE, out, 4, "run.test_splits=[test]", "run.eval_every=2",
                              "run.max_eval_samples=4", "run.eval_max_new_tokens=2"))
    step2 = os.path.join("eval", "step_000002")
    for folder in (step2, "."):
        assert os.path.normpath(os.path.join(folder, "predictions", "synthetic_vqa_test.jsonl")) in written, written
    assert not [p for p in (out / "eval").rglob("*.tmp*")]
