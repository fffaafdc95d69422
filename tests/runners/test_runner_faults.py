"""Runner faults and settings in-process: NaN stop with sample ids, OOM advice, precision,
gradient checkpointing, keep_last and manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.runners.checkpointing import MANIFEST, is_complete, latest_checkpoint, load_training_state
from minigpt.runners.runner_iter import NonFiniteLossError, TrainingOutOfMemory, enable_grad_checkpointing
from minigpt.runners.stage import run_stage
from minigpt.tasks.base_task import BaseTask

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "train_configs" / "quickstart_stage1.yaml"


@pytest.fixture
def stage_cfg(tiny_options):
    def make(out: Path, max_iters: int, *extra: str) -> Config:
        return Config(STAGE1, [*tiny_options(out, max_iters), "run.test_splits=[]", *extra])

    return make


def _rows(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_k_consecutive_nonfinite_losses_stop_with_iteration_and_sample_ids(stage_cfg, tmp_path, monkeypatch):
    original = BaseTask.train_step
    seen = []

    def nan_from_third_call(self, model, samples):
        out = original(self, model, samples)
        seen.append(list(samples["sample_id"]))
        if len(seen) >= 3:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    monkeypatch.setattr(BaseTask, "train_step", nan_from_third_call)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError) as info:
        run_stage(stage_cfg(out, 10, "run.max_consecutive_nonfinite=3"))
    message = str(info.value)
    # steps 3, 4, 5 were non-finite: the third in a row stops at iteration 5
    assert "iteration 5" in message and "3 optimizer steps in a row" in message
    assert len(seen) == 5
    assert all(sid in message for sid in seen[-1])
    assert not any(sid in message for sid in seen[0] if sid not in seen[-1])
    rows = _rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("event") == "skipped_step"] == [3, 4, 5]
    assert rows[-1]["event"] == "stopped" and rows[-1]["sample_ids"] == seen[-1]


def test_a_finite_step_resets_the_consecutive_count(stage_cfg, tmp_path, monkeypatch):
    original = BaseTask.train_step
    calls = {"n": 0}

    def nan_on_even_calls(self, model, samples):
        out = original(self, model, samples)
        calls["n"] += 1
        return {**out, "loss": out["loss"] * float("nan")} if calls["n"] % 2 == 0 else out

    monkeypatch.setattr(BaseTask, "train_step", nan_on_even_calls)
    summary = run_stage(stage_cfg(tmp_path / "alt", 6, "run.max_consecutive_nonfinite=2"))
    assert summary["skipped_steps"] == 3


def test_non_finite_gradient_with_finite_loss_is_skipped(stage_cfg, tmp_path, monkeypatch):
    original = BaseTask.train_step

    def poison_grad(self, model, samples):
        out = original(self, model, samples)
        p = next(q for q in model.parameters() if q.requires_grad)
        p.register_hook(lambda g: g * float("inf")) if not hasattr(p, "_poisoned") else None
        p._poisoned = True
        return out

    monkeypatch.setattr(BaseTask, "train_step", poison_grad)
    summary = run_stage(stage_cfg(tmp_path / "grad", 2, "run.grad_clip=null"))
    assert summary["skipped_steps"] == 2
    weights = load_training_state(summary["checkpoint"])["optimizer"]["state"]
    assert weights == {}  # no optimizer step was ever taken


def test_cuda_out_of_memory_is_reported_with_advice(stage_cfg, tmp_path, monkeypatch):
    def oom(self, model, samples):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(BaseTask, "train_step", oom)
    with pytest.raises(TrainingOutOfMemory) as info:
        run_stage(stage_cfg(tmp_path / "oom", 3))
    message = str(info.value)
    assert "step 1" in message and "run.batch_size_train (now 4)" in message
    assert "run.grad_checkpointing=true" in message and "run.precision=bf16" in message
    assert "Tried to allocate 2.00 GiB" in message
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_bf16_autocast_trains_on_cpu(stage_cfg, tmp_path, monkeypatch):
    dtypes = []
    original = BaseTask.train_step

    def record(self, model, samples):
        dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, model, samples)

    monkeypatch.setattr(BaseTask, "train_step", record)
    summary = run_stage(stage_cfg(tmp_path / "bf16", 2, "run.precision=bf16"))
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert summary["skipped_steps"] == 0 and summary["final_loss_ema"] is not None
    rows = [r for r in _rows(tmp_path / "bf16" / "metrics.jsonl") if "event" not in r]
    assert len(rows) == 2 and all(r["loss"] == r["loss"] and abs(r["loss"]) < 1e4 for r in rows)


def test_fp16_on_cpu_is_a_clear_error(stage_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"run.precision=fp16 needs a CUDA device.*bf16"):
        run_stage(stage_cfg(tmp_path / "fp16", 1, "run.precision=fp16"))


def test_gradient_checkpointing_gives_the_same_gradients(stage_cfg, tmp_path):
    cfg = stage_cfg(tmp_path / "unused", 1)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = registry.get_model_class("tinygptv").from_config(cfg.model_cfg)
        if checkpointing:
            parts = enable_grad_checkpointing(model)
            assert parts, "no part of the tiny model took gradient checkpointing"
            assert any(getattr(m, "gradient_checkpointing", False) for m in model.llm.modules())
        model.train()
        torch.manual_seed(1)
        size = int(cfg.model_cfg.vision_encoder.image_size)
        images = torch.randn(2, 3, size, size)
        batch = {"image": images, "instruction_input": ["<Img><ImageHere></Img> describe"] * 2,
                 "answer": ["a red circle", "two blue squares"]}
        model(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, ckpt = grads
    assert set(plain) == set(ckpt) and plain
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_keep_last_and_manifests(stage_cfg, tmp_path):
    out = tmp_path / "keep"
    run_stage(stage_cfg(out, 5, "run.save_freq=1", "run.keep_last=2"))
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000004", "step_000005"]
    manifest = json.loads((ckpts / "step_000005" / MANIFEST).read_text())
    assert manifest["step"] == 5
    for name, size in manifest["files"].items():
        assert (ckpts / "step_000005" / name).stat().st_size == size
    assert {"trained.safetensors", "training_state.pt", "config.yaml"} <= set(manifest["files"])
    # a truncated file makes the checkpoint incomplete; auto-resume falls back to the older one
    state = ckpts / "step_000005" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert not is_complete(str(ckpts / "step_000005"))
    assert latest_checkpoint(str(out)) == str(ckpts / "step_000004")
