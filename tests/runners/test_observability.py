"""Observability of a training run: TensorBoard events, memory in the metrics rows, periodic samples,
evaluation during training with the best checkpoint kept."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.runners.checkpointing import is_complete, load_training_state
from minigpt.runners.observability import BestTracker, ScalarSinks
from minigpt.runners.stage import run_stage

VQA_STAGE = """\
model:
  arch: tinygptv
  model_type: tiny
datasets:
  synthetic_vqa:
    sample_ratio: 1.0
run:
  stage_name: observe
  init_lr: 1.0e-3
  min_lr: 1.0e-4
  warmup_lr: 1.0e-5
  warmup_steps: 0
  seed: 42
"""

def _rows(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def stage(stage_from_yaml):
    def make(text: str, out: Path, max_iters: int, *extra: str) -> Config:
        return stage_from_yaml(text, out, max_iters, "run.eval_max_new_tokens=3", *extra)

    return make


# -- TensorBoard and memory ----------------------------------------------------------------------
def test_tensorboard_events_hold_the_logged_scalars(stage, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_stage(stage(VQA_STAGE, out, 3, "run.test_splits=[]", "run.tensorboard=true"))
    rows = [r for r in _rows(out / "metrics.jsonl") if "loss" in r and "event" not in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["memory_mb"] > 1.0 for r in rows)  # RSS of a process holding torch is far above 1 MiB

    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "memory_mb"):
        assert f"train/{tag}" in tags
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-5)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([r["lr"] for r in rows], rel=1e-5)


def test_off_by_default_writes_no_event_files(stage, tmp_path):
    out = tmp_path / "run"
    run_stage(stage(VQA_STAGE, out, 1, "run.test_splits=[]"))
    assert not (out / "tensorboard").exists()
    assert not (out / "samples.jsonl").exists()


@pytest.mark.parametrize(
    "module, options, key",
    [("torch.utils.tensorboard", {"tensorboard": True}, "run.tensorboard"),
     ("wandb", {"wandb_project": "demo"}, "run.wandb_project")],
)
def test_a_missing_logging_package_names_its_run_key(monkeypatch, tmp_path, module, options, key):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(ImportError, match=key):
        ScalarSinks(OmegaConf.create(options), str(tmp_path))


# -- periodic samples and evaluation -------------------------------------------------------------
def test_samples_and_evaluation_are_written_at_their_steps(stage, tmp_path):
    out = tmp_path / "run"
    summary = run_stage(stage(
        VQA_STAGE, out, 4, "run.test_splits=[test]", "run.max_eval_samples=4", "run.sample_every=2",
        "run.sample_count=2", "run.eval_every=2",
    ))
    samples = _rows(out / "samples.jsonl")
    assert [r["step"] for r in samples] == [2, 2, 4, 4]
    assert {r["dataset"] for r in samples} == {"synthetic_vqa/test"}
    ids = [r["sample_id"] for r in samples]
    assert ids[:2] == ids[2:] and ids[0] != ids[1]  # the same fixed two samples each time
    for r in samples:
        assert isinstance(r["prompt"], str) and r["prompt"]
        assert isinstance(r["prediction"], str) and isinstance(r["answer"], str) and r["answer"]
    metric_rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in metric_rows if r.get("event") == "sample"] == [2, 2, 4, 4]

    evals = [r for r in metric_rows if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["synthetic_vqa/test/samples"] == 4 for r in evals)  # run.max_eval_samples respected
    assert len(_rows(out / "eval" / "step_000002" / "predictions" / "synthetic_vqa_test.jsonl")) == 4
    # the end-of-stage evaluation is the step-4 one (its predictions in the usual place), not a second pass
    assert len(_rows(out / "predictions" / "synthetic_vqa_test.jsonl")) == 4
    assert not (out / "eval" / "step_000004").exists()
    assert summary["metrics"] == {k: v for k, v in evals[1].items() if k not in ("event", "step", "time")}


@pytest.mark.parametrize("mode, scores, best_step", [("max", [0.2, 0.5, 0.3], 4), ("min", [0.4, 0.5, 0.3], 6)])
def test_best_checkpoint_follows_the_metric(stage, tmp_path, monkeypatch, mode, scores, best_step):
    task_cls = registry.get_task_class("image_text_pretrain")
    calls: List[int] = []

    def scripted_evaluate(self, model, datasets, splits, run_cfg, output_dir, progress=True):
        calls.append(len(calls))
        return {"synthetic_vqa/test/vqa_accuracy": scores[len(calls) - 1], "synthetic_vqa/test/samples": 4}

    monkeypatch.setattr(task_cls, "evaluate", scripted_evaluate)
    out = tmp_path / "run"
    summary = run_stage(stage(
        VQA_STAGE, out, 6, "run.test_splits=[test]", "run.eval_every=2", "run.best_metric=vqa_accuracy",
        f"run.best_mode={mode}", "run.keep_last=1",
    ))
    assert len(calls) == 3  # steps 2, 4, 6; the final evaluation reuses step 6's
    rows = _rows(out / "metrics.jsonl")
    evals = [r for r in rows if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]
    expect_best, best = [], None
    for step, score in zip((2, 4, 6), scores):
        if best is None or (score > best[1] if mode == "max" else score < best[1]):
            best = (step, score)
        expect_best.append(best[0])
    assert [r["best_step"] for r in evals] == expect_best
    assert evals[-1]["best_metric"] == "synthetic_vqa/test/vqa_accuracy"
    assert [r["step"] for r in rows if r.get("event") == "best_checkpoint"] == sorted(set(expect_best))

    ckpts = out / "checkpoints"
    link = ckpts / "best"
    assert link.is_symlink() and os.readlink(link) == f"best_step_{best_step:06d}"
    assert is_complete(str(link)) and load_training_state(str(link))["step"] == best_step
    assert summary["best_step"] == best_step and summary["best_value"] == scores[best_step // 2 - 1]
    # only the newest best directory is kept, and keep_last=1 pruned the step directories but not it
    assert sorted(p.name for p in ckpts.iterdir() if p.name.startswith("best_")) == [f"best_step_{best_step:06d}"]
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_000006"]
    if best_step != 6:
        final = load_file(str(ckpts / "step_000006" / "trained.safetensors"))
        kept = load_file(str(link / "trained.safetensors"))
        assert final.keys() == kept.keys()
        assert any(not torch.equal(final[k], kept[k]) for k in final)  # the best is not the final weights
    assert load_training_state(str(ckpts / "step_000006"))["best"]["step"] == best_step


def test_best_metric_that_names_no_result_lists_the_keys():
    tracker = BestTracker("bleu", "max")
    with pytest.raises(KeyError, match="run.best_metric='bleu' matches none.*vqa_accuracy"):
        tracker.update(2, {"synthetic_vqa/test/vqa_accuracy": 0.1})
    with pytest.raises(ValueError, match="run.best_mode='up'"):
        BestTracker("bleu", "up")
