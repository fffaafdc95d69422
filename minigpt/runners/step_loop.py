"""The optimizer-step loop of a training stage, and the running report it writes.

One step: the lr for the step, ``run.accum_grad_iters`` micro-batches forward and backward (DDP
syncs gradients on the last), the per-dataset read counts (skip-rate check), the loss averaged
over ranks, grad clipping, the :class:`~minigpt.runners.step_guard.StepGuard`'s verdict, the
optimizer step, a ``metrics.jsonl`` row every ``run.log_freq`` steps, the runner's periodic work
(samples, evaluation, epoch end) and then a checkpoint every ``run.save_freq`` steps (after the
evaluation, so the checkpoint records that step's best).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch

from minigpt.common import dist_utils
from minigpt.common.io import SkipRateExceeded, write_atomically
from minigpt.common.logger import MetricsLogger
from minigpt.runners.data import count_reads
from minigpt.runners.distributed import ParallelModel
from minigpt.runners.observability import ScalarSinks, memory_mb
from minigpt.runners.train_state import TrainState

if TYPE_CHECKING:
    from minigpt.runners.runner_iter import RunnerIter

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def cut_rows_after(path: str, step: int) -> int:
    """Rewrite the JSON-lines file ``path`` without the rows from the first one past ``step`` on; return how many went.

    Everything after that row goes too (a killed run's ``train_end`` has no step), and so does a
    line a kill cut short. The file is replaced atomically.
    """
    with open(path) as fh:
        lines = fh.readlines()
    kept: List[str] = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            break  # a line a kill cut short: nothing after it was written whole
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step:
            break
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return 0

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.writelines(kept)

    write_atomically(path, write)
    logger.info("%s: removed %d row(s) past the resumed step %d", path, len(lines) - len(kept), step)
    return len(lines) - len(kept)


class TrainLog:
    """Where a stage reports as it trains: ``metrics.jsonl``, TensorBoard/wandb and the tqdm bar (rank 0).

    A fresh run (``start_step`` 0) into a used ``output_dir`` starts new ``metrics.jsonl`` and
    ``samples.jsonl`` files; a resumed run first cuts them back to the resumed step (the rows a
    killed run wrote past its last checkpoint go, so each step appears once) and appends a
    ``{"event": "resumed", "step": N}`` row. Also keeps the throughput window (samples and tokens
    over all ranks since the last row).
    """

    def __init__(self, run_cfg, output_dir: str, start_step: int, max_iters: int,
                 config: Optional[Dict[str, Any]]) -> None:
        from minigpt.runners.observability import SAMPLES_FILE

        main = dist_utils.is_main_process()
        metrics_path = os.path.join(output_dir, METRICS_FILE)
        for path in (metrics_path, os.path.join(output_dir, SAMPLES_FILE)):
            if main and start_step == 0 and os.path.exists(path):
                os.remove(path)
            elif main and os.path.exists(path):
                cut_rows_after(path, start_step)
        self.sinks = ScalarSinks(run_cfg, output_dir, config)
        self.mlog = MetricsLogger(metrics_path)
        if start_step > 0:
            self.mlog.log({"event": "resumed", "step": start_step})
        from tqdm import tqdm

        self.bar = tqdm(
            total=max_iters,
            initial=start_step,
            desc=str(run_cfg.progress_label or run_cfg.stage_name),
            disable=not (main and run_cfg.get("progress", True)),
            dynamic_ncols=True,
        )
        self.window_t, self.window_samples, self.window_tokens = time.time(), 0, 0

    def count(self, samples: int, tokens: int) -> None:
        """Add one micro-batch (already multiplied by the world size) to the throughput window."""
        self.window_samples += samples
        self.window_tokens += tokens

    def throughput(self) -> Dict[str, float]:
        """Samples and tokens per second since the last call (or the start); starts a new window."""
        now = time.time()
        dt = max(1e-6, now - self.window_t)
        out = {"samples_per_s": round(self.window_samples / dt, 2), "tokens_per_s": round(self.window_tokens / dt, 1)}
        self.window_t, self.window_samples, self.window_tokens = now, 0, 0
        return out

    def close(self) -> None:
        self.mlog.close()
        self.sinks.close()
        self.bar.close()


class StepLoop:
    """Runs optimizer steps ``state.start_step + 1 .. max_iters`` of ``runner``'s stage.

    ``net`` is the module a step runs (DDP wrapper or the model); ``state`` holds the loss EMA and
    writes the checkpoints; ``guard`` judges each step. Errors that stop the run (out of memory,
    skip rate, non-finite steps) leave a ``stopped`` row and propagate.
    """

    def __init__(self, runner: "RunnerIter", net: torch.nn.Module, state: TrainState, log: TrainLog) -> None:
        self.runner, self.net, self.state, self.log = runner, net, state, log
        self.optimizer, self.sched, self.guard = state.optimizer, state.sched, state.guard
        self.run_cfg = runner.run_cfg
        self.world = dist_utils.get_world_size()
        self.loss_parts: Dict[str, float] = {}

    def run(self, max_iters: int) -> None:
        logger.info("training steps %d..%d on %d process(es), device %s",
                    self.state.start_step + 1, max_iters, self.world, self.runner.device)
        for step in range(self.state.start_step, max_iters):
            self.step(step, max_iters)

    def step(self, step: int, max_iters: int) -> None:
        """Optimizer step ``step + 1``: accumulate, judge, apply, report, then the periodic work."""
        rc, scaler = self.run_cfg, self.runner.scaler
        lr = self.sched.step(step)
        step_loss, sample_ids = self.accumulate(step)
        self._count_reads(step + 1)
        if dist_utils.is_dist():
            # DDP has already averaged the gradients, so one rank's NaN reaches every rank; the
            # skip decision must be the same on all ranks, hence judged on the mean loss
            step_loss = float(dist_utils.all_reduce_mean(torch.tensor(step_loss, device=self.runner.device)))
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grad_norm = self.guard.clip_grads()
        if not self.guard.admit(step + 1, step_loss, grad_norm, sample_ids, self.log.mlog):
            if scaler is not None:
                scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.log.bar.update(1)
            return
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        ema = self.state.loss_ema
        self.state.loss_ema = step_loss if ema is None else 0.9 * ema + 0.1 * step_loss
        done = step + 1
        if done % int(rc.log_freq) == 0 or done == max_iters:
            self._report(done, lr, step_loss, grad_norm)
        self.log.bar.update(1)
        if done < max_iters:
            # evaluation first: a checkpoint of this step (the best one, or save_freq's) then records its result
            self.runner.on_step_end(done)
        if rc.get("save_freq") and done % int(rc.save_freq) == 0 and done < max_iters:
            self.state.save_once(done)

    def accumulate(self, step: int) -> Tuple[float, List[str]]:
        """Forward and backward ``run.accum_grad_iters`` micro-batches; their summed scaled loss and sample ids."""
        runner, accum = self.runner, int(self.run_cfg.accum_grad_iters)
        cache, scaler = runner.vision_cache, runner.scaler
        step_loss = 0.0
        sample_ids: List[str] = []
        # the loss's parts the model reports (lm_loss, each output head's <name>_loss), logged beside it
        self.loss_parts = {}
        try:
            for micro in range(accum):
                samples = next(runner.loader)
                if cache is not None:
                    samples = cache.apply(samples)  # cached features in place of pixels
                sample_ids.extend(str(i) for i in samples.get("sample_id") or ())
                with ParallelModel.accumulating(self.net, sync=micro == accum - 1):
                    with runner._autocast():
                        out = runner.task.train_step(self.net, samples)
                    loss = out["loss"].float() / accum
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                step_loss += float(loss.detach())
                for key, value in out.items():
                    if key.endswith("_loss") and isinstance(value, torch.Tensor):
                        self.loss_parts[key] = self.loss_parts.get(key, 0.0) + float(value) / accum
                # every sample has an id; stage-0 label batches have no "answer"
                bs = len(samples.get("sample_id") or samples["answer"])
                self.log.count(bs * self.world, int(out.get("n_tokens", 0)) * self.world)
        except torch.cuda.OutOfMemoryError as exc:
            raise self.guard.out_of_memory(step + 1, exc, self.log.mlog) from exc
        return step_loss, sample_ids

    def _count_reads(self, step: int) -> None:
        skips = self.runner.skips
        try:
            count_reads(self.runner.loader, skips, self.runner.device)
        except SkipRateExceeded as exc:
            logger.error("stopping at step %d: %s", step, exc)
            self.log.mlog.log({"event": "stopped", "step": step, "reason": str(exc), "data": skips.summary()})
            raise

    def _report(self, done: int, lr: float, step_loss: float, grad_norm: float) -> None:
        runner, ema = self.runner, self.state.loss_ema
        row: Dict[str, Any] = {"step": done, "loss": round(step_loss, 5), "loss_ema": round(ema, 5), "lr": lr,
                               **self.log.throughput(), "dataset": runner.loader.last_name,
                               "grad_norm": round(grad_norm, 4),
                               **{k: round(v, 5) for k, v in self.loss_parts.items()}}
        if runner.scaler is not None:
            row["loss_scale"] = float(runner.scaler.get_scale())
        row["skipped_samples"] = runner.skips.total_skipped()
        row["memory_mb"] = memory_mb(runner.device)
        self.log.mlog.log(row)
        self.log.sinks.log(done, row, "train")
        postfix = dict(loss=f"{ema:.3f}", lr=f"{lr:.2e}", sps=f"{row['samples_per_s']:.0f}",
                       tps=f"{row['tokens_per_s']:.0f}")
        if row["skipped_samples"]:
            postfix["skipped"] = row["skipped_samples"]
        self.log.bar.set_postfix(**postfix)
