"""The epoch-based runner: ``run.max_epoch`` passes over the training data, on runner_iter's machinery."""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional

import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset, IterableDataset

from minigpt.common import dist_utils
from minigpt.common.mixing import epoch_sizes
from minigpt.datasets.splits import iter_splits
from minigpt.runners.runner_iter import RunnerIter, dataset_batch_sizes

logger = logging.getLogger(__name__)


def batches_per_epoch(datasets: Dict[str, Dict[str, Dataset]], run_cfg, world_size: int,
                      batch_sizes: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
    """Micro-batches each training (dataset, split) yields per epoch on one rank, as the train loaders cut them.

    Each rank's sampler keeps ``len // world_size`` samples and the loader drops the last partial
    batch, of ``batch_sizes[name]`` (``datasets.<name>.batch_size``) or ``run.batch_size_train``.
    A streaming dataset has no length: ``ValueError`` naming it and ``run.iters_per_epoch``.
    """
    splits = list(run_cfg.train_splits)
    out: Dict[str, int] = {}
    for name, split, ds in iter_splits(datasets, splits):
        if isinstance(ds, IterableDataset):
            raise ValueError(
                f"runner_epoch: dataset {name}/{split} is a stream with no length, so an epoch cannot be "
                "derived from it; set run.iters_per_epoch"
            )
        bs = int((batch_sizes or {}).get(name) or run_cfg.batch_size_train)
        out[f"{name}/{split}"] = (len(ds) // world_size) // bs
    return out


class RunnerEpoch(RunnerIter):
    """Train for ``run.max_epoch`` epochs; everything else as ``runner_iter``. YAML name ``runner_epoch``.

    One epoch is as many optimizer steps as the training splits hold micro-batches together (per
    rank, last partial batch dropped), divided by ``run.accum_grad_iters``; ``run.iters_per_epoch``
    sets it instead (streaming datasets need that). The datasets are still drawn by
    ``sample_ratio``, so each one is read exactly once per epoch when there is one dataset, or when
    the ratios are proportional to the datasets' sizes (in expectation). With ``samples_per_epoch``
    sizes instead (``"20M"``, :mod:`minigpt.common.mixing`) an epoch holds the sizes' sum and each
    dataset is drawn in proportion to its size. ``run.max_iters`` is
    replaced by ``max_epoch * steps_per_epoch`` (the lr schedule spans that; ``run.iters_per_epoch``
    by the derived epoch length, which ``linear_warmup_cosine_epoch_lr`` steps by); a checkpoint is written
    and an ``epoch_end`` row logged at the end of every epoch.
    """

    def __init__(self, cfg, task, model, datasets, device: torch.device) -> None:
        super().__init__(cfg, task, model, datasets, device)
        rc = self.run_cfg
        max_epoch = int(rc.get("max_epoch") or 0)
        if max_epoch < 1:
            raise ValueError(f"run.max_epoch={rc.get('max_epoch')!r}: runner_epoch needs at least 1 epoch")
        training = [n for n, splits in datasets.items() if any(s in splits for s in rc.train_splits)]
        declared = epoch_sizes(cfg.datasets_cfg, training)
        if rc.get("iters_per_epoch"):
            per_epoch = int(rc.iters_per_epoch)
        else:
            sizes = dataset_batch_sizes(cfg.datasets_cfg, datasets)
            if declared is not None:  # samples_per_epoch: the epoch is the declared sizes, not the files' lengths
                world = dist_utils.get_world_size()
                batches = {n: (k // world) // int(sizes.get(n) or rc.batch_size_train) for n, k in declared.items()}
            else:
                batches = batches_per_epoch(datasets, rc, dist_utils.get_world_size(), sizes)
            per_epoch = sum(batches.values()) // int(rc.accum_grad_iters)
            if per_epoch < 1:
                raise ValueError(
                    f"runner_epoch: the training splits hold {batches} micro-batches of run.batch_size_train="
                    f"{rc.batch_size_train} (or their datasets' batch_size {sizes or 'unset'}) per rank, fewer "
                    f"than one optimizer step of run.accum_grad_iters="
                    f"{rc.accum_grad_iters}"
                )
        self.max_epoch, self.steps_per_epoch = max_epoch, per_epoch
        # a resolved copy: the lr schedule and every other reader of run.max_iters see the derived value,
        # while the user's composed config (saved with checkpoints) stays as written
        resolved = OmegaConf.create(OmegaConf.to_container(rc, resolve=True))
        resolved.max_iters = max_epoch * per_epoch
        resolved.iters_per_epoch = per_epoch  # linear_warmup_cosine_epoch_lr's epochs are these epochs
        self.run_cfg = resolved
        logger.info("runner_epoch: %d epoch(s) of %d optimizer step(s) = %d steps",
                    max_epoch, per_epoch, max_epoch * per_epoch)

    def _max_iters(self) -> int:
        return self.max_epoch * self.steps_per_epoch

    def on_step_end(self, done: int) -> None:
        # evaluation first: a new best writes this step's checkpoint itself, with the best recorded in it
        super().on_step_end(done)
        if done % self.steps_per_epoch == 0:
            epoch = done // self.steps_per_epoch
            self.state.save_once(done)
            self.log.mlog.log({"event": "epoch_end", "epoch": epoch, "step": done})
            logger.info("epoch %d of %d done (step %d)", epoch, self.max_epoch, done)
