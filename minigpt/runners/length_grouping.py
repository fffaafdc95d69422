"""Length- and modality-grouped batches (``run.group_by_length``): less padding, same samples per epoch.

A batch is padded to its longest sequence, so a batch mixing a 20-token caption with a 150-token
conversation is mostly padding. With grouping, each epoch of a map-style dataset is still a seeded
permutation of it, but cut into batches of neighbours in length: the permutation is split by
modality (samples with an image, samples without: never mixed in one batch), each modality into
groups of ``group_batches`` global batches, each group sorted by length and cut into batches; the
batches of the epoch are then shuffled (so the length order does not become a curriculum). Every
rank takes its part of each global batch, so the ranks of a step get similar lengths.

The lengths come from one pass over the dataset's texts with images skipped
(:class:`~minigpt.datasets.image_source.ScanImageSource`): no image is decoded. With the model's
tokenizer (the runner passes it) a length is the token count of the instructions and answers.
Streams (webdataset shards) have no random access and are not grouped.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from torch.utils.data import Sampler

from minigpt.common.io import DatasetError
from minigpt.datasets.image_source import ImageRef, ScanImageSource, supports_image_source, with_image_source

logger = logging.getLogger(__name__)

LengthFn = Callable[[List[Dict[str, Any]]], List[int]]
SCAN_CHUNK = 512


def _turns(x: Any) -> List[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else [str(t) for t in x]


def sample_text(sample: Dict[str, Any]) -> str:
    """A sample's instructions and answers as one string (what its token count is taken of)."""
    return " ".join(_turns(sample.get("instruction_input")) + _turns(sample.get("answer")))


def char_lengths(samples: List[Dict[str, Any]]) -> List[int]:
    """Character counts of the samples' texts: the length measure when no tokenizer is given."""
    return [len(sample_text(s)) for s in samples]


def token_lengths(tokenizer) -> LengthFn:
    """A length function counting the tokens ``tokenizer`` makes of each sample's texts (one batched call)."""

    def lengths(samples: List[Dict[str, Any]]) -> List[int]:
        if not samples:
            return []
        ids = tokenizer([sample_text(s) for s in samples], add_special_tokens=False)["input_ids"]
        return [len(i) for i in ids]

    return lengths


def scan_lengths(
    dataset, length_of: Optional[LengthFn] = None, name: str = "?"
) -> Optional[Tuple[List[int], List[bool]]]:
    """``(lengths, has_image)`` of every sample of the map-style reader ``dataset``, without decoding images.

    None (and a warning) when the reader cannot skip its images (no image-source hook, or a reader
    such as the video one that reads its media another way). A record the reader rejects
    (``DatasetError``) counts as length 0 in the dataset's usual modality; in training it is replaced.
    """
    length_of = length_of or char_lengths
    if supports_image_source(dataset):
        probe = with_image_source(dataset, ScanImageSource())
    elif not getattr(dataset, "read_images", True):
        probe = dataset  # text-only: nothing to skip
    else:
        logger.warning(
            "run.group_by_length: dataset %s cannot be scanned without reading its images; it is not grouped",
            name,
        )
        return None
    t0 = time.time()
    reads_images = bool(getattr(dataset, "read_images", True))
    lengths: List[int] = []
    has_image: List[bool] = []
    errors: List[int] = []
    n = len(probe)
    for start in range(0, n, SCAN_CHUNK):
        chunk: List[Dict[str, Any]] = []
        for index in range(start, min(n, start + SCAN_CHUNK)):
            try:
                sample = probe[index]
            except DatasetError:
                # training replaces this record; until then it is an empty sample of the dataset's usual modality
                errors.append(len(has_image))
                sample = {"image": ImageRef("?") if reads_images else None}
            image = sample.get("image")
            if image is not None and not isinstance(image, ImageRef):
                logger.warning(
                    "run.group_by_length: dataset %s read media while being scanned (its reader does not "
                    "use image sources); it is not grouped",
                    name,
                )
                return None
            has_image.append(image is not None)
            chunk.append(sample)
        lengths.extend(int(v) for v in length_of(chunk))
    for index in errors:
        lengths[index] = 0
    logger.info(
        "run.group_by_length: scanned %d samples of %s in %.1fs (%d with an image)",
        n,
        name,
        time.time() - t0,
        sum(has_image),
    )
    return lengths, has_image


class LengthGroupedBatchSampler(Sampler[List[int]]):
    """This rank's batches of one epoch, grouped by modality and length (see the module notes).

    Deterministic in ``(seed, epoch, lengths, has_image, batch_size, num_replicas, group_batches)``,
    like ``DistributedSampler``'s permutation; ``set_epoch(e)`` picks the epoch and ``start`` skips
    that many of this rank's batches (a resumed run continues mid-epoch). Each epoch drops, per
    modality, the samples that do not fill one batch on every rank (fewer than
    ``batch_size * num_replicas``), as the ungrouped loader drops its last partial batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        has_image: Sequence[bool],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_batches: int = 50,
    ) -> None:
        if len(lengths) != len(has_image):
            raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags")
        if int(group_batches) < 1:
            raise ValueError(f"run.length_group_batches must be >= 1, got {group_batches!r}")
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.lengths = [int(v) for v in lengths]
        self.has_image = [bool(v) for v in has_image]
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.group_batches = int(group_batches)
        self.epoch = 0
        self.start = 0
        self._cached: Optional[Tuple[int, List[List[int]]]] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self, epoch: int) -> List[List[int]]:
        """Every rank's batches of ``epoch`` together: a list of steps, each ``batch_size * num_replicas`` indices."""
        rng = random.Random(f"length-grouped:{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        per_step = self.batch_size * self.num_replicas
        group = per_step * self.group_batches
        steps: List[List[int]] = []
        for modality in (True, False):
            idx = [i for i in order if self.has_image[i] is modality]
            idx = idx[: len(idx) - len(idx) % per_step]
            for g in range(0, len(idx), group):
                # a stable sort of a shuffled group: equal lengths stay in random order
                chunk = sorted(idx[g : g + group], key=lambda i: -self.lengths[i])
                steps.extend(chunk[s : s + per_step] for s in range(0, len(chunk), per_step))
        rng.shuffle(steps)
        return steps

    def _epoch_batches(self) -> List[List[int]]:
        if self._cached is None or self._cached[0] != self.epoch:
            b, r = self.batch_size, self.rank
            self._cached = (
                self.epoch,
                [step[r * b : (r + 1) * b] for step in self.global_batches(self.epoch)],
            )
        return self._cached[1]

    def __iter__(self) -> Iterator[List[int]]:
        return itertools.islice(iter(self._epoch_batches()), self.start, None)

    def __len__(self) -> int:
        return max(0, len(self._epoch_batches()) - self.start)


def padding_fraction(attention_mask) -> float:
    """Share of a padded batch's positions that are padding (``attention_mask`` 0)."""
    total = attention_mask.numel()
    return float(1.0 - attention_mask.sum().item() / total) if total else 0.0
