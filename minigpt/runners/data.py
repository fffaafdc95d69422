"""Training data streams: one endless loader per dataset, mixed by ``sample_ratio``, resumable.

Every loader reads a dataset wrapped by :func:`skip_bad_samples` (unreadable samples are replaced
and reported with the batch, see ``minigpt.datasets.datasets.base_dataset``), and knows its
position: the epoch and batch offset of a map-style dataset's sampler, or how far each worker of a
webdataset stream got. :class:`MixedLoader` draws the dataset of each batch with its own seeded RNG.
Their ``state_dict()`` goes into the checkpoint's training state, and ``load_state_dict()`` makes
a resumed run draw the same batches the uninterrupted run would have.

Randomness: each sample's random processing (random resized crops, random frames) is seeded by
the run's seed, the dataset, the epoch and the sample's index (map-style, through
:class:`EpochKeyed` keys) or stream position (webdataset), not by the worker process that reads it,
and the loaders seed their workers from their own generators; so a run resumed with
``num_workers > 0`` (whose workers start afresh) draws the same crops, and the main process's RNG is
the same with or without workers.

Sharding: a map-style dataset goes through a ``DistributedSampler`` (each rank a disjoint part of
each epoch's permutation; DataLoader workers then share that rank's batches), a webdataset stream
splits its shards across ranks (``wds.split_by_node``) and then workers.

With ``run.group_by_length`` a map-style dataset's batches come from a
:class:`~minigpt.runners.length_grouping.LengthGroupedBatchSampler` instead (similar lengths, one
modality per batch); its position is kept the same way (epoch and batches handed out).
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from minigpt.common.dist_utils import get_rank, get_world_size, is_dist
from minigpt.common.io import SKIP_KINDS
from minigpt.datasets.datasets.base_dataset import SkippingDataset, SkipTracker
from minigpt.runners.length_grouping import LengthFn, LengthGroupedBatchSampler, scan_lengths

logger = logging.getLogger(__name__)

STATE_VERSION = 1


def _collate(samples):
    from minigpt.datasets.collate import collate_samples

    return collate_samples(samples)


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` that can start an epoch part-way, after ``start`` of this rank's indices.

    Used with one replica too, so a single process and every rank of a DDP run shuffle the same
    way: epoch ``e``'s order is a permutation seeded by ``seed + e``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class EpochKeyed(Sampler):
    """``sampler``'s indices as ``(epoch, index)`` keys (lists of them for a batch sampler).

    A :class:`~minigpt.datasets.datasets.skipping.SkippingDataset` seeds each sample's random
    processing by that key, so a crop depends on the epoch and sample, not on the worker reading it.
    """

    def __init__(self, sampler: Union[ResumableSampler, LengthGroupedBatchSampler]) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        epoch = int(self.sampler.epoch)
        for item in self.sampler:
            yield [(epoch, int(i)) for i in item] if isinstance(item, list) else (epoch, int(item))

    def __len__(self) -> int:
        return len(self.sampler)


class InfiniteLoader:
    """Endless batches from one dataset, with bad samples replaced and the position kept.

    ``name`` labels the dataset in skip counts. ``rank``/``world_size`` default to the process
    group's. ``read_counts`` accumulates ``{"samples", "skipped"}`` from the batches handed out
    (the counts travel inside each batch from the worker processes, see ``collate_samples``);
    ``take_read_counts()`` returns and clears them.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_workers: int,
        seed: int,
        name: Optional[str] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        skip_bad: bool = True,
        lengths: Optional[Sequence[int]] = None,
        has_image: Optional[Sequence[bool]] = None,
        group_batches: int = 50,
    ) -> None:
        from minigpt.datasets.datasets.base_dataset import skip_bad_samples

        self.name = str(name or getattr(dataset, "name", type(dataset).__name__))
        self.dataset = skip_bad_samples(dataset, self.name, seed) if skip_bad else dataset
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.epoch = 0
        self.offset = 0  # batches handed out in this epoch (map-style)
        self.streaming = isinstance(self.dataset, IterableDataset)
        # stream position: logical worker -> [epoch, position], and the worker whose batch is due next
        self.stream_positions: Dict[int, List[int]] = {}
        self.next_worker = 0
        self._pending_counts = {"samples": 0, "skipped": 0}
        self.last_error: Optional[str] = None
        self.sampler: Optional[ResumableSampler] = None
        # run.group_by_length: batches of similar length and one modality (minigpt/runners/length_grouping.py)
        self.batch_sampler: Optional[LengthGroupedBatchSampler] = None
        # the loader's own generator seeds its workers, so starting them leaves the process's RNG as it was
        kwargs: Dict[str, Any] = dict(
            batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=_collate, drop_last=True,
            generator=torch.Generator().manual_seed(int(seed)),
        )
        # a skipping dataset takes (epoch, index) keys and seeds each sample's random processing by them
        keyed = EpochKeyed if isinstance(self.dataset, SkippingDataset) else (lambda sampler: sampler)
        if self.num_workers > 0:
            kwargs["persistent_workers"] = True
        if self.streaming:
            self.loader = DataLoader(self.dataset, **kwargs)
        else:
            world = get_world_size() if world_size is None else int(world_size)
            if len(self.dataset) < self.batch_size * world:
                raise ValueError(
                    f"dataset {self.name} has {len(self.dataset)} samples, "
                    f"fewer than one global batch ({self.batch_size} x {world} ranks)"
                )
            rank = get_rank() if rank is None else int(rank)
            if lengths is not None:
                if len(lengths) != len(self.dataset):
                    raise ValueError(f"dataset {self.name}: {len(lengths)} lengths for {len(self.dataset)} samples")
                self.batch_sampler = LengthGroupedBatchSampler(
                    lengths, has_image if has_image is not None else [True] * len(lengths), self.batch_size,
                    num_replicas=world, rank=rank, seed=seed, group_batches=group_batches,
                )
                for key in ("batch_size", "drop_last"):
                    kwargs.pop(key)
                self.loader = DataLoader(self.dataset, batch_sampler=keyed(self.batch_sampler), **kwargs)
            else:
                self.sampler = ResumableSampler(self.dataset, num_replicas=world, rank=rank, seed=seed)
                self.loader = DataLoader(self.dataset, sampler=keyed(self.sampler), **kwargs)
        self._it: Optional[Iterator] = None

    # -- iteration ------------------------------------------------------------------------------
    def __next__(self) -> Dict[str, Any]:
        while True:
            if self._it is None:
                if self.sampler is not None:
                    self.sampler.set_epoch(self.epoch)
                    self.sampler.start = self.offset * self.batch_size
                if self.batch_sampler is not None:
                    self.batch_sampler.set_epoch(self.epoch)
                    self.batch_sampler.start = self.offset
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch += 1
                self.offset = 0
                continue
            self.offset += 1
            self._absorb(batch.pop("data_stats", None))
            return batch

    def __iter__(self) -> "InfiniteLoader":
        return self

    def _absorb(self, stats: Optional[Mapping[str, Any]]) -> None:
        if not stats:
            return
        for samples, skipped in stats.get("counts", {}).values():
            self._pending_counts["samples"] += int(samples)
            self._pending_counts["skipped"] += int(skipped)
        for by_kind in stats.get("kinds", {}).values():  # kind -> skipped reads, next to samples/skipped
            for kind, n in by_kind.items():
                self._pending_counts[kind] = self._pending_counts.get(kind, 0) + int(n)
        for record in stats.get("skipped") or ():
            logger.warning("skipped and replaced (%s): %s", record.get("kind", "unreadable"), record.get("error"))
            self.last_error = str(record.get("error"))
        workers = max(1, self.num_workers)
        for positions in stats.get("stream", {}).values():
            for worker, pos in positions.items():
                self.stream_positions[int(worker)] = [int(pos[0]), int(pos[1])]
                self.next_worker = (int(worker) + 1) % workers

    def take_read_counts(self) -> Dict[str, int]:
        """Samples delivered and reads skipped since the last call."""
        counts, self._pending_counts = self._pending_counts, {"samples": 0, "skipped": 0}
        return counts

    # -- position -------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        if self.streaming:
            return {
                "kind": "stream",
                "num_workers": self.num_workers,
                "positions": {int(w): list(p) for w, p in self.stream_positions.items()},
                "next_worker": self.next_worker,
            }
        return {"kind": "map", "epoch": self.epoch, "offset": self.offset, "batch_size": self.batch_size,
                "grouped": self.batch_sampler is not None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state_dict()``; call before the first batch is drawn."""
        if self._it is not None:
            raise RuntimeError(f"loader {self.name}: restore the position before drawing batches")
        kind = "stream" if self.streaming else "map"
        if state.get("kind") != kind:
            raise ValueError(f"loader {self.name}: saved position is of a {state.get('kind')} dataset, this is {kind}")
        if self.streaming:
            resume = getattr(self.dataset, "resume_from", None)
            if resume is None:
                logger.warning("dataset %s: this stream cannot resume; it starts from its beginning", self.name)
                return
            if int(state.get("num_workers", -1)) != self.num_workers:
                logger.warning(
                    "dataset %s: run.num_workers changed (%s -> %d) since the checkpoint; its stream is split "
                    "differently, so it starts a new pass instead of continuing where it was",
                    self.name, state.get("num_workers"), self.num_workers,
                )
                epochs = [int(p[0]) for p in state.get("positions", {}).values()]
                start = (max(epochs) + 1) if epochs else 0
                resume({w: (start, 0) for w in range(max(1, self.num_workers))}, 0)
                return
            self.stream_positions = {int(w): list(p) for w, p in state.get("positions", {}).items()}
            self.next_worker = int(state.get("next_worker", 0))
            resume(self.stream_positions, self.next_worker)
            return
        if int(state.get("batch_size", self.batch_size)) != self.batch_size:
            raise ValueError(
                f"loader {self.name}: the checkpoint was written with batch size {state.get('batch_size')}, "
                f"this run uses {self.batch_size}; the data position cannot be carried over"
            )
        grouped = self.batch_sampler is not None
        if bool(state.get("grouped", False)) != grouped:
            logger.warning(
                "loader %s: run.group_by_length changed since the checkpoint; the current epoch continues at batch %s "
                "of a differently ordered epoch (some of its samples are seen twice or not at all this epoch)",
                self.name, state.get("offset"),
            )
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


BATCH_MIXINGS = ("one_dataset", "every_dataset")  # run.batch_mixing


class MixedLoader:
    """Each step draws one dataset with probability proportional to its ``sample_ratio``.

    The choice uses its own RNG seeded identically on every rank, so all ranks work on the same
    dataset at each step (equal sequence shapes keep DDP ranks in step).

    ``mixing="every_dataset"`` (``run.batch_mixing``): each step instead joins one micro-batch of
    every dataset (each of its own batch size, so ``datasets.<name>.batch_size`` sets the shares and
    ``sample_ratio`` is not used) into one batch (:func:`~minigpt.datasets.collate.join_batches`):
    image, video, stored-feature and text-only samples then share every step.
    """

    def __init__(
        self, loaders: Dict[str, InfiniteLoader], ratios: Dict[str, float], seed: int, mixing: str = "one_dataset"
    ) -> None:
        if not loaders:
            raise ValueError("no training datasets: list at least one under `datasets:` with a train split")
        if mixing not in BATCH_MIXINGS:
            raise ValueError(f"run.batch_mixing must be one of {', '.join(BATCH_MIXINGS)}, got {mixing!r}")
        self.mixing = mixing
        self.names: List[str] = list(loaders)
        self.loaders = loaders
        total = float(sum(ratios[n] for n in self.names))
        self.weights = [ratios[n] / total for n in self.names]
        self.rng = random.Random(seed)
        self.draws = 0
        self.last_name: Optional[str] = None

    def __next__(self) -> Dict[str, Any]:
        if self.mixing == "every_dataset" and len(self.names) > 1:
            from minigpt.datasets.collate import join_batches

            self.draws += 1
            self.last_name = "+".join(self.names)
            return join_batches([next(self.loaders[n]) for n in self.names])
        name = self.rng.choices(self.names, weights=self.weights)[0] if len(self.names) > 1 else self.names[0]
        self.draws += 1
        self.last_name = name
        return next(self.loaders[name])

    def __iter__(self) -> "MixedLoader":
        return self

    def take_read_counts(self) -> Dict[str, Dict[str, int]]:
        """Per dataset: samples delivered and reads skipped since the last call."""
        return {name: loader.take_read_counts() for name, loader in self.loaders.items()}

    def state_dict(self) -> Dict[str, Any]:
        """The mixer's RNG state and draw count, and every loader's position (plain data: loads with weights_only)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "version": STATE_VERSION,
            "names": list(self.names),
            "rng": [version, list(internal), gauss],
            "draws": self.draws,
            "loaders": {name: loader.state_dict() for name, loader in self.loaders.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved sample sequence. Datasets added or removed since: the mixer starts afresh."""
        saved = list(state.get("names", []))
        for name, loader in self.loaders.items():
            if name in state.get("loaders", {}):
                loader.load_state_dict(state["loaders"][name])
        if saved != self.names:
            logger.warning(
                "the training datasets changed since the checkpoint (%s -> %s): positions of the datasets in both "
                "are restored, the mixer's choices start afresh",
                ", ".join(saved), ", ".join(self.names),
            )
            return
        version, internal, gauss = state["rng"]
        self.rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        self.draws = int(state.get("draws", 0))


def build_train_loader(
    datasets: Dict[str, Dict[str, Dataset]],
    ratios: Dict[str, float],
    run_cfg,
    attach: Optional[Callable[[str, Dataset], Dataset]] = None,
    length_of: Optional[LengthFn] = None,
    batch_sizes: Optional[Mapping[str, int]] = None,
) -> MixedLoader:
    """The training stream of a run: one :class:`InfiniteLoader` per (dataset, train split), mixed by ratio.

    Each dataset batches at ``batch_sizes[name]`` where given (``datasets.<name>.batch_size``),
    else at ``run.batch_size_train``: a step's micro-batch holds that many samples of the one
    dataset the mixer drew.

    ``attach(name, dataset)`` may return a dataset reading its images another way (the vision
    feature cache's :meth:`~minigpt.runners.vision_cache.VisionFeatureCache.attach`). With
    ``run.group_by_length`` each map-style dataset's lengths are scanned first (``length_of``:
    samples -> lengths, e.g. :func:`~minigpt.runners.length_grouping.token_lengths`; characters
    by default) and its batches grouped (:class:`LengthGroupedBatchSampler`).
    """
    split_names = list(run_cfg.train_splits)
    group = bool(run_cfg.get("group_by_length", False))
    loaders = {}
    for name, splits in datasets.items():
        for split in split_names:
            if split in splits:
                key = name if len(split_names) == 1 else f"{name}/{split}"
                dataset = splits[split]
                scanned = None
                if group and isinstance(dataset, IterableDataset):
                    logger.info("run.group_by_length: %s is a stream (no random access); its batches are not grouped",
                                key)
                elif group:
                    scanned = scan_lengths(dataset, length_of, key)
                if attach is not None:
                    dataset = attach(key, dataset)
                loaders[key] = InfiniteLoader(
                    dataset,
                    batch_size=int((batch_sizes or {}).get(name) or run_cfg.batch_size_train),
                    num_workers=int(run_cfg.num_workers),
                    seed=int(run_cfg.seed) + 7919 * len(loaders),
                    name=key,
                    lengths=scanned[0] if scanned else None,
                    has_image=scanned[1] if scanned else None,
                    group_batches=int(run_cfg.get("length_group_batches", 50)),
                )
                ratios = {**ratios, key: ratios[name]}
    return MixedLoader(loaders, ratios, seed=int(run_cfg.seed) + 1, mixing=str(run_cfg.get("batch_mixing", "one_dataset")))


def skip_tracker(loader: MixedLoader, run_cfg) -> SkipTracker:
    """The run's count of unreadable samples per dataset (``run.max_skip_rate``, ``run.skip_rate_min_reads``).

    A dataset whose annotations are mostly malformed stops the run here, before any step.
    """
    tracker = SkipTracker(
        run_cfg.get("max_skip_rate", 0.1), int(run_cfg.get("skip_rate_min_reads", 200)), names=loader.names
    )
    for name, sub in loader.loaders.items():
        malformed = getattr(sub.dataset, "malformed_records", None)
        if malformed is not None and not sub.streaming:
            tracker.set_records(name, len(sub.dataset), malformed)
    tracker.check()
    return tracker


def count_reads(loader: MixedLoader, tracker: SkipTracker, device: torch.device) -> None:
    """Add this step's per-dataset read counts (summed over ranks) and raise past the skip rate."""
    counts = loader.take_read_counts()
    names = loader.names
    if is_dist():
        # every rank must see the same totals, or one rank would stop while the others wait in a collective
        import torch.distributed as dist

        cols = ["samples", "skipped", *SKIP_KINDS]
        t = torch.tensor([[counts[n].get(c, 0) for c in cols] for n in names], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        counts = {n: dict(zip(cols, map(int, t[i].tolist()))) for i, n in enumerate(names)}
    for name in names:
        kinds = {k: n for k, n in counts[name].items() if k in SKIP_KINDS}
        tracker.add(name, counts[name]["samples"], counts[name]["skipped"], loader.loaders[name].last_error, kinds)
    tracker.check()
