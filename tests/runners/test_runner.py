"""The iteration runner in-process: checkpoint directories, resume, non-finite steps, per-group lr."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from safetensors.torch import load_file

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.models.weights.checkpoint import resolve_checkpoint_file
from minigpt.runners import checkpointing
from minigpt.runners.checkpointing import (
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
)
from minigpt.runners.runner_iter import RunnerIter
from minigpt.runners.stage import run_stage
from minigpt.tasks.base_task import BaseTask

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "train_configs" / "quickstart_stage1.yaml"


def _rows(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _adam_steps(ckpt_dir: str) -> List[int]:
    state = load_training_state(ckpt_dir)["optimizer"]["state"]
    return sorted({int(s["step"]) for s in state.values()})


# -- checkpoint directories ----------------------------------------------------------------------
def _save(out: Path, step: int, model: torch.nn.Module) -> str:
    return save_checkpoint(str(out), step, model, None, None, "run: {}\n")


def test_latest_ignores_a_leftover_partial_write(tmp_path):
    model = torch.nn.Linear(3, 2)
    first = _save(tmp_path, 1, model)
    assert latest_checkpoint(str(tmp_path)) == first
    # what a crash in the middle of writing step 2 leaves behind
    partial = tmp_path / "checkpoints" / ".tmp_step_000002"
    partial.mkdir()
    (partial / "trained.safetensors").write_bytes(b"\0" * 10)
    assert latest_checkpoint(str(tmp_path)) == first
    assert resolve_checkpoint_file(str(tmp_path)) == os.path.join(first, "trained.safetensors")
    # the next complete write replaces the leftover and moves the pointer
    with torch.no_grad():
        model.weight.add_(1.0)
    second = _save(tmp_path, 2, model)
    assert latest_checkpoint(str(tmp_path)) == second
    assert not partial.exists()
    assert torch.equal(load_file(os.path.join(second, "trained.safetensors"))["weight"], model.weight.detach())


def test_latest_does_not_move_when_a_write_fails(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    first = _save(tmp_path, 1, model)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", disk_full)
    with pytest.raises(OSError):
        _save(tmp_path, 2, model)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000001"
    assert latest_checkpoint(str(tmp_path)) == first
    assert not (tmp_path / "checkpoints" / "step_000002").exists()


def test_latest_pointing_at_an_incomplete_directory_resolves_to_none(tmp_path):
    _save(tmp_path, 1, torch.nn.Linear(2, 2))
    (tmp_path / "checkpoints" / "step_000001" / "trained.safetensors").unlink()
    assert latest_checkpoint(str(tmp_path)) is None


def test_training_state_restores_the_rng_streams(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3)
    path = _save(tmp_path, 1, torch.nn.Linear(2, 2))
    draws = (random.random(), float(np.random.rand()), torch.rand(3))
    restore_rng_state(load_training_state(path)["rng"])  # loads with weights_only=True
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert draws[0] == again[0] and draws[1] == again[1] and torch.equal(draws[2], again[2])


# -- whole stages in-process ---------------------------------------------------------------------
@pytest.fixture
def stage_cfg(tiny_options):
    def make(out: Path, max_iters: int, *extra: str) -> Config:
        return Config(STAGE1, [*tiny_options(out, max_iters), "run.test_splits=[]", *extra])

    return make


def test_resume_auto_continues_from_the_saved_step(stage_cfg, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "run"
    first = run_stage(stage_cfg(out, 2))
    assert first["steps"] == 2 and first["checkpoint"].endswith("step_000002")

    second = run_stage(stage_cfg(out, 4, "run.resume_ckpt_path=auto"))
    assert second["steps"] == 2
    assert f"resumed from {out / 'checkpoints' / 'step_000002'} at step 2" in caplog.text
    rows = _rows(out / "metrics.jsonl")
    ends = [i for i, r in enumerate(rows) if r.get("event") == "train_end"]
    assert len(ends) == 2
    assert [r["step"] for r in rows[: ends[0]]] == [1, 2]
    assert (rows[ends[0] + 1]["event"], rows[ends[0] + 1]["step"]) == ("resumed", 2)
    assert [r["step"] for r in rows[ends[0] + 2 : ends[1]]] == [3, 4]
    # AdamW's per-parameter step counters carried over: 2 steps before the resume + 2 after
    assert _adam_steps(second["checkpoint"]) == [4]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000004"


def test_resume_auto_without_a_checkpoint_starts_fresh(stage_cfg, tmp_path, caplog):
    caplog.set_level("INFO")
    summary = run_stage(stage_cfg(tmp_path / "fresh", 1, "run.resume_ckpt_path=auto"))
    assert summary["steps"] == 1
    assert "no checkpoint" in caplog.text and "starting fresh" in caplog.text


def test_a_fresh_run_into_a_used_folder_is_refused_unless_overwrite(stage_cfg, tmp_path):
    from minigpt.runners.run_guard import RunFolderError

    out = tmp_path / "again"
    run_stage(stage_cfg(out, 2))
    with pytest.raises(RunFolderError, match=r"resume_ckpt_path=auto.*run\.overwrite_output=true"):
        run_stage(stage_cfg(out, 1))
    run_stage(stage_cfg(out, 1, "run.overwrite_output=true"))
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "event" not in r] == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_000001"]


def test_non_finite_loss_is_skipped_and_counted(stage_cfg, tmp_path, monkeypatch, caplog):
    calls = {"n": 0}
    original = BaseTask.train_step

    def nan_on_second_call(self, model, samples):
        out = original(self, model, samples)
        calls["n"] += 1
        if calls["n"] == 2:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    monkeypatch.setattr(BaseTask, "train_step", nan_on_second_call)
    out = tmp_path / "nan"
    summary = run_stage(stage_cfg(out, 4))
    assert summary["skipped_steps"] == 1
    assert "non-finite loss" in caplog.text
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "event" not in r] == [1, 3, 4]
    assert rows[-1]["event"] == "train_end" and rows[-1]["skipped_steps"] == 1
    # the NaN gradients were dropped, not applied: 3 optimizer steps, finite weights
    ckpt = summary["checkpoint"]
    assert _adam_steps(ckpt) == [3]
    assert load_training_state(ckpt)["skipped_steps"] == 1
    weights = load_file(os.path.join(ckpt, "trained.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_projector_lr_scale_applies_to_the_projector_group_only(stage_cfg, tmp_path):
    cfg = stage_cfg(tmp_path / "unused", 10, "run.projector_lr_scale=5.0", "run.warmup_steps=0")
    model = registry.get_model_class("tinygptv").from_config(cfg.model_cfg)
    runner = RunnerIter(cfg, task=None, model=model, datasets={}, device=torch.device("cpu"))
    optimizer = runner._optimizer(float(cfg.run_cfg.init_lr))
    sched = registry.get_lr_scheduler_class(cfg.run_cfg.lr_sched).from_config(optimizer, cfg.run_cfg)
    lr = sched.step(0)
    assert lr == pytest.approx(float(cfg.run_cfg.init_lr))
    projector = {id(p) for p in model.projector.parameters()}
    seen_projector = seen_other = False
    for group in optimizer.param_groups:
        in_projector = {id(p) in projector for p in group["params"]}
        assert len(in_projector) == 1, "a group mixes projector and other parameters"
        if in_projector.pop():
            seen_projector = True
            assert group["lr"] == pytest.approx(5.0 * lr)
        else:
            seen_other = True
            assert group["lr"] == pytest.approx(lr)
    assert seen_projector and seen_other
