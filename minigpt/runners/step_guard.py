"""What stops a bad optimizer step: non-finite loss or gradient, and CUDA out-of-memory.

A step whose (rank-averaged) loss or global grad norm is not finite is skipped and counted;
``run.max_consecutive_nonfinite`` of them in a row raise :class:`NonFiniteLossError` naming the
step and the batch's sample ids. A CUDA out-of-memory error becomes :class:`TrainingOutOfMemory`
with advice on the settings that cut memory. Every stop leaves a ``stopped`` row in ``metrics.jsonl``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional

import torch

from minigpt.common import dist_utils
from minigpt.common.logger import MetricsLogger

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when ``run.max_consecutive_nonfinite`` optimizer steps in a row had a non-finite loss or gradient."""


class TrainingOutOfMemory(RuntimeError):
    """A CUDA out-of-memory error during a training step, with advice on what to change."""


def oom_advice(run_cfg, step: int, exc: BaseException) -> str:
    """The message of :class:`TrainingOutOfMemory`: where it happened and the settings that cut memory."""
    rc = run_cfg
    tips = [f"lower run.batch_size_train (now {rc.batch_size_train}) and the datasets' own "
            f"datasets.<name>.batch_size where set, and raise run.accum_grad_iters "
            f"(now {rc.accum_grad_iters}) to keep the same global batch"]
    if not rc.get("grad_checkpointing"):
        tips.append("set run.grad_checkpointing=true (recompute activations in the backward pass)")
    if str(rc.get("precision", "fp32")) == "fp32":
        tips.append("set run.precision=bf16 (or fp16 on GPUs without bf16)")
    if str(rc.get("distributed", "ddp")) != "fsdp" and dist_utils.get_world_size() > 1:
        tips.append("set run.distributed=fsdp to shard parameters and optimizer state across GPUs")
    return (f"CUDA out of memory at step {step}: " + "; ".join(tips) + f". ({type(exc).__name__}: "
            + (str(exc).splitlines() or [""])[0] + ")")


class StepGuard:
    """Judges each accumulated step before the optimizer applies it, and keeps the fault counters.

    ``scaler`` is the fp16 GradScaler (or None): with it an overflowing gradient is the scaler's
    normal calibration, so only a non-finite loss counts towards ``run.max_consecutive_nonfinite``.
    The counters (``skipped_steps``, ``consecutive_nonfinite``) go into every checkpoint.
    """

    def __init__(self, run_cfg, model: torch.nn.Module, scaler: Optional[Any]) -> None:
        self.run_cfg = run_cfg
        self.model = model
        self.scaler = scaler
        self.skipped_steps = 0
        self.consecutive_nonfinite = 0

    def state_dict(self) -> Dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "consecutive_nonfinite": self.consecutive_nonfinite}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_nonfinite = int(state.get("consecutive_nonfinite", 0))

    def clip_grads(self) -> float:
        """Clip to ``run.grad_clip`` (when set) and return the global grad norm (inf/nan when not finite)."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        clip = self.run_cfg.get("grad_clip")
        # an infinite max_norm leaves the gradients untouched (coefficient clamped to 1) but still
        # measures them, so a non-finite gradient is caught with clipping off too
        norm = torch.nn.utils.clip_grad_norm_(params, float(clip) if clip else float("inf"))
        if hasattr(norm, "full_tensor"):  # FSDP: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def admit(self, step: int, step_loss: float, grad_norm: float, sample_ids: List[str],
              mlog: MetricsLogger) -> bool:
        """Whether step ``step`` (1-based) may be applied; counts a skip and raises past the limit.

        The loss must be the mean over ranks, so that every rank decides the same. A skip leaves a
        ``skipped_step`` row in ``mlog``, a stop a ``stopped`` row.
        """
        if math.isfinite(step_loss) and math.isfinite(grad_norm):
            self.consecutive_nonfinite = 0
            return True
        self.skipped_steps += 1
        if self.scaler is None or not math.isfinite(step_loss):
            self.consecutive_nonfinite += 1
        logger.warning(
            "step %d: non-finite loss %s / grad norm %s, step skipped (%d so far, %d in a row)",
            step, step_loss, grad_norm, self.skipped_steps, self.consecutive_nonfinite,
        )
        mlog.log({"event": "skipped_step", "step": step, "loss": str(step_loss),
                       "grad_norm": str(grad_norm), "sample_ids": sample_ids})
        limit = self.run_cfg.get("max_consecutive_nonfinite")
        if limit and self.consecutive_nonfinite >= int(limit):
            ids = [i for part in dist_utils.all_gather_objects(sample_ids) for i in part]
            message = (
                f"iteration {step}: {self.consecutive_nonfinite} optimizer steps in a row had a "
                f"non-finite loss or gradient (run.max_consecutive_nonfinite={limit}); loss {step_loss}, "
                f"grad norm {grad_norm}; sample ids of this batch: {', '.join(ids)}"
            )
            logger.error(message)
            mlog.log({"event": "stopped", "step": step, "reason": message, "sample_ids": ids})
            raise NonFiniteLossError(message)
        return False

    def out_of_memory(self, step: int, exc: BaseException, mlog: MetricsLogger) -> TrainingOutOfMemory:
        """The error to raise for a CUDA OOM at step ``step`` (1-based), logged and written as a ``stopped`` row."""
        message = oom_advice(self.run_cfg, step, exc)
        logger.error(message)
        mlog.log({"event": "stopped", "step": step, "reason": message})
        return TrainingOutOfMemory(message)
