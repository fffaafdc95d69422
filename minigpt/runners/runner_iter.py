"""The iteration-based runner: a fixed number of optimizer steps over mixed datasets."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from minigpt.common import dist_utils
from minigpt.common.logger import MetricsLogger
from minigpt.common.registry import registry
from minigpt.datasets.datasets.base_dataset import SkipTracker
from minigpt.datasets.datasets.io import SkipRateExceeded
from minigpt.runners.checkpointing import (
    DATA_STATE,
    data_state_for_rank,
    gather_data_state,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
)
from minigpt.runners.data import MixedLoader, build_train_loader

logger = logging.getLogger(__name__)


@registry.register_runner("runner_iter")
class RunnerIter:
    """Train for ``run.max_iters`` optimizer steps, checkpoint, then evaluate ``run.test_splits``.

    YAML name ``runner_iter``. Gradient accumulation, grad clipping, AdamW with per-group lr
    scales, DDP when launched by torchrun, a tqdm bar (loss, lr, samples/s, ETA) on rank 0 and a
    ``metrics.jsonl`` row every ``run.log_freq`` steps.

    Data: unreadable samples are replaced and counted per dataset (``skipped_samples`` in the
    bar, the rows and the end-of-training summary); past ``run.max_skip_rate`` the run stops with
    :class:`SkipRateExceeded`. The data position (mixer RNG, each loader's epoch/offset or stream
    position) is saved with every checkpoint, so a resumed run continues the same sample sequence.
    """

    def __init__(self, cfg, task, model, datasets, device: torch.device) -> None:
        self.cfg = cfg
        self.run_cfg = cfg.run_cfg
        self.task = task
        self.datasets = datasets
        self.device = device
        self.output_dir = str(self.run_cfg.output_dir)
        self.model = model.to(device)
        self._ddp: Optional[DistributedDataParallel] = None
        self.start_step = 0
        self.skipped_steps = 0
        self.loader: Optional[MixedLoader] = None
        self.skips: Optional[SkipTracker] = None

    # -- parts ---------------------------------------------------------------------------------
    def _wrapped(self):
        if dist_utils.is_dist() and any(p.requires_grad for p in self.model.parameters()):
            if self._ddp is None:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self._ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=False)
            return self._ddp
        return self.model

    def _optimizer(self) -> torch.optim.Optimizer:
        rc = self.run_cfg
        groups = self.model.param_groups(float(rc.weight_decay), float(rc.get("projector_lr_scale", 1.0)))
        n = sum(p.numel() for g in groups for p in g["params"])
        if n == 0:
            raise ValueError("nothing to train: every parameter is frozen by the model config")
        logger.info("trainable parameters: %s of %s", f"{n:,}", f"{self.model.num_parameters():,}")
        return torch.optim.AdamW(groups, lr=float(rc.init_lr), betas=(float(rc.beta1), float(rc.beta2)))

    # -- training ------------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        rc = self.run_cfg
        max_iters, accum = int(rc.max_iters), int(rc.accum_grad_iters)
        ratios = {name: float(self.cfg.datasets_cfg[name].get("sample_ratio", 1.0)) for name in self.datasets}
        loader = self.loader = build_train_loader(self.datasets, ratios, rc)
        skips = self.skips = self._skip_tracker(loader)
        optimizer = self._optimizer()
        sched = registry.get_lr_scheduler_class(rc.lr_sched).from_config(optimizer, rc)
        self._maybe_resume(optimizer, sched)
        net = self._wrapped()
        self.model.train()
        os.makedirs(self.output_dir, exist_ok=True)
        main = dist_utils.is_main_process()
        metrics_path = os.path.join(self.output_dir, "metrics.jsonl")
        if main and self.start_step == 0 and os.path.exists(metrics_path):
            # a fresh run into a used output_dir: its rows must not follow an earlier run's (a resumed
            # run does append, so the file reads as one run)
            os.remove(metrics_path)
        mlog = MetricsLogger(metrics_path)
        from tqdm import tqdm

        bar = tqdm(
            total=max_iters,
            initial=self.start_step,
            desc=str(rc.get("stage_name") or "train"),
            disable=not (main and rc.get("progress", True)),
            dynamic_ncols=True,
        )
        world = dist_utils.get_world_size()
        logger.info(
            "training steps %d..%d on %d process(es), device %s", self.start_step + 1, max_iters, world, self.device
        )
        t_start = time.time()
        window_t, window_samples, window_tokens = time.time(), 0, 0
        loss_ema: Optional[float] = None
        last: Dict[str, Any] = {}
        for step in range(self.start_step, max_iters):
            lr = sched.step(step)
            step_loss = 0.0
            for micro in range(accum):
                samples = next(loader)
                sync = micro == accum - 1 or not isinstance(net, DistributedDataParallel)
                ctx = net.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    out = self.task.train_step(net, samples)
                    loss = out["loss"] / accum
                    loss.backward()
                step_loss += float(loss.detach())
                bs = len(samples["answer"])
                window_samples += bs * world
                window_tokens += int(out.get("n_tokens", 0)) * world
            try:
                self._count_reads(loader, skips)
            except SkipRateExceeded as exc:
                logger.error("stopping at step %d: %s", step + 1, exc)
                mlog.log({"event": "stopped", "step": step + 1, "reason": str(exc), "data": skips.summary()})
                mlog.close()
                bar.close()
                raise
            if dist_utils.is_dist():
                # DDP has already averaged the gradients, so one rank's NaN reaches every rank; the
                # skip decision must be the same on all ranks, hence judged on the mean loss
                step_loss = float(dist_utils.all_reduce_mean(torch.tensor(step_loss, device=self.device)))
            grad_norm = None
            if math.isfinite(step_loss) and rc.get("grad_clip"):
                params = [p for p in self.model.parameters() if p.grad is not None]
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float(rc.grad_clip)))
            if not math.isfinite(step_loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
                self.skipped_steps += 1
                optimizer.zero_grad(set_to_none=True)
                logger.warning(
                    "step %d: non-finite loss %s / grad norm %s, step skipped (%d so far)",
                    step, step_loss, grad_norm, self.skipped_steps,
                )
                bar.update(1)
                continue
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_ema = step_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * step_loss
            done = step + 1
            if done % int(rc.log_freq) == 0 or done == max_iters:
                now = time.time()
                dt = max(1e-6, now - window_t)
                last = {
                    "step": done,
                    "loss": round(step_loss, 5),
                    "loss_ema": round(loss_ema, 5),
                    "lr": lr,
                    "samples_per_s": round(window_samples / dt, 2),
                    "tokens_per_s": round(window_tokens / dt, 1),
                    "dataset": loader.last_name,
                }
                if grad_norm is not None:
                    last["grad_norm"] = round(grad_norm, 4)
                last["skipped_samples"] = skips.total_skipped()
                mlog.log(last)
                postfix = dict(loss=f"{loss_ema:.3f}", lr=f"{lr:.2e}", sps=f"{last['samples_per_s']:.0f}")
                if last["skipped_samples"]:
                    postfix["skipped"] = last["skipped_samples"]
                bar.set_postfix(**postfix)
                window_t, window_samples, window_tokens = now, 0, 0
            bar.update(1)
            if rc.get("save_freq") and done % int(rc.save_freq) == 0 and done < max_iters:
                self._save(done, optimizer, sched)
        bar.close()
        ckpt = self._save(max_iters, optimizer, sched)
        summary = {
            "stage": rc.get("stage_name"),
            "steps": max_iters - self.start_step,
            "skipped_steps": self.skipped_steps,
            "train_seconds": round(time.time() - t_start, 2),
            "final_loss_ema": loss_ema,
            "checkpoint": ckpt,
            "skipped_samples": skips.total_skipped(),
            "data": skips.summary(),
        }
        for name, row in summary["data"].items():
            if row["skipped"] or row.get("malformed_records"):
                logger.warning(
                    "dataset %s: %d unreadable sample(s) skipped and replaced in %d reads (%.2f%%)%s",
                    name, row["skipped"], row["samples"] + row["skipped"], 100 * row["skip_rate"],
                    f", {row['malformed_records']} malformed annotation record(s) left out"
                    if row.get("malformed_records") else "",
                )
        mlog.log({"event": "train_end", **summary})
        mlog.close()
        return summary

    # -- data ----------------------------------------------------------------------------------
    def _skip_tracker(self, loader: MixedLoader) -> SkipTracker:
        rc = self.run_cfg
        tracker = SkipTracker(
            rc.get("max_skip_rate", 0.1), int(rc.get("skip_rate_min_reads", 200)), names=loader.names
        )
        for name, sub in loader.loaders.items():
            malformed = getattr(sub.dataset, "malformed_records", None)
            if malformed is not None and not sub.streaming:
                tracker.set_records(name, len(sub.dataset), malformed)
        tracker.check()  # a dataset whose annotations are mostly malformed stops before any step
        return tracker

    def _count_reads(self, loader: MixedLoader, tracker: SkipTracker) -> None:
        """Add this step's per-dataset read counts (summed over ranks) and stop past the skip rate."""
        counts = loader.take_read_counts()
        names = loader.names
        if dist_utils.is_dist():
            # every rank must see the same totals, or one rank would stop while the others wait in a collective
            import torch.distributed as dist

            t = torch.tensor([[counts[n]["samples"], counts[n]["skipped"]] for n in names], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            counts = {n: {"samples": int(t[i, 0]), "skipped": int(t[i, 1])} for i, n in enumerate(names)}
        for name in names:
            last = loader.loaders[name].last_error
            tracker.add(name, counts[name]["samples"], counts[name]["skipped"], last)
        tracker.check()

    def _save(self, step: int, optimizer, sched) -> Optional[str]:
        path = None
        extra: Dict[str, Any] = {"skipped_steps": self.skipped_steps}
        if self.loader is not None:
            extra[DATA_STATE] = gather_data_state(self.loader.state_dict())
        if self.skips is not None:
            extra["read_counts"] = self.skips.state_dict()
        if dist_utils.is_main_process():
            path = save_checkpoint(
                self.output_dir, step, self.model, optimizer, sched, self.cfg.to_yaml(), extra=extra
            )
            logger.info("saved checkpoint %s", path)
        dist_utils.barrier()
        return dist_utils.broadcast_object(path)

    def _maybe_resume(self, optimizer, sched) -> None:
        path = self.run_cfg.get("resume_ckpt_path")
        if not path:
            return
        if path == "auto":
            path = latest_checkpoint(self.output_dir)
            if path is None:
                logger.info("run.resume_ckpt_path=auto: no checkpoint in %s, starting fresh", self.output_dir)
                return
        state = load_training_state(path)
        self.model.load_checkpoint(path)
        if state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        self.start_step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        data = data_state_for_rank(state.get(DATA_STATE), dist_utils.get_rank(), dist_utils.get_world_size())
        if self.loader is not None:
            if data is None:
                logger.warning("checkpoint %s holds no data position: the datasets start from their beginning", path)
            else:
                self.loader.load_state_dict(data)
        if self.skips is not None and state.get("read_counts"):
            self.skips.load_state_dict(state["read_counts"])
        logger.info("resumed from %s at step %d", path, self.start_step)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> Dict[str, float]:
        splits = list(self.run_cfg.get("test_splits") or [])
        if not splits:
            return {}
        return self.task.evaluate(
            self.model, self.datasets, splits, self.run_cfg, self.output_dir, progress=self.run_cfg.get("progress", True)
        )
