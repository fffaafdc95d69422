"""The iteration-based runner: a fixed number of optimizer steps over mixed datasets."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional

import torch
from omegaconf import OmegaConf

from minigpt.common import dist_utils
from minigpt.common.mixing import mixing_weights
from minigpt.common.optims import adamw, peak_lr
from minigpt.common.precision import autocast, check_precision_device
from minigpt.common.registry import registry
from minigpt.datasets.datasets.base_dataset import SkipTracker
from minigpt.runners.checkpointing import clean_checkpoints
from minigpt.runners.data import MixedLoader, build_train_loader, skip_tracker
from minigpt.runners.distributed import ParallelModel
from minigpt.runners.length_grouping import token_lengths
from minigpt.runners.observability import BestTracker, SampleProbe, link_best
from minigpt.runners.run_guard import check_resume_matches
from minigpt.runners.step_guard import NonFiniteLossError, StepGuard, TrainingOutOfMemory
from minigpt.runners.step_loop import StepLoop, TrainLog
from minigpt.runners.train_state import TrainState, resume_path
from minigpt.runners.vision_cache import VisionFeatureCache

logger = logging.getLogger(__name__)



# the errors a run stops with are part of the runner's API (defined with the step guard)
__all__ = ["NonFiniteLossError", "RunnerIter", "TrainingOutOfMemory", "dataset_batch_sizes", "enable_grad_checkpointing"]


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


def dataset_batch_sizes(datasets_cfg, names) -> Dict[str, int]:
    """``datasets.<name>.batch_size`` of each training dataset that sets one (the others use ``run.batch_size_train``)."""
    sizes = {name: datasets_cfg[name].get("batch_size") for name in names if name in datasets_cfg}
    return {name: int(size) for name, size in sizes.items() if size is not None}


class RunnerIter:
    """Train for ``run.max_iters`` optimizer steps, checkpoint, then evaluate ``run.test_splits``.

    YAML name ``runner_iter``. Gradient accumulation, grad clipping, AdamW with per-group lr
    scales, DDP when launched by torchrun, a tqdm bar (loss, lr, samples/s, ETA) on rank 0 and a
    ``metrics.jsonl`` row every ``run.log_freq`` steps. The parts: the step loop
    (:mod:`~minigpt.runners.step_loop`), what a checkpoint holds and a resume restores
    (:mod:`~minigpt.runners.train_state`), the fault checks (:mod:`~minigpt.runners.step_guard`) and
    DDP/FSDP (:mod:`~minigpt.runners.distributed`); this class puts them together and adds the
    periodic work: sample generation, evaluation and the best checkpoint.

    Data: each step's micro-batches come from the dataset the mixer draws, at that dataset's
    ``batch_size`` (or ``run.batch_size_train``); unreadable samples are replaced and counted per dataset (``skipped_samples`` in the
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
        rc = self.run_cfg
        precision = str(rc.precision)
        check_precision_device(precision, device)
        self.precision = precision
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.parallel = ParallelModel(self.model, device, str(rc.get("distributed", "ddp")))
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
        self.best_checkpoint: Optional[str] = None
        # set by train(): the resumable state, the running report and the sample probe
        self.state: Optional[TrainState] = None
        self.log: Optional[TrainLog] = None
        self.probe: Optional[SampleProbe] = None

    # -- parts ---------------------------------------------------------------------------------
    def _autocast(self):
        """The run's precision on the run's device (one owner: :mod:`minigpt.common.precision`)."""
        return autocast(self.precision, self.device)

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        rc = self.run_cfg
        groups = self.model.param_groups(float(rc.weight_decay), float(rc.get("projector_lr_scale", 1.0)))
        n = sum(p.numel() for g in groups for p in g["params"])
        if n == 0:
            raise ValueError("nothing to train: every parameter is frozen by the model config")
        logger.info("trainable parameters: %s of %s", f"{n:,}", f"{self.model.num_parameters():,}")
        return adamw(groups, lr=lr, betas=(float(rc.beta1), float(rc.beta2)))

    def _build_data(self) -> None:
        """The training stream (``self.loader``), its skip counts and the vision feature cache."""
        rc = self.run_cfg
        # sample_ratio, or samples_per_epoch sizes ("20M") as the weights (minigpt/common/mixing.py)
        training = [n for n, splits in self.datasets.items() if any(s in splits for s in rc.train_splits)]
        ratios = mixing_weights(self.cfg.datasets_cfg, training)
        # run.vision_feature_cache: the frozen image path's output stored per image (minigpt/runners/vision_cache.py)
        cache = self.vision_cache = VisionFeatureCache.from_run_config(rc, self.model, self.output_dir, self._autocast)
        tokenizer = getattr(self.model, "tokenizer", None)
        sizes = dataset_batch_sizes(self.cfg.datasets_cfg, self.datasets)
        if sizes:
            logger.info("batch size per dataset: %s (others: run.batch_size_train=%s)",
                        ", ".join(f"{n}={b}" for n, b in sizes.items()), rc.batch_size_train)
        self.loader = build_train_loader(
            self.datasets, ratios, rc, attach=cache.attach if cache is not None else None,
            length_of=token_lengths(tokenizer) if tokenizer is not None else None, batch_sizes=sizes,
        )
        self.skips = skip_tracker(self.loader, rc)

    # -- training ------------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        rc = self.run_cfg
        max_iters = self._max_iters()
        self._build_data()
        cache = self.vision_cache
        if dist_utils.is_main_process():
            clean_checkpoints(self.output_dir)  # what a crash left: an interrupted re-save, temporary folders
        dist_utils.barrier()
        resume = resume_path(rc, self.output_dir)
        if resume:
            check_resume_matches(self.cfg, resume)
            self.model.load_checkpoint(resume)  # before sharding: FSDP then shards the loaded weights
        self.parallel.shard()
        lr, how = peak_lr(rc, dist_utils.get_world_size())  # run.lr_rule
        logger.info("peak %s", how)
        optimizer = self._optimizer(lr)
        sched_cfg = OmegaConf.merge(rc, {"init_lr": lr}) if lr != float(rc.init_lr) else rc
        sched = registry.get_lr_scheduler_class(rc.lr_sched).from_config(optimizer, sched_cfg)
        guard = StepGuard(rc, self.model, self.scaler)
        state = self.state = TrainState(self.cfg, rc, self.parallel, optimizer, sched, self.scaler, guard,
                                        self.loader, self.skips, self.best, cache)
        if resume:
            state.restore(resume)
        net = self.parallel.wrapped()
        self.model.train()
        if cache is not None:
            cache.open()  # fingerprints the frozen weights as loaded (model.ckpt, resume) before the first batch
        os.makedirs(self.output_dir, exist_ok=True)
        config = self._config_dict() if rc.get("wandb_project") else None
        self.probe = SampleProbe(self.datasets, rc, self.output_dir) if int(rc.get("sample_every") or 0) > 0 else None
        log = self.log = TrainLog(rc, self.output_dir, state.start_step, max_iters, config)
        t_start = time.time()
        try:
            StepLoop(self, net, state, log).run(max_iters)
        except BaseException:
            log.close()
            raise
        log.bar.close()
        # before the final checkpoint, so that it records the final evaluation's best; when that
        # evaluation (or runner_epoch's epoch end) already wrote it, it is not written twice
        self.on_step_end(max_iters)
        ckpt = state.save_once(max_iters)
        if cache is not None:
            cache.flush()
            logger.info("vision feature cache: %s", cache.stats())
        summary = {
            "stage": rc.get("stage_name"),
            "steps": max_iters - state.start_step,
            "skipped_steps": guard.skipped_steps,
            "train_seconds": round(time.time() - t_start, 2),
            "final_loss_ema": state.loss_ema,
            "checkpoint": ckpt,
            "skipped_samples": self.skips.total_skipped(),
            "data": self.skips.summary(),
        }
        if self.best is not None:
            summary.update(best_checkpoint=self.best_checkpoint, best_step=self.best.step, best_value=self.best.value)
        if cache is not None:
            summary["vision_feature_cache"] = cache.stats()
        self._warn_skipped(summary["data"])
        log.mlog.log({"event": "train_end", **summary})
        log.close()
        return summary

    def _max_iters(self) -> int:
        """Optimizer steps of this stage (``runner_epoch`` derives them from ``run.max_epoch``)."""
        return int(self.run_cfg.max_iters)

    def _config_dict(self) -> Dict[str, Any]:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(self.cfg.config, resolve=True)  # type: ignore[return-value]

    @staticmethod
    def _warn_skipped(data: Dict[str, Dict[str, Any]]) -> None:
        for name, row in data.items():
            if row["skipped"] or row.get("malformed_records"):
                logger.warning(
                    "dataset %s: %d unreadable sample(s) skipped and replaced in %d reads (%.2f%%)%s",
                    name, row["skipped"], row["samples"] + row["skipped"], 100 * row["skip_rate"],
                    f", {row['malformed_records']} malformed annotation record(s) left out"
                    if row.get("malformed_records") else "",
                )

    # -- periodic work ---------------------------------------------------------------------------
    def on_step_end(self, done: int) -> None:
        """Sample generation (``run.sample_every``) and evaluation (``run.eval_every``) after step ``done``."""
        rc = self.run_cfg
        every = int(rc.get("sample_every") or 0)
        if self.probe is not None and every > 0 and done % every == 0:
            for row in self.probe.run(self.model, done, self.device):
                self.log.mlog.log({"event": "sample", **row})
        every = int(rc.get("eval_every") or 0)
        if every > 0 and done % every == 0 and list(rc.get("test_splits") or []):
            self._evaluate_during_training(done)

    def _evaluate_during_training(self, done: int) -> None:
        rc, mlog = self.run_cfg, self.log.mlog
        devices = [self.device] if self.device.type == "cuda" else []
        # the final step's predictions go where the end-of-stage evaluation puts them (it reuses these results)
        out_dir = (self.output_dir if done == self._max_iters()
                   else os.path.join(self.output_dir, "eval", f"step_{done:06d}"))
        # the RNG streams are put back afterwards, so evaluating does not change the training run
        with torch.random.fork_rng(devices=devices):
            with self._autocast():
                results = self.task.evaluate(self.model, self.datasets, list(rc.test_splits), rc, out_dir, progress=False)
        self._last_eval = (done, results)
        row: Dict[str, Any] = {"event": "eval", "step": done, **results}
        improved = False
        if self.best is not None:
            improved = self.best.update(done, results)
            row.update(best_metric=self.best.resolve(results), best_step=self.best.step, best_value=self.best.value)
        mlog.log(row)
        self.log.sinks.log(done, results, "eval")
        logger.info("evaluation at step %d: %s", done, ", ".join(f"{k}={v}" for k, v in results.items()))
        if not improved:
            return
        ckpt = self.state.save_once(done)
        path = None
        if dist_utils.is_main_process():
            path = link_best(self.output_dir, ckpt)
            logger.info("new best %s=%s at step %d: %s", row["best_metric"], self.best.value, done, path)
            mlog.log({"event": "best_checkpoint", "step": done, "metric": row["best_metric"],
                      "value": self.best.value, "path": path, "checkpoint": ckpt})
        dist_utils.barrier()
        self.best_checkpoint = dist_utils.broadcast_object(path)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> Dict[str, float]:
        splits = list(self.run_cfg.get("test_splits") or [])
        if not splits:
            return {}
        if self._last_eval is not None and self._last_eval[0] == self._max_iters():
            # the final step was just evaluated during training: the same weights, the same results
            return dict(self._last_eval[1])
        with self._autocast():
            return self.task.evaluate(
                self.model, self.datasets, splits, self.run_cfg, self.output_dir, progress=self.run_cfg.get("progress", True)
            )
