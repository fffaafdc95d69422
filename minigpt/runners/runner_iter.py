"""The iteration-based runner: a fixed number of optimizer steps over mixed datasets."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from minigpt.common import dist_utils
from minigpt.common.io import SkipRateExceeded
from minigpt.common.logger import MetricsLogger
from minigpt.common.registry import registry
from minigpt.datasets.datasets.base_dataset import SkipTracker
from minigpt.runners.checkpointing import (
    DATA_STATE,
    RNG_RANKS,
    data_state_for_rank,
    gather_data_state,
    gather_rng_state,
    latest_checkpoint,
    load_training_state,
    pause_for_test,
    restore_rng_state,
    save_checkpoint,
)
from minigpt.runners.data import MixedLoader, build_train_loader
from minigpt.runners.length_grouping import token_lengths
from minigpt.runners.observability import BestTracker, SampleProbe, ScalarSinks, link_best, memory_mb
from minigpt.runners.vision_cache import VisionFeatureCache

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """Raised when ``run.max_consecutive_nonfinite`` optimizer steps in a row had a non-finite loss or gradient."""


class TrainingOutOfMemory(RuntimeError):
    """A CUDA out-of-memory error during a training step, with advice on what to change."""


def oom_advice(run_cfg, step: int, exc: BaseException) -> str:
    """The message of :class:`TrainingOutOfMemory`: where it happened and the settings that cut memory."""
    rc = run_cfg
    tips = [f"lower run.batch_size_train (now {rc.batch_size_train}) and raise run.accum_grad_iters "
            f"(now {rc.accum_grad_iters}) to keep the same global batch"]
    if not rc.get("grad_checkpointing"):
        tips.append("set run.grad_checkpointing=true (recompute activations in the backward pass)")
    if str(rc.get("precision", "fp32")) == "fp32":
        tips.append("set run.precision=bf16 (or fp16 on GPUs without bf16)")
    if str(rc.get("distributed", "ddp")) != "fsdp" and dist_utils.get_world_size() > 1:
        tips.append("set run.distributed=fsdp to shard parameters and optimizer state across GPUs")
    return (f"CUDA out of memory at step {step}: " + "; ".join(tips) + f". ({type(exc).__name__}: "
            + (str(exc).splitlines() or [""])[0] + ")")


def enable_grad_checkpointing(model: torch.nn.Module) -> List[str]:
    """Turn on activation checkpointing in every part that supports it; return those parts' names.

    transformers models (``gradient_checkpointing_enable``) and timm ViTs (``set_grad_checkpointing``).
    """
    done: List[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(d + ".") for d in done):
            continue
        if getattr(module, "supports_gradient_checkpointing", False) and hasattr(module, "gradient_checkpointing_enable"):
            # non-reentrant: works when the inputs (embeddings from the projector) need no grad of their own
            if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5 name
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if getattr(module, "config", None) is not None:
                module.config.use_cache = False  # a KV cache cannot be kept while recomputing
            done.append(name)
        elif hasattr(module, "set_grad_checkpointing") and module is not model:
            module.set_grad_checkpointing(True)
            done.append(name)
    return done


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

    Faults: a step whose loss or gradient is not finite is skipped and counted;
    ``run.max_consecutive_nonfinite`` of them in a row raise :class:`NonFiniteLossError` naming the
    step and the batch's sample ids. CUDA out-of-memory raises :class:`TrainingOutOfMemory` with advice.
    Precision: ``run.precision`` bf16/fp16 autocast (fp16 with a GradScaler, CUDA only);
    ``run.grad_checkpointing``; ``run.distributed`` ddp or fsdp (torch's ``fully_shard``).
    Speed: ``run.vision_feature_cache`` (frozen image-path outputs stored per image,
    :mod:`minigpt.runners.vision_cache`) and ``run.group_by_length``
    (:mod:`minigpt.runners.length_grouping`).
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
        self.consecutive_nonfinite = 0
        self.loss_ema: Optional[float] = None
        rc = self.run_cfg
        precision = str(rc.get("precision", "fp32"))
        if precision not in PRECISIONS:
            raise ValueError(f"run.precision={precision!r}: expected one of {sorted(PRECISIONS)}")
        if precision == "fp16" and device.type != "cuda":
            # fp16 needs loss scaling, and CPU autocast gains nothing from fp16; silently training in
            # another precision than asked would make runs irreproducible, so this is an error
            raise ValueError(
                f"run.precision=fp16 needs a CUDA device (this run is on {device.type}); use run.precision=bf16 "
                "on CPU, or fp32"
            )
        self.amp_dtype = PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.distributed = str(rc.get("distributed", "ddp"))
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"run.distributed={self.distributed!r}: expected ddp or fsdp")
        if rc.get("grad_checkpointing"):
            parts = enable_grad_checkpointing(self.model)
            if parts:
                logger.info("gradient checkpointing on: %s", ", ".join(p or "<model>" for p in parts))
            else:
                logger.warning("run.grad_checkpointing=true but no part of this model supports it")
        self.loader: Optional[MixedLoader] = None
        self.skips: Optional[SkipTracker] = None
        self.vision_cache: Optional[VisionFeatureCache] = None
        # evaluation during training (run.eval_every) and the best checkpoint (run.best_metric)
        self.best: Optional[BestTracker] = (
            BestTracker(str(rc.best_metric), str(rc.get("best_mode", "max"))) if rc.get("best_metric") else None
        )
        self._last_eval: Optional[tuple] = None  # (step, results) of the latest evaluation during training
        self._saved_step: Optional[int] = None
        self.best_checkpoint: Optional[str] = None

    # -- parts ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _wrapped(self):
        if self.distributed == "fsdp" and dist_utils.is_dist():
            return self.model  # sharded in place by _shard_fsdp before the optimizer is built
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
        max_iters, accum = self._max_iters(), int(rc.accum_grad_iters)
        ratios = {name: float(self.cfg.datasets_cfg[name].get("sample_ratio", 1.0)) for name in self.datasets}
        # run.vision_feature_cache: the frozen image path's output stored per image (minigpt/runners/vision_cache.py)
        cache = self.vision_cache = VisionFeatureCache.from_run_config(rc, self.model, self.output_dir, self._autocast)
        tokenizer = getattr(self.model, "tokenizer", None)
        loader = self.loader = build_train_loader(
            self.datasets, ratios, rc, attach=cache.attach if cache is not None else None,
            length_of=token_lengths(tokenizer) if tokenizer is not None else None,
        )
        skips = self.skips = self._skip_tracker(loader)
        resume_path = self._resume_path()
        if resume_path:
            self.model.load_checkpoint(resume_path)  # before sharding: FSDP then shards the loaded weights
        if self.distributed == "fsdp" and dist_utils.is_dist():
            self._shard_fsdp()
        optimizer = self._optimizer()
        sched = registry.get_lr_scheduler_class(rc.lr_sched).from_config(optimizer, rc)
        if resume_path:
            self._resume(resume_path, optimizer, sched)
        net = self._wrapped()
        self.model.train()
        if cache is not None:
            cache.open()  # fingerprints the frozen weights as loaded (model.ckpt, resume) before the first batch
        os.makedirs(self.output_dir, exist_ok=True)
        main = dist_utils.is_main_process()
        metrics_path = os.path.join(self.output_dir, "metrics.jsonl")
        if main and self.start_step == 0 and os.path.exists(metrics_path):
            # a fresh run into a used output_dir: its rows must not follow an earlier run's (a resumed
            # run does append, so the file reads as one run)
            os.remove(metrics_path)
        samples_path = os.path.join(self.output_dir, "samples.jsonl")
        if main and self.start_step == 0 and os.path.exists(samples_path):
            os.remove(samples_path)
        sinks = ScalarSinks(rc, self.output_dir, self._config_dict() if rc.get("wandb_project") else None)
        probe = SampleProbe(self.datasets, rc, self.output_dir) if int(rc.get("sample_every") or 0) > 0 else None
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
        loss_ema = self.loss_ema
        last: Dict[str, Any] = {}

        def stop() -> None:
            mlog.close()
            sinks.close()
            bar.close()

        for step in range(self.start_step, max_iters):
            lr = sched.step(step)
            step_loss = 0.0
            sample_ids: List[str] = []
            try:
                for micro in range(accum):
                    samples = next(loader)
                    if cache is not None:
                        samples = cache.apply(samples)  # cached features in place of pixels
                    sample_ids.extend(str(i) for i in samples.get("sample_id") or ())
                    sync = micro == accum - 1 or not isinstance(net, DistributedDataParallel)
                    ctx = net.no_sync() if not sync else contextlib.nullcontext()
                    with ctx:
                        with self._autocast():
                            out = self.task.train_step(net, samples)
                        loss = out["loss"].float() / accum
                        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                    step_loss += float(loss.detach())
                    # every sample has an id; stage-0 label batches have no "answer"
                    bs = len(samples.get("sample_id") or samples["answer"])
                    window_samples += bs * world
                    window_tokens += int(out.get("n_tokens", 0)) * world
            except torch.cuda.OutOfMemoryError as exc:
                message = oom_advice(rc, step + 1, exc)
                logger.error(message)
                mlog.log({"event": "stopped", "step": step + 1, "reason": message})
                stop()
                raise TrainingOutOfMemory(message) from exc
            try:
                self._count_reads(loader, skips)
            except SkipRateExceeded as exc:
                logger.error("stopping at step %d: %s", step + 1, exc)
                mlog.log({"event": "stopped", "step": step + 1, "reason": str(exc), "data": skips.summary()})
                stop()
                raise
            if dist_utils.is_dist():
                # DDP has already averaged the gradients, so one rank's NaN reaches every rank; the
                # skip decision must be the same on all ranks, hence judged on the mean loss
                step_loss = float(dist_utils.all_reduce_mean(torch.tensor(step_loss, device=self.device)))
            pause_for_test("step", step + 1)
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            grad_norm = self._clip_grads()
            if not math.isfinite(step_loss) or not math.isfinite(grad_norm):
                self.skipped_steps += 1
                # with fp16 an overflowing gradient is the GradScaler's normal calibration (it lowers
                # the scale), so only a non-finite loss counts towards the stop there
                if self.scaler is None or not math.isfinite(step_loss):
                    self.consecutive_nonfinite += 1
                if self.scaler is not None:
                    self.scaler.update()
                optimizer.zero_grad(set_to_none=True)
                logger.warning(
                    "step %d: non-finite loss %s / grad norm %s, step skipped (%d so far, %d in a row)",
                    step + 1, step_loss, grad_norm, self.skipped_steps, self.consecutive_nonfinite,
                )
                mlog.log({"event": "skipped_step", "step": step + 1, "loss": str(step_loss),
                          "grad_norm": str(grad_norm), "sample_ids": sample_ids})
                limit = rc.get("max_consecutive_nonfinite")
                if limit and self.consecutive_nonfinite >= int(limit):
                    ids = self._all_sample_ids(sample_ids)
                    message = (
                        f"iteration {step + 1}: {self.consecutive_nonfinite} optimizer steps in a row had a "
                        f"non-finite loss or gradient (run.max_consecutive_nonfinite={limit}); loss {step_loss}, "
                        f"grad norm {grad_norm}; sample ids of this batch: {', '.join(ids)}"
                    )
                    logger.error(message)
                    mlog.log({"event": "stopped", "step": step + 1, "reason": message, "sample_ids": ids})
                    stop()
                    raise NonFiniteLossError(message)
                bar.update(1)
                continue
            self.consecutive_nonfinite = 0
            if self.scaler is not None:
                self.scaler.step(optimizer)
                self.scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_ema = step_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * step_loss
            self.loss_ema = loss_ema
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
                last["grad_norm"] = round(grad_norm, 4)
                if self.scaler is not None:
                    last["loss_scale"] = float(self.scaler.get_scale())
                last["skipped_samples"] = skips.total_skipped()
                last["memory_mb"] = memory_mb(self.device)
                mlog.log(last)
                sinks.log(done, last, "train")
                postfix = dict(loss=f"{loss_ema:.3f}", lr=f"{lr:.2e}", sps=f"{last['samples_per_s']:.0f}",
                               tps=f"{last['tokens_per_s']:.0f}")
                if last["skipped_samples"]:
                    postfix["skipped"] = last["skipped_samples"]
                bar.set_postfix(**postfix)
                window_t, window_samples, window_tokens = now, 0, 0
            bar.update(1)
            if rc.get("save_freq") and done % int(rc.save_freq) == 0 and done < max_iters:
                self._save(done, optimizer, sched)
            if done < max_iters:
                self._on_step_end(done, optimizer, sched, mlog, sinks, probe)
        bar.close()
        # before the final checkpoint, so that it records the final evaluation's best; when that
        # evaluation (or runner_epoch's epoch end) already wrote it, it is not written twice
        self._on_step_end(max_iters, optimizer, sched, mlog, sinks, probe)
        ckpt = self._saved_path(max_iters) or self._save(max_iters, optimizer, sched)
        if cache is not None:
            cache.flush()
            logger.info("vision feature cache: %s", cache.stats())
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
        if self.best is not None:
            summary.update(best_checkpoint=self.best_checkpoint, best_step=self.best.step, best_value=self.best.value)
        if cache is not None:
            summary["vision_feature_cache"] = cache.stats()
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
        sinks.close()
        return summary

    def _max_iters(self) -> int:
        """Optimizer steps of this stage (``runner_epoch`` derives them from ``run.max_epoch``)."""
        return int(self.run_cfg.max_iters)

    def _config_dict(self) -> Dict[str, Any]:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self.cfg.config, resolve=True)  # type: ignore[return-value]

    # -- periodic work ---------------------------------------------------------------------------
    def _on_step_end(self, done: int, optimizer, sched, mlog: MetricsLogger, sinks: ScalarSinks,
                     probe: Optional[SampleProbe]) -> None:
        """Sample generation (``run.sample_every``) and evaluation (``run.eval_every``) after step ``done``."""
        rc = self.run_cfg
        every = int(rc.get("sample_every") or 0)
        if probe is not None and every > 0 and done % every == 0:
            for row in probe.run(self.model, done, self.device):
                mlog.log({"event": "sample", **row})
        every = int(rc.get("eval_every") or 0)
        if every > 0 and done % every == 0 and list(rc.get("test_splits") or []):
            self._evaluate_during_training(done, optimizer, sched, mlog, sinks)

    def _evaluate_during_training(self, done: int, optimizer, sched, mlog: MetricsLogger, sinks: ScalarSinks) -> None:
        rc = self.run_cfg
        devices = [self.device] if self.device.type == "cuda" else []
        # the final step's predictions go where the end-of-stage evaluation puts them (it reuses these results)
        out_dir = (self.output_dir if done == self._max_iters()
                   else os.path.join(self.output_dir, "eval", f"step_{done:06d}"))
        # the RNG streams are put back afterwards, so evaluating does not change the training run
        with torch.random.fork_rng(devices=devices):
            results = self.task.evaluate(self.model, self.datasets, list(rc.test_splits), rc, out_dir, progress=False)
        self._last_eval = (done, results)
        row: Dict[str, Any] = {"event": "eval", "step": done, **results}
        improved = False
        if self.best is not None:
            improved = self.best.update(done, results)
            row.update(best_metric=self.best.resolve(results), best_step=self.best.step, best_value=self.best.value)
        mlog.log(row)
        sinks.log(done, results, "eval")
        logger.info("evaluation at step %d: %s", done, ", ".join(f"{k}={v}" for k, v in results.items()))
        if not improved:
            return
        ckpt = self._saved_path(done)
        if ckpt is None:
            ckpt = self._save(done, optimizer, sched)
        path = None
        if dist_utils.is_main_process():
            path = link_best(self.output_dir, ckpt)
            logger.info("new best %s=%s at step %d: %s", row["best_metric"], self.best.value, done, path)
            mlog.log({"event": "best_checkpoint", "step": done, "metric": row["best_metric"],
                      "value": self.best.value, "path": path, "checkpoint": ckpt})
        dist_utils.barrier()
        self.best_checkpoint = dist_utils.broadcast_object(path)

    def _saved_path(self, step: int) -> Optional[str]:
        if self._saved_step != step:
            return None
        from minigpt.runners.checkpointing import CKPT_DIR

        return os.path.join(self.output_dir, CKPT_DIR, f"step_{step:06d}")

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

    def _clip_grads(self) -> float:
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

    def _all_sample_ids(self, ids: List[str]) -> List[str]:
        if not dist_utils.is_dist():
            return ids
        import torch.distributed as dist

        parts: list = [None] * dist_utils.get_world_size()
        dist.all_gather_object(parts, ids)
        return [i for part in parts for i in part]

    def _shard_fsdp(self) -> None:
        """Shard the model with torch's FSDP2 ``fully_shard``: each transformer block, then the root."""
        import torch.distributed as dist
        from torch.distributed.fsdp import fully_shard

        # each rank built its model after seeding with seed + rank; DDP broadcasts rank 0's weights
        # when it wraps the model, fully_shard does not, so do it here (also carries resumed weights)
        with torch.no_grad():
            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, src=0)
        blocks = [m for m in self.model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]
        for block in blocks:
            fully_shard(block)
        fully_shard(self.model)
        logger.info("FSDP: %d block(s) sharded across %d processes", len(blocks), dist_utils.get_world_size())

    def _full_states(self, optimizer):
        """FSDP: the full trained tensors and optimizer state, gathered on every rank (a collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        from minigpt.models.weights.checkpoint import trained_state_dict

        trained = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
                   for k, v in trained_state_dict(self.model).items()}
        optim = get_optimizer_state_dict(
            self.model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return trained, optim

    def _save(self, step: int, optimizer, sched) -> Optional[str]:
        path = None
        if self.vision_cache is not None:
            # the features computed so far go to disk with the checkpoint, so a run resumed from it finds them
            self.vision_cache.flush()
        extra: Dict[str, Any] = {
            "skipped_steps": self.skipped_steps,
            "consecutive_nonfinite": self.consecutive_nonfinite,
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
        trained = optim = None
        if self.distributed == "fsdp" and dist_utils.is_dist():
            trained, optim = self._full_states(optimizer)
        if dist_utils.is_main_process():
            path = save_checkpoint(
                self.output_dir, step, self.model, optimizer, sched, self.cfg.to_yaml(), extra=extra,
                keep_last=self.run_cfg.get("keep_last"), trained_state=trained, optimizer_state=optim,
            )
            logger.info("saved checkpoint %s", path)
        dist_utils.barrier()
        self._saved_step = step
        return dist_utils.broadcast_object(path)

    def _resume_path(self) -> Optional[str]:
        path = self.run_cfg.get("resume_ckpt_path")
        if not path:
            return None
        if path == "auto":
            path = latest_checkpoint(self.output_dir)
            if path is None:
                logger.info("run.resume_ckpt_path=auto: no checkpoint in %s, starting fresh", self.output_dir)
                return None
        return str(path)

    def _resume(self, path: str, optimizer, sched) -> None:
        """Restore optimizer, scheduler, scaler, RNG, data position and counters (weights are already loaded)."""
        state = load_training_state(path)
        if state.get("optimizer") is not None:
            if self.distributed == "fsdp" and dist_utils.is_dist():
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(
                    self.model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True)
                )
            else:
                optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        ranks = state.get(RNG_RANKS)
        if ranks and len(ranks) == world:
            restore_rng_state(ranks[rank])
        else:
            if ranks:
                logger.warning("checkpoint %s was written by %d process(es), this run has %d: every rank "
                               "restores rank 0's RNG state", path, len(ranks), world)
            restore_rng_state(state["rng"])
        self.start_step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_nonfinite = int(state.get("consecutive_nonfinite", 0))
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

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> Dict[str, float]:
        splits = list(self.run_cfg.get("test_splits") or [])
        if not splits:
            return {}
        if self._last_eval is not None and self._last_eval[0] == self._max_iters():
            # the final step was just evaluated during training: the same weights, the same results
            return dict(self._last_eval[1])
        return self.task.evaluate(
            self.model, self.datasets, splits, self.run_cfg, self.output_dir, progress=self.run_cfg.get("progress", True)
        )
