"""Learning-rate schedules: warmup, cosine and step decay, the min_lr rule, per-group lr_scale."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from minigpt.common.optims import (
    ConstantLRScheduler,
    LinearWarmupCosineEpochLRScheduler,
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
    assert registry.get_lr_scheduler_class("linear_warmup_cosine_epoch_lr") is LinearWarmupCosineEpochLRScheduler


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
    with pytest.raises(ValueError, match=r"min_lr \(0\.01\) must be <= init_lr \(0\.001\): the schedule decays"):
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


# -- LAVIS's per-epoch cosine, as the originals ran it --------------------------------------------


def _lavis_rate(epoch: int, step_in_epoch: int, *, max_epoch, init_lr, min_lr, warmup_lr, warmup_steps) -> float:
    """LAVIS linear_warmup_cosine_lr.step(cur_epoch, cur_step), written out from its definition."""
    if epoch == 0:
        return min(init_lr, warmup_lr + (init_lr - warmup_lr) * step_in_epoch / max(warmup_steps, 1))
    return (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch)) + min_lr


@pytest.mark.parametrize(
    "recipe",
    [
        # MiniGPT-4 stage 1 / TinyGPT-V stage 2: 4 epochs x 5000, the whole first epoch warms up
        dict(max_epoch=4, ipe=5000, init_lr=1e-4, min_lr=8e-5, warmup_lr=1e-6, warmup_steps=5000),
        # MiniGPT-4 stage 2 / TinyGPT-V stage 3: 5 epochs x 200
        dict(max_epoch=5, ipe=200, init_lr=3e-5, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=200),
        # TinyGPT-V stage 4: min_lr above init_lr, the stairs climb
        dict(max_epoch=50, ipe=1000, init_lr=1e-5, min_lr=8e-5, warmup_lr=1e-6, warmup_steps=1000),
        # a warm-up shorter than the epoch holds init_lr for the rest of epoch 0
        dict(max_epoch=3, ipe=100, init_lr=1e-3, min_lr=1e-5, warmup_lr=0.0, warmup_steps=30),
    ],
    ids=["minigpt4-stage1", "minigpt4-stage2", "tinygptv-stage4", "short-warmup"],
)
def test_epoch_cosine_matches_lavis_at_every_step(recipe):
    ipe, max_epoch = recipe["ipe"], recipe["max_epoch"]
    s = LinearWarmupCosineEpochLRScheduler(
        _optimizer(), max_iters=max_epoch * ipe, init_lr=recipe["init_lr"], min_lr=recipe["min_lr"],
        warmup_lr=recipe["warmup_lr"], warmup_steps=recipe["warmup_steps"], iters_per_epoch=ipe,
    )
    assert s.max_epoch == max_epoch
    args = {k: recipe[k] for k in ("init_lr", "min_lr", "warmup_lr", "warmup_steps")}
    for step in range(max_epoch * ipe):
        assert s.step(step) == pytest.approx(_lavis_rate(step // ipe, step % ipe, max_epoch=max_epoch, **args)), step


def test_epoch_cosine_is_a_staircase_with_the_published_rates():
    # MiniGPT-4 stage 1 (docs/recipes.md): epochs 1 - 3 at 9.71e-5, 9.0e-5, 8.29e-5
    s = LinearWarmupCosineEpochLRScheduler(_optimizer(), max_iters=20000, init_lr=1e-4, min_lr=8e-5,
                                           warmup_lr=1e-6, warmup_steps=5000, iters_per_epoch=5000)
    assert s.step(0) == pytest.approx(1e-6)
    for epoch, rate in ((1, 9.7071e-5), (2, 9.0e-5), (3, 8.2929e-5)):
        rates = {s.step(step) for step in range(epoch * 5000, (epoch + 1) * 5000)}
        assert len(rates) == 1 and rates.pop() == pytest.approx(rate, rel=1e-4)
    # TinyGPT-V stage 4's config (init 1e-5, min 8e-5, 50 x 1000): the rate rises to about 8e-5
    up = LinearWarmupCosineEpochLRScheduler(_optimizer(), max_iters=50000, init_lr=1e-5, min_lr=8e-5,
                                            warmup_lr=1e-6, warmup_steps=1000, iters_per_epoch=1000)
    rates = [up.step(e * 1000) for e in range(1, 50)]
    assert all(a < b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(8e-5, rel=1e-3) and rates[-1] < 8e-5


def test_epoch_cosine_rounds_a_partial_last_epoch_up():
    s = LinearWarmupCosineEpochLRScheduler(_optimizer(), max_iters=250, init_lr=1.0, min_lr=0.0, iters_per_epoch=100)
    assert s.max_epoch == 3
    assert s.step(249) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 3)))


def test_epoch_cosine_needs_iters_per_epoch():
    with pytest.raises(ValueError, match=r"iters_per_epoch \(None\) must be set: .*epochs of this many steps"):
        LinearWarmupCosineEpochLRScheduler(_optimizer(), max_iters=10, init_lr=1e-3)


def test_only_the_epoch_cosine_lets_min_lr_exceed_init_lr():
    for cls in (LinearWarmupCosineLRScheduler, LinearWarmupStepLRScheduler, ConstantLRScheduler):
        assert [p.keys for p in cls.problems({"init_lr": 1e-5, "min_lr": 8e-5})] == [("min_lr", "init_lr")]
    assert LinearWarmupCosineEpochLRScheduler.problems({"init_lr": 1e-5, "min_lr": 8e-5, "iters_per_epoch": 10}) == []


# -- warm-up restarts (a job relaunched every N steps) ----------------------------------------------


def test_warmup_restart_reproduces_tinygptv_stage1_relaunches():
    # 17 launches of 5000 steps, each warming up from 1e-6 to 1e-4 over 1000 steps, then holding 1e-4
    s = ConstantLRScheduler(_optimizer(), max_iters=85000, init_lr=1e-4, warmup_lr=1e-6, warmup_steps=1000,
                            warmup_restart_every=5000)
    for launch in range(17):
        start = launch * 5000
        assert s.step(start) == pytest.approx(1e-6)
        assert s.step(start + 500) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
        assert s.step(start + 1000) == pytest.approx(1e-4)
        assert s.step(start + 4999) == pytest.approx(1e-4)
    plain = ConstantLRScheduler(_optimizer(), max_iters=85000, init_lr=1e-4, warmup_lr=1e-6, warmup_steps=1000)
    assert plain.step(5000) == pytest.approx(1e-4)  # without it, one warm-up only


def test_warmup_restart_on_a_cosine_warms_up_then_rejoins_the_curve():
    s = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=110, init_lr=1.0, min_lr=0.0, warmup_lr=0.0,
                                      warmup_steps=10, warmup_restart_every=50)
    plain = LinearWarmupCosineLRScheduler(_optimizer(), max_iters=110, init_lr=1.0, min_lr=0.0, warmup_lr=0.0,
                                          warmup_steps=10)
    assert s.step(50) == 0.0 and s.step(55) == pytest.approx(0.5)
    assert s.step(60) == pytest.approx(plain.step(60))


def test_warmup_restart_must_exceed_the_warmup():
    with pytest.raises(ValueError, match=r"warmup_restart_every \(100\) must exceed warmup_steps \(100\)"):
        ConstantLRScheduler(_optimizer(), max_iters=10, init_lr=1e-3, warmup_steps=100, warmup_restart_every=100)


def test_from_config_reads_iters_per_epoch_and_warmup_restart_every():
    run = OmegaConf.create({"max_iters": 40, "init_lr": 1.0, "min_lr": 0.0, "warmup_lr": 0.0, "warmup_steps": 2,
                            "iters_per_epoch": 10, "warmup_restart_every": 20})
    s = LinearWarmupCosineEpochLRScheduler.from_config(_optimizer(), run)
    assert (s.iters_per_epoch, s.max_epoch, s.warmup_restart_every) == (10, 4, 20)
    assert s.step(20) == 0.0 and s.step(25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 4)))


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


def test_adamw_is_fused_where_every_parameter_allows_and_steps_like_the_default():
    from minigpt.common.optims import adamw

    torch.manual_seed(0)
    w = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in w]
    groups = [{"params": w[:1], "weight_decay": 0.1}, {"params": w[1:], "weight_decay": 0.0}]
    fused = adamw(groups, lr=1e-2, betas=(0.9, 0.95))
    plain = torch.optim.AdamW(
        [{"params": ref[:1], "weight_decay": 0.1}, {"params": ref[1:], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95)
    )
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    for _ in range(3):
        for ps in (w, ref):
            for p in ps:
                p.grad = torch.sin(p.detach() * 3.0)
        fused.step()
        plain.step()
    for a, b in zip(w, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # a parameter the fused kernel cannot take (not floating point) leaves torch's default
    assert not adamw([torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=1.0).defaults["fused"]
