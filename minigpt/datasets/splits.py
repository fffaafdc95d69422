"""Walking a run's built datasets: ``{dataset name: {split: Dataset}}`` as the builders return them."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence, Tuple


def iter_splits(datasets: Mapping[str, Mapping[str, Any]], splits: Sequence[str]) -> Iterator[Tuple[str, str, Any]]:
    """``(dataset name, split, dataset)`` for every listed split each dataset has, datasets in order."""
    for name, by_split in datasets.items():
        for split in splits:
            ds = by_split.get(split)
            if ds is not None:
                yield name, split, ds
