"""Learning-rate schedules, registered by name; each sets every param group's lr per optimizer step.

A param group may carry ``lr_scale`` (e.g. the projector's own rate); the schedule multiplies it in.
Every schedule starts with a linear warm-up from ``warmup_lr`` to ``init_lr`` over ``warmup_steps``;
``warmup_restart_every`` starts that warm-up again every so many steps (a job relaunched from its
last checkpoint, as TinyGPT-V's stage 1 was run, warms up again at every launch).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch

# schedule argument -> the run key it comes from (defaults live in default_run.yaml)
RUN_KEYS = {
    "max_iters": "max_iters",
    "init_lr": "init_lr",
    "min_lr": "min_lr",
    "warmup_lr": "warmup_lr",
    "warmup_steps": "warmup_steps",
    "warmup_restart_every": "warmup_restart_every",
    "decay_rate": "decay_rate",
    "step_every": "lr_step_every",
    "iters_per_epoch": "iters_per_epoch",
}


def adamw(
    param_groups: Any, lr: float, betas: Tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Optimizer:
    """AdamW as training builds it: torch's fused kernel where every parameter allows it, else its default.

    The fused kernel updates each tensor in one pass (parameter, gradient and both moments read
    and written once) where the default implementation runs about ten separate tensor operations
    per parameter; on a CPU that is ~5x less optimizer time. It needs floating-point parameters
    on a device with the kernel (CPU, CUDA, ...); anything else gets torch's default. transformers'
    ``Trainer`` picks the same fused AdamW by default (``optim="adamw_torch_fused"``).
    """
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    groups = list(param_groups)
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    devices = set(_get_fused_kernels_supported_devices())
    fused = bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True if fused else None)


class Problem(NamedTuple):
    """A run value a schedule cannot work with: ``<keys[0]> must <must> <keys[1]>: <why>``."""

    keys: Tuple[str, ...]  # run keys, the one at fault first
    must: str  # "be <=", "exceed", "be set"
    why: str

    def text(self, show) -> str:
        """The sentence, each key written by ``show(key)`` (e.g. with its value and the file that set it)."""
        first, *rest = self.keys
        return f"{show(first)} must {self.must}{''.join(' ' + show(k) for k in rest)}: {self.why}"


class _Schedule:
    # Whether min_lr may exceed init_lr. A schedule that decays from init_lr to min_lr would then
    # climb instead, which reads as a slip; a schedule that allows it says what the rise means.
    MIN_LR_MAY_EXCEED_INIT_LR = False

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        init_lr: float,
        min_lr: float = 0.0,
        warmup_lr: float = 0.0,
        warmup_steps: int = 0,
        warmup_restart_every: Optional[int] = None,
        **_: Any,
    ) -> None:
        given = {"init_lr": init_lr, "min_lr": min_lr, "warmup_steps": warmup_steps,
                 "warmup_restart_every": warmup_restart_every, **_}
        for problem in self.problems(given):
            raise ValueError(f"{type(self).__name__}: " + problem.text(lambda key: f"{key} ({given.get(key)!r})"))
        self.optimizer = optimizer
        self.max_iters = int(max_iters)
        self.init_lr, self.min_lr, self.warmup_lr = float(init_lr), float(min_lr), float(warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.warmup_restart_every = None if warmup_restart_every is None else int(warmup_restart_every)
        self.last_lr = self.warmup_lr if self.warmup_steps else self.init_lr

    @classmethod
    def problems(cls, run: Mapping[str, Any]) -> List[Problem]:
        """What this schedule cannot work with in ``run`` (run key -> value).

        The one place these rules live (``min_lr <= init_lr`` unless the schedule lets the rate
        climb, a warm-up restart after the warm-up's end): the config rules ask before any work,
        naming the files that set the values, and the constructor for a schedule built in code.
        """
        out: List[Problem] = []
        init_lr, min_lr = run.get("init_lr"), run.get("min_lr")
        if init_lr is not None and min_lr is not None and min_lr > init_lr and not cls.MIN_LR_MAY_EXCEED_INIT_LR:
            out.append(Problem(("min_lr", "init_lr"), "be <=", (
                "the schedule decays from init_lr down to min_lr (linear_warmup_cosine_epoch_lr, the originals' "
                "per-epoch cosine, lets the rate climb to a min_lr above init_lr)")))
        every, warmup = run.get("warmup_restart_every"), run.get("warmup_steps") or 0
        if every is not None and every <= warmup:
            out.append(Problem(("warmup_restart_every", "warmup_steps"), "exceed",
                               "each warm-up has to end before the next one starts"))
        return out

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, run_cfg) -> "_Schedule":
        """The schedule ``run:`` describes (each argument read from its run key, see ``RUN_KEYS``)."""
        return cls(optimizer, **{arg: run_cfg[key] for arg, key in RUN_KEYS.items() if key in run_cfg})

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def warmup_span(self, step: int) -> int:
        """Warm-up steps at the start of the window holding ``step``."""
        return self.warmup_steps

    def _warmup(self, step: int) -> float:
        frac = step / max(1, self.warmup_steps)
        return self.warmup_lr + (self.init_lr - self.warmup_lr) * frac

    def lr_of(self, step: int) -> float:
        """The rate of optimizer step ``step`` (0-based), warm-up included."""
        local = step % self.warmup_restart_every if self.warmup_restart_every else step
        return self._warmup(local) if local < self.warmup_span(step) else self.lr_at(step)

    def step(self, step: int) -> float:
        """Set the lr for optimizer step ``step`` (0-based) and return it."""
        lr = self.lr_of(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_lr = lr
        return lr

    def state_dict(self) -> Dict[str, Any]:
        return {"last_lr": self.last_lr}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.last_lr = state.get("last_lr", self.last_lr)


def _cosine(init_lr: float, min_lr: float, t: float) -> float:
    """From ``init_lr`` at ``t = 0`` to ``min_lr`` at ``t = 1`` along half a cosine."""
    return min_lr + (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


class LinearWarmupCosineLRScheduler(_Schedule):
    """Linear warmup to ``init_lr``, then cosine decay to ``min_lr`` at ``max_iters``. YAML name ``linear_warmup_cosine_lr``."""

    def lr_at(self, step: int) -> float:
        span = max(1, self.max_iters - self.warmup_steps)
        return _cosine(self.init_lr, self.min_lr, min(1.0, (step - self.warmup_steps) / span))


class LinearWarmupCosineEpochLRScheduler(_Schedule):
    """LAVIS's ``linear_warmup_cosine_lr`` as the originals ran it; YAML name ``linear_warmup_cosine_epoch_lr``.

    The run is cut into epochs of ``iters_per_epoch`` steps (``max_epoch`` = ``max_iters`` over
    that, rounded up). Epoch 0 warms up linearly from ``warmup_lr`` over its first ``warmup_steps``
    steps (a warm-up longer than the epoch ends with it) and then holds ``init_lr``; every later
    epoch ``e`` holds one rate, ``cosine(e / max_epoch)`` from ``init_lr`` towards ``min_lr``: a
    staircase that never reaches ``min_lr``. A ``min_lr`` above ``init_lr`` is allowed: the stairs
    then climb, as in TinyGPT-V's stage 4 config (1e-5 towards 8e-5).
    """

    MIN_LR_MAY_EXCEED_INIT_LR = True

    def __init__(self, optimizer, max_iters, init_lr, iters_per_epoch: Optional[int] = None, **kw):
        super().__init__(optimizer, max_iters, init_lr, iters_per_epoch=iters_per_epoch, **kw)
        self.iters_per_epoch = int(iters_per_epoch)  # type: ignore[arg-type]  # problems() refused None
        self.max_epoch = max(1, math.ceil(self.max_iters / self.iters_per_epoch))

    @classmethod
    def problems(cls, run: Mapping[str, Any]) -> List[Problem]:
        out = super().problems(run)
        if run.get("iters_per_epoch") is None:
            out.append(Problem(("iters_per_epoch",), "be set", (
                "linear_warmup_cosine_epoch_lr cuts the run into epochs of this many steps (the originals' "
                "iters_per_epoch; runner_epoch derives it from the datasets)")))
        return out

    def warmup_span(self, step: int) -> int:
        return min(self.warmup_steps, self.iters_per_epoch)

    def lr_at(self, step: int) -> float:
        epoch = step // self.iters_per_epoch
        if epoch == 0:
            return self.init_lr
        return _cosine(self.init_lr, self.min_lr, epoch / self.max_epoch)


class LinearWarmupStepLRScheduler(_Schedule):
    """Linear warmup, then ``init_lr * decay_rate ** (steps // step_every)``, floored at ``min_lr``. YAML name ``linear_warmup_step_lr``."""

    def __init__(self, optimizer, max_iters, init_lr, decay_rate: float = 0.9, step_every: int = 1000, **kw):
        super().__init__(optimizer, max_iters, init_lr, **kw)
        self.decay_rate, self.step_every = float(decay_rate), max(1, int(step_every))

    def lr_at(self, step: int) -> float:
        k = (step - self.warmup_steps) // self.step_every
        return max(self.min_lr, self.init_lr * self.decay_rate**k)


class ConstantLRScheduler(_Schedule):
    """Linear warmup, then a constant ``init_lr``. YAML name ``constant_lr``."""

    def lr_at(self, step: int) -> float:
        return self.init_lr


# -- the peak learning rate (run.lr_rule) --------------------------------------------------------------
BLR_BATCH = 256  # blr_per_256: the base lr is per 256 samples of effective batch (MAE's, LLaMA-Adapter's, LaVIN's rule)


def effective_batch_size(run_cfg, world_size: int) -> int:
    """Samples per optimizer step over every process: ``batch_size_train x accum_grad_iters x world_size``."""
    return int(run_cfg["batch_size_train"]) * int(run_cfg["accum_grad_iters"]) * int(world_size)


def peak_lr(run_cfg, world_size: int) -> Tuple[float, str]:
    """The peak lr a run trains with and how it was found (for the start-of-run log).

    ``run.lr_rule: absolute``: ``run.init_lr`` as written. ``blr_per_256``: ``run.blr x effective
    batch / 256`` (``init_lr`` is then derived; the config rules refuse one set by hand).
    """
    if run_cfg.get("lr_rule", "absolute") != "blr_per_256":
        return float(run_cfg["init_lr"]), f"lr {float(run_cfg['init_lr']):.3g} (run.init_lr)"
    batch = effective_batch_size(run_cfg, world_size)
    lr = float(run_cfg["blr"]) * batch / BLR_BATCH
    how = (
        f"lr {lr:.4g} = run.blr {float(run_cfg['blr']):.3g} x effective batch {batch} "
        f"({int(run_cfg['batch_size_train'])} per process x {int(run_cfg['accum_grad_iters'])} accumulated x "
        f"{int(world_size)} processes) / {BLR_BATCH}"
    )
    return lr, how
