"""The resumable state of a training run: what a checkpoint saves and a resume puts back.

Trainable weights (``trained.safetensors``), optimizer, lr scheduler, fp16 GradScaler, every
rank's RNG streams, the data position (mixer and each loader), the read counts of the skip-rate
check, the fault counters of the :class:`~minigpt.runners.step_guard.StepGuard`, the loss EMA and
the best-metric bookkeeping. The directory layout and the atomic write are
:mod:`minigpt.runners.checkpointing`'s; this module decides what goes in and how it comes back.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from minigpt.common import dist_utils
from minigpt.datasets.datasets.base_dataset import SkipTracker
from minigpt.runners.checkpointing import (
    DATA_STATE,
    RNG_RANKS,
    check_resumable,
    checkpoint_dir,
    data_state_for_rank,
    gather_data_state,
    gather_rng_state,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
)
from minigpt.runners.data import MixedLoader
from minigpt.runners.distributed import ParallelModel
from minigpt.runners.observability import BestTracker
from minigpt.runners.run_guard import run_fingerprint
from minigpt.runners.step_guard import StepGuard
from minigpt.runners.vision_cache import VisionFeatureCache

logger = logging.getLogger(__name__)


def resume_path(run_cfg, output_dir: str) -> Optional[str]:
    """The checkpoint ``run.resume_ckpt_path`` names, or None to start fresh.

    ``auto``: the newest checkpoint whose files match their manifest's sizes and sha256s (a
    corrupt one is passed over with a warning). A folder named explicitly must pass the same
    check (:func:`~minigpt.runners.checkpointing.check_resumable`) or the run stops, naming the file.
    """
    path = run_cfg.get("resume_ckpt_path")
    if not path:
        return None
    if path == "auto":
        path = latest_checkpoint(output_dir, hashes=True)
        if path is None:
            logger.info("run.resume_ckpt_path=auto: no checkpoint in %s, starting fresh", output_dir)
            return None
        return str(path)
    check_resumable(str(path))
    return str(path)


@dataclass
class TrainState:
    """Save and restore everything a resumed run needs; ``start_step`` and ``loss_ema`` live here.

    ``cfg`` is the composed config (saved with each checkpoint), ``run_cfg`` the runner's ``run:``
    view of it. Built once the optimizer and scheduler exist. :meth:`save` is a collective (every rank calls
    it; rank 0 writes); :meth:`save_once` does not write the same step twice.
    """

    cfg: Any
    run_cfg: Any
    parallel: ParallelModel
    optimizer: torch.optim.Optimizer
    sched: Any
    scaler: Optional[Any]
    guard: StepGuard
    loader: Optional[MixedLoader]
    skips: Optional[SkipTracker]
    best: Optional[BestTracker]
    vision_cache: Optional[VisionFeatureCache]
    start_step: int = 0
    loss_ema: Optional[float] = None
    saved_step: Optional[int] = None

    @property
    def output_dir(self) -> str:
        return str(self.run_cfg.output_dir)

    # -- saving ----------------------------------------------------------------------------------
    def saved_path(self, step: int) -> Optional[str]:
        """This run's checkpoint of ``step`` when it has written one, else None."""
        return checkpoint_dir(self.output_dir, step) if self.saved_step == step else None

    def save_once(self, step: int) -> Optional[str]:
        """The checkpoint of ``step``: the one already written, or a new one."""
        return self.saved_path(step) or self.save(step)

    def save(self, step: int) -> Optional[str]:
        """Write the checkpoint of ``step`` (all ranks call; rank 0 writes); every rank gets its path."""
        path = None
        if self.vision_cache is not None:
            # the features computed so far go to disk with the checkpoint, so a run resumed from it finds them
            self.vision_cache.flush()
        extra: Dict[str, Any] = {
            **self.guard.state_dict(),
            "loss_ema": self.loss_ema,
            "world_size": dist_utils.get_world_size(),
            RNG_RANKS: gather_rng_state(),
        }
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        if self.loader is not None:
            extra[DATA_STATE] = gather_data_state(self.loader.state_dict())
        if self.skips is not None:
            extra["read_counts"] = self.skips.state_dict()
        if self.best is not None:
            extra["best"] = self.best.state_dict()
        trained, optim = self.parallel.full_states(self.optimizer)
        if dist_utils.is_main_process():
            path = save_checkpoint(
                self.output_dir, step, self.parallel.model, self.optimizer, self.sched, self.cfg.to_yaml(),
                extra=extra, keep_last=self.run_cfg.get("keep_last"), trained_state=trained,
                optimizer_state=optim, fingerprint=run_fingerprint(self.cfg),
            )
            logger.info("saved checkpoint %s", path)
        dist_utils.barrier()
        self.saved_step = step
        return dist_utils.broadcast_object(path)

    # -- restoring -------------------------------------------------------------------------------
    def restore(self, path: str) -> None:
        """Restore optimizer, scheduler, scaler, RNG, data position and counters (weights are already loaded)."""
        state = load_training_state(path)
        if state.get("optimizer") is not None:
            self.parallel.load_optimizer_state(self.optimizer, state["optimizer"])
        if state.get("scheduler") is not None:
            self.sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        self._restore_rng(state, path, rank, world)
        self.start_step = int(state["step"])
        if os.path.abspath(path) == os.path.abspath(checkpoint_dir(self.output_dir, self.start_step)):
            self.saved_step = self.start_step  # already on disk: a resumed finished stage does not re-save it
        self.guard.load_state_dict(state)
        self.loss_ema = state.get("loss_ema")
        data = data_state_for_rank(state.get(DATA_STATE), rank, world)
        if self.loader is not None:
            if data is None:
                logger.warning("checkpoint %s holds no data position: the datasets start from their beginning", path)
            else:
                self.loader.load_state_dict(data)
        if self.skips is not None and state.get("read_counts"):
            self.skips.load_state_dict(state["read_counts"])
        if self.best is not None and state.get("best"):
            self.best.load_state_dict(state["best"])
        logger.info("resumed from %s at step %d", path, self.start_step)

    @staticmethod
    def _restore_rng(state: Dict[str, Any], path: str, rank: int, world: int) -> None:
        ranks = state.get(RNG_RANKS)
        if ranks and len(ranks) == world:
            restore_rng_state(ranks[rank])
            return
        if ranks:
            logger.warning("checkpoint %s was written by %d process(es), this run has %d: every rank "
                           "restores rank 0's RNG state", path, len(ranks), world)
        restore_rng_state(state["rng"])
