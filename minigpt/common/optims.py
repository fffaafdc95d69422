"""Learning-rate schedules, registered by name; each sets every param group's lr per optimizer step.

A param group may carry ``lr_scale`` (e.g. the projector's own rate); the schedule multiplies it in.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch

# schedule argument -> the run key it comes from (defaults live in default_run.yaml)
RUN_KEYS = {
    "max_iters": "max_iters",
    "init_lr": "init_lr",
    "min_lr": "min_lr",
    "warmup_lr": "warmup_lr",
    "warmup_steps": "warmup_steps",
    "decay_rate": "decay_rate",
    "step_every": "lr_step_every",
}


class _Schedule:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        init_lr: float,
        min_lr: float = 0.0,
        warmup_lr: float = 0.0,
        warmup_steps: int = 0,
        **_: Any,
    ) -> None:
        if min_lr > init_lr:
            raise ValueError(f"min_lr ({min_lr}) must not exceed init_lr ({init_lr})")
        self.optimizer = optimizer
        self.max_iters = int(max_iters)
        self.init_lr, self.min_lr, self.warmup_lr = float(init_lr), float(min_lr), float(warmup_lr)
        self.warmup_steps = int(warmup_steps)
        self.last_lr = self.warmup_lr if self.warmup_steps else self.init_lr

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, run_cfg) -> "_Schedule":
        """The schedule ``run:`` describes (each argument read from its run key, see ``RUN_KEYS``)."""
        return cls(optimizer, **{arg: run_cfg[key] for arg, key in RUN_KEYS.items() if key in run_cfg})

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def _warmup(self, step: int) -> float:
        frac = step / max(1, self.warmup_steps)
        return self.warmup_lr + (self.init_lr - self.warmup_lr) * frac

    def step(self, step: int) -> float:
        """Set the lr for optimizer step ``step`` (0-based) and return it."""
        lr = self._warmup(step) if step < self.warmup_steps else self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_lr = lr
        return lr

    def state_dict(self) -> Dict[str, Any]:
        return {"last_lr": self.last_lr}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.last_lr = state.get("last_lr", self.last_lr)


class LinearWarmupCosineLRScheduler(_Schedule):
    """Linear warmup to ``init_lr``, then cosine decay to ``min_lr`` at ``max_iters``. YAML name ``linear_warmup_cosine_lr``."""

    def lr_at(self, step: int) -> float:
        span = max(1, self.max_iters - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


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
    return int(run_cfg.batch_size_train) * int(run_cfg.accum_grad_iters) * int(world_size)


def peak_lr(run_cfg, world_size: int) -> Tuple[float, str]:
    """The peak lr a run trains with and how it was found (for the start-of-run log).

    ``run.lr_rule: absolute``: ``run.init_lr`` as written. ``blr_per_256``: ``run.blr x effective
    batch / 256`` (``init_lr`` is then derived; the config rules refuse one set by hand).
    """
    if run_cfg.get("lr_rule", "absolute") != "blr_per_256":
        return float(run_cfg.init_lr), f"lr {float(run_cfg.init_lr):.3g} (run.init_lr)"
    batch = effective_batch_size(run_cfg, world_size)
    lr = float(run_cfg.blr) * batch / BLR_BATCH
    how = (
        f"lr {lr:.4g} = run.blr {float(run_cfg.blr):.3g} x effective batch {batch} "
        f"({int(run_cfg.batch_size_train)} per process x {int(run_cfg.accum_grad_iters)} accumulated x "
        f"{int(world_size)} processes) / {BLR_BATCH}"
    )
    return lr, how
