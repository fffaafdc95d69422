"""Learning-rate schedules: warmup, cosine and step decay, the min_lr rule, per-group lr_scale."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from minigpt.common.optims import (
    ConstantLRScheduler,
    LinearWarmupCosineLRScheduler,
    LinearWarmupStepLRScheduler,
    effective_batch_size,
    peak_lr,
)
from minigpt.common.registry import registry


def _optimizer(*scales: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": s} for s in scales]
    return torch.optim.AdamW(groups or [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0)


def test_registered_names():
    assert registry.get_lr_scheduler_class("linear_warmup_cosine_lr") is LinearWarmupCosineLRScheduler
    assert registry.get_lr_scheduler_class("linear_warmup_step_lr") is LinearWarmupStepLRScheduler
    assert registry.get_lr_scheduler_class("constant_lr") is ConstantLRScheduler


def test_linear_warmup_goes_from_warmup_lr_to_init_lr():
    s = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=100, init_lr=1e-3, min_lr=1e-5,
                                      warmup_lr=1e-6, warmup_steps=10)
    assert s.step(0) == pytest.approx(1e-6)
    assert s.step(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert s.step(10) == pytest.approx(1e-3)  # the cosine starts at its peak
    warm = [s.step(i) for i in range(11)]
    assert all(a < b for a, b in zip(warm, warm[1:]))


def test_cosine_decays_to_min_lr_at_max_iters():
    s = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=110, init_lr=1e-3, min_lr=1e-4,
                                      warmup_lr=0.0, warmup_steps=10)
    assert s.step(60) == pytest.approx((1e-3 + 1e-4) / 2)  # half way through the decay
    assert s.step(110) == pytest.approx(1e-4)
    assert s.step(500) == pytest.approx(1e-4)  # past the end it stays at the floor
    decay = [s.step(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert min(decay) == pytest.approx(1e-4)


def test_cosine_without_warmup_starts_at_init_lr():
    s = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=10, init_lr=2e-3, min_lr=0.0, warmup_lr=1e-6)
    assert s.step(0) == pytest.approx(2e-3)
    assert s.step(5) == pytest.approx(1e-3)


def test_step_decay_multiplies_every_step_every_steps_and_floors_at_min_lr():
    s = LinearWarmupStepLRScheduler(_optimizer(), max_iters=1000, init_lr=1.0, min_lr=0.1, warmup_lr=0.0,
                                    warmup_steps=5, decay_rate=0.5, step_every=10)
    assert s.step(0) == 0.0
    assert s.step(5) == pytest.approx(1.0)
    assert s.step(14) == pytest.approx(1.0)
    assert s.step(15) == pytest.approx(0.5)
    assert s.step(25) == pytest.approx(0.25)
    assert s.step(35) == pytest.approx(0.125)
    assert s.step(45) == pytest.approx(0.1)  # 0.0625 is under the floor


def test_constant_after_warmup():
    s = ConstantLRScheduler(_optimizer(), max_iters=10, init_lr=3e-4, warmup_lr=0.0, warmup_steps=2)
    assert [s.step(i) for i in (0, 1, 2, 9)] == pytest.approx([0.0, 1.5e-4, 3e-4, 3e-4])


@pytest.mark.parametrize("cls", [LinearWarmupCosineLRScheduler, LinearWarmupStepLRScheduler, ConstantLRScheduler])
def test_min_lr_above_init_lr_is_an_error(cls):
    with pytest.raises(ValueError, match=r"min_lr \(0\.01\) must not exceed init_lr \(0\.001\)"):
        cls(_optimizer(), max_iters=10, init_lr=1e-3, min_lr=1e-2)


def test_lr_scale_multiplies_each_group():
    opt = _optimizer(1.0, 10.0, 0.5)
    s = LinearWarmupCosineLRScheduler(opt, max_iters=100, init_lr=1e-3, min_lr=0.0)
    lr = s.step(25)
    assert lr == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, 10 * lr, 0.5 * lr])


def test_a_group_without_lr_scale_gets_the_plain_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ConstantLRScheduler(opt, max_iters=3, init_lr=0.2).step(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_from_config_reads_the_run_section():
    run = OmegaConf.create({"max_iters": 20, "init_lr": 1.0, "min_lr": 0.0, "warmup_lr": 0.0, "warmup_steps": 0,
                            "decay_rate": 0.1, "lr_step_every": 5})
    s = LinearWarmupStepLRScheduler.from_config(_optimizer(), run)
    assert s.step(4) == pytest.approx(1.0) and s.step(5) == pytest.approx(0.1)


def test_state_dict_round_trip():
    a = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=10, init_lr=1.0)
    a.step(7)
    b = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=10, init_lr=1.0)
    b.load_state_dict(a.state_dict())
    assert b.last_lr == a.last_lr == pytest.approx(a.lr_at(7))


def _run(**keys):
    base = {"init_lr": 1e-4, "lr_rule": "absolute", "blr": None, "batch_size_train": 4, "accum_grad_iters": 4}
    return OmegaConf.create({**base, **keys})


def test_blr_rule_scales_the_base_lr_by_the_effective_batch_over_256():
    # LaVIN-7B's ScienceQA recipe: blr 9e-3, 4 per GPU x 4 accumulated x 2 GPUs = 32 -> 1.125e-3
    lr, how = peak_lr(_run(lr_rule="blr_per_256", blr=9e-3), world_size=2)
    assert lr == pytest.approx(9e-3 * 32 / 256) == pytest.approx(1.125e-3)
    assert "effective batch 32" in how and "run.blr" in how
    assert effective_batch_size(_run(), 8) == 128
    assert peak_lr(_run(lr_rule="blr_per_256", blr=9e-3), world_size=1)[0] == pytest.approx(lr / 2)


def test_absolute_rule_takes_init_lr_whatever_the_batch():
    assert peak_lr(_run(init_lr=3e-4), world_size=4)[0] == 3e-4
