"""How several training datasets are weighed: by ``sample_ratio``, or by samples per epoch as sizes.

A ``datasets.<name>`` block weighs its dataset either with ``sample_ratio`` (a relative weight,
default 1.0) or with ``samples_per_epoch``: how many of its samples an epoch holds, written as a
count or a size with a suffix (``5000``, ``"5k"``, ``"1.5M"``, ``"20M"``, ``"2B"``; k/M/B are
thousands, millions, billions), as DreamLLM's data lists give their datasets' sizes. The mixer
then draws each dataset in proportion to its size, and ``runner_epoch`` makes an epoch of the
sizes' sum. Sizes are all or nothing: when one block gives a size, every training block must.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional

SIZE_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmb]?)\s*$", re.IGNORECASE)


def parse_size(value: Any, where: str) -> int:
    """A positive sample count from ``5000``, ``"5k"``, ``"1.5M"``, ``"20M"``, ``"2B"``; else ``ValueError`` naming ``where``."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not a size; write a count (5000) or a size like '5k', '20M'")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and math.isfinite(value) and value == int(value):
        n = int(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        number, suffix = m.groups()
        exact = float(number) * SIZE_SUFFIXES[suffix.lower()]
        if exact != int(exact):
            raise ValueError(f"{where}: {value!r} is not a whole number of samples")
        n = int(exact)
    else:
        raise ValueError(
            f"{where}: {value!r} is not a size; write a count (5000) or a number with k, M or B "
            "('5k', '1.5M', '20M', '2B')"
        )
    if n < 1:
        raise ValueError(f"{where}: {value!r} must be at least one sample")
    return n


def epoch_sizes(blocks: Mapping[str, Mapping[str, Any]], names: Optional[Iterable[str]] = None) -> Optional[Dict[str, int]]:
    """``{name: samples per epoch}`` when the blocks give sizes, None when they weigh by ``sample_ratio``.

    ``names`` limits the check to those datasets (the ones that train). Errors name the block:
    a malformed size, a size next to a ``sample_ratio`` other than 1, some blocks with sizes and
    some without.
    """
    names = list(blocks) if names is None else list(names)
    given = {n: blocks[n].get("samples_per_epoch") for n in names if blocks[n].get("samples_per_epoch") is not None}
    if not given:
        return None
    missing = [n for n in names if n not in given]
    if missing:
        raise ValueError(
            f"datasets {', '.join(sorted(given))} give samples_per_epoch but {', '.join(missing)} do not: "
            "give every training dataset a size, or weigh them all with sample_ratio"
        )
    sizes = {}
    for n, value in given.items():
        sizes[n] = parse_size(value, f"datasets.{n}.samples_per_epoch")
        ratio = blocks[n].get("sample_ratio", 1.0)
        if ratio is not None and float(ratio) != 1.0:
            raise ValueError(
                f"datasets.{n} gives both samples_per_epoch={value!r} and sample_ratio={ratio!r}: give one "
                "(the size is the weight)"
            )
    return sizes


def mixing_weights(blocks: Mapping[str, Mapping[str, Any]], names: Optional[Iterable[str]] = None) -> Dict[str, float]:
    """The mixer's weight of each dataset: its samples per epoch when sizes are given, else its ``sample_ratio``."""
    names = list(blocks) if names is None else list(names)
    sizes = epoch_sizes(blocks, names)
    if sizes is not None:
        return {n: float(sizes[n]) for n in names}
    return {n: float(blocks[n].get("sample_ratio", 1.0)) for n in names}
