"""Training data streams: one infinite loader per dataset, mixed by ``sample_ratio``."""

from __future__ import annotations

import random
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler

from minigpt.common.dist_utils import get_world_size, is_dist


def _collate(samples):
    from minigpt.datasets.collate import collate_samples

    return collate_samples(samples)


class InfiniteLoader:
    """Endless batches from one dataset; a map-style dataset is reshuffled every pass (seeded)."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, seed: int) -> None:
        self.dataset = dataset
        self.epoch = 0
        self.sampler = None
        kwargs = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=_collate, drop_last=True)
        if num_workers > 0:
            kwargs["persistent_workers"] = True
        if isinstance(dataset, IterableDataset):
            self.loader = DataLoader(dataset, **kwargs)
        else:
            if len(dataset) < batch_size * get_world_size():
                raise ValueError(
                    f"dataset {getattr(dataset, 'name', type(dataset).__name__)} has {len(dataset)} samples, "
                    f"fewer than one global batch ({batch_size} x {get_world_size()} ranks)"
                )
            if is_dist():
                self.sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
            else:
                g = torch.Generator()
                g.manual_seed(seed)
                self.sampler = RandomSampler(dataset, generator=g)
            self.loader = DataLoader(dataset, sampler=self.sampler, **kwargs)
        self._it: Optional[Iterator] = None

    def __next__(self):
        while True:
            if self._it is None:
                if isinstance(self.sampler, DistributedSampler):
                    self.sampler.set_epoch(self.epoch)
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
                self.epoch += 1

    def __iter__(self):
        return self


class MixedLoader:
    """Each step draws one dataset with probability proportional to its ``sample_ratio``.

    The choice uses its own RNG seeded identically on every rank, so all ranks work on the same
    dataset at each step (equal sequence shapes keep DDP ranks in step).
    """

    def __init__(self, loaders: Dict[str, InfiniteLoader], ratios: Dict[str, float], seed: int) -> None:
        if not loaders:
            raise ValueError("no training datasets: list at least one under `datasets:` with a train split")
        self.names: List[str] = list(loaders)
        self.loaders = loaders
        total = float(sum(ratios[n] for n in self.names))
        self.weights = [ratios[n] / total for n in self.names]
        self.rng = random.Random(seed)
        self.last_name: Optional[str] = None

    def __next__(self):
        name = self.rng.choices(self.names, weights=self.weights)[0] if len(self.names) > 1 else self.names[0]
        self.last_name = name
        return next(self.loaders[name])

    def __iter__(self):
        return self


def build_train_loader(datasets: Dict[str, Dict[str, Dataset]], ratios: Dict[str, float], run_cfg) -> MixedLoader:
    split_names = list(run_cfg.train_splits)
    loaders = {}
    for name, splits in datasets.items():
        for split in split_names:
            if split in splits:
                key = name if len(split_names) == 1 else f"{name}/{split}"
                loaders[key] = InfiniteLoader(
                    splits[split],
                    batch_size=int(run_cfg.batch_size_train),
                    num_workers=int(run_cfg.num_workers),
                    seed=int(run_cfg.seed) + 7919 * len(loaders),
                )
                ratios = {**ratios, key: ratios[name]}
    return MixedLoader(loaders, ratios, seed=int(run_cfg.seed) + 1)
