"""What a training run reports besides its loss: scalar logs, memory, sample generations, best checkpoint.

Used by :class:`minigpt.runners.runner_iter.RunnerIter` (and so by ``runner_epoch``):

* :class:`ScalarSinks` -- TensorBoard (``run.tensorboard``) and wandb (``run.wandb_project``) beside
  ``metrics.jsonl``; rank 0 writes, the other ranks hold a no-op.
* :func:`memory_mb` -- the memory figure of the metrics rows.
* :class:`SampleProbe` -- ``run.sample_every``: answers for a few fixed samples, into ``samples.jsonl``.
* :class:`BestTracker` / :func:`link_best` -- ``run.best_metric``: the best evaluated checkpoint kept as
  ``checkpoints/best``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from itertools import islice
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch.utils.data import Dataset, IterableDataset

from minigpt.common import dist_utils
from minigpt.datasets.splits import iter_splits
from minigpt.runners.checkpointing import CKPT_DIR, TMP_PREFIX, fsync_dir

logger = logging.getLogger(__name__)

BEST = "best"
SAMPLES_FILE = "samples.jsonl"
TENSORBOARD_DIR = "tensorboard"


# -- scalar logs ---------------------------------------------------------------------------------
class ScalarSinks:
    """TensorBoard event files under ``<output_dir>/tensorboard`` and/or a wandb run; rank 0 only.

    Built from ``run.tensorboard`` and ``run.wandb_project``. A sink that is asked for but whose
    package is missing raises ``ImportError`` naming the run key, on every rank, before any step.
    """

    def __init__(self, run_cfg, output_dir: str, config: Optional[Mapping[str, Any]] = None) -> None:
        self.tb = None
        self.wandb_run = None
        want_tb = bool(run_cfg.get("tensorboard", False))
        project = run_cfg.get("wandb_project")
        if want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "run.tensorboard=true needs the `tensorboard` package (pip install tensorboard); "
                    "or set run.tensorboard=false"
                ) from exc
        if project:
            try:
                import wandb
            except ImportError as exc:
                raise ImportError(
                    f"run.wandb_project={project!r} needs the `wandb` package (pip install wandb); "
                    "or set run.wandb_project=null"
                ) from exc
        if not dist_utils.is_main_process():
            return
        if want_tb:
            self.tb = SummaryWriter(log_dir=os.path.join(output_dir, TENSORBOARD_DIR))
        if project:
            self.wandb_run = wandb.init(
                project=str(project), name=str(run_cfg.get("stage_name") or "train"), dir=output_dir,
                config=dict(config or {}), resume="allow",
            )

    def log(self, step: int, values: Mapping[str, Any], prefix: str) -> None:
        """Write the numeric entries of ``values`` as ``<prefix>/<key>`` at ``step``."""
        scalars = {f"{prefix}/{k}": float(v) for k, v in values.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(float(v))}
        if not scalars:
            return
        if self.tb is not None:
            for tag, value in scalars.items():
                self.tb.add_scalar(tag, value, global_step=step)
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated by tensors on a GPU, else the process's resident set size, in MiB."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except ImportError:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


# -- periodic generation -------------------------------------------------------------------------
def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


class SampleProbe:
    """A few fixed samples whose answers are generated every ``run.sample_every`` steps.

    The samples are the first ``run.sample_count`` of the first dataset with a ``run.test_splits``
    split, else of the first training split. Each call appends ``{step, sample_id, dataset, prompt,
    prediction, answer}`` rows to ``<output_dir>/samples.jsonl`` (rank 0) and the log. Every rank
    generates (a sharded FSDP model needs all ranks in its forward); the RNG streams are saved and
    restored around it, so switching the probe on does not change the training run.
    """

    def __init__(self, datasets: Mapping[str, Mapping[str, Dataset]], run_cfg, output_dir: str) -> None:
        count = int(run_cfg.get("sample_count", 4))
        self.source, picked = self._pick(datasets, run_cfg, count)
        self.samples = picked
        self.max_new_tokens = int(run_cfg.eval_max_new_tokens)
        self.path = os.path.join(output_dir, SAMPLES_FILE)

    @staticmethod
    def _pick(datasets, run_cfg, count: int):
        for splits in (list(run_cfg.get("test_splits") or []), list(run_cfg.train_splits)):
            for name, split, ds in iter_splits(datasets, splits):
                if isinstance(ds, IterableDataset):
                    items = list(islice(iter(ds), count))
                else:
                    items = [ds[i] for i in range(min(count, len(ds)))]
                if items:
                    return f"{name}/{split}", items
        raise ValueError("run.sample_every is set but no dataset has a test or train split to draw samples from")

    @torch.no_grad()
    def run(self, model, step: int, device: torch.device) -> List[Dict[str, Any]]:
        from minigpt.datasets.collate import collate_samples

        batch = collate_samples(list(self.samples))
        batch.pop("data_stats", None)
        prompts = [_first(p) for p in batch["instruction_input"]]
        was_training = model.training
        model.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                preds = model.generate(batch.get("image"), prompts, max_new_tokens=self.max_new_tokens, num_beams=1)
        finally:
            model.train(was_training)
        rows = [
            {"step": step, "sample_id": str(batch["sample_id"][i]), "dataset": self.source, "prompt": prompts[i],
             "prediction": pred, "answer": _first(batch["answer"][i])}
            for i, pred in enumerate(preds)
        ]
        if dist_utils.is_main_process():
            with open(self.path, "a") as fh:
                # one write of whole lines, synced: a kill leaves at most a cut last line, which a resume drops
                fh.write("".join(json.dumps(row, default=str) + "\n" for row in rows))
                fh.flush()
                os.fsync(fh.fileno())
            for row in rows:
                logger.info("sample at step %d, %s %s: %r -> %r (answer %r)", step, self.source,
                            row["sample_id"], row["prompt"], row["prediction"], row["answer"])
        return rows


# -- best checkpoint -----------------------------------------------------------------------------
class BestTracker:
    """Which evaluation was best so far under ``run.best_metric`` / ``run.best_mode``.

    ``run.best_metric`` is a key of the task's evaluation results (``<dataset>/<split>/<metric>``)
    or a suffix that names exactly one of them (``vqa_accuracy``).
    """

    def __init__(self, metric: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"run.best_mode={mode!r}: expected max or min")
        self.metric, self.mode = str(metric), mode
        self.value: Optional[float] = None
        self.step: Optional[int] = None

    def resolve(self, results: Mapping[str, Any]) -> str:
        """The results key ``run.best_metric`` names; ``KeyError`` listing the keys when it names none or several."""
        if self.metric in results:
            return self.metric
        hits = [k for k in results if k.endswith("/" + self.metric)]
        if len(hits) == 1:
            return hits[0]
        what = "matches several" if hits else "matches none"
        raise KeyError(f"run.best_metric={self.metric!r} {what} of the evaluation results: {sorted(results)}")

    def update(self, step: int, results: Mapping[str, Any]) -> bool:
        """Record ``results`` of ``step``; True when it is the new best."""
        value = float(results[self.resolve(results)])
        if not math.isfinite(value):
            return False
        better = self.value is None or (value > self.value if self.mode == "max" else value < self.value)
        if better:
            self.value, self.step = value, step
        return better

    def state_dict(self) -> Dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "value": self.value, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric") != self.metric or state.get("mode") != self.mode:
            logger.warning("the best checkpoint was judged by %s (%s), this run by %s (%s): the best starts afresh",
                           state.get("metric"), state.get("mode"), self.metric, self.mode)
            return
        self.value = state.get("value")
        self.step = state.get("step")


def _link_or_copy(src: str, dst: str) -> None:
    # checkpoint files are never rewritten in place (a new write renames a new directory over the
    # old), so a hard link is as safe as a copy and costs no space
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_best(output_dir: str, ckpt_dir: str) -> str:
    """Make ``<output_dir>/checkpoints/best`` the checkpoint ``ckpt_dir``; return the ``best`` path.

    The files go to ``best_<step dir name>`` (hard links, or copies), so ``keep_last`` pruning of
    ``step_*`` cannot take them away; ``best`` is a symlink to that directory, replaced atomically
    (like ``latest``: a crash leaves the previous best or the new one, never a partial one). Older
    ``best_*`` directories are removed afterwards.
    """
    root = os.path.join(output_dir, CKPT_DIR)
    name = f"{BEST}_{os.path.basename(os.path.normpath(ckpt_dir))}"
    target = os.path.join(root, name)
    tmp = os.path.join(root, TMP_PREFIX + name)  # a crash leftover clean_checkpoints removes
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpt_dir, tmp, copy_function=_link_or_copy)
    fsync_dir(tmp)
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    os.replace(tmp, target)
    pointer_tmp = os.path.join(root, f".{BEST}.tmp")
    if os.path.lexists(pointer_tmp):
        os.remove(pointer_tmp)
    os.symlink(name, pointer_tmp, target_is_directory=True)
    os.replace(pointer_tmp, os.path.join(root, BEST))
    fsync_dir(root)
    for other in os.listdir(root):
        if other.startswith(f"{BEST}_") and other != name:
            shutil.rmtree(os.path.join(root, other), ignore_errors=True)
    return os.path.join(root, BEST)
