"""Seeded random streams of the synthetic world: every image and text field draws from its own stream,
so what is generated does not depend on the order or the number of workers."""

from __future__ import annotations

import hashlib
import random
from typing import Any, List, Sequence

_SPLIT_IDS = {"train": 0, "test": 1}


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()


def stream_rng(seed: int, split: str, index: int, stream: str) -> random.Random:
    """A ``random.Random`` for one image's named stream; train and test never share a stream."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_IDS)}")
    return random.Random(
        int.from_bytes(_digest("minigpt.synthetic_shapes", seed, split, index, stream), "big")
    )


def balanced_coin(seed: int, split: str, index: int, tag: str) -> bool:
    """A fair coin that comes out exactly balanced over each pair of consecutive images.

    Images ``2j`` and ``2j+1`` get opposite answers, and which one gets "yes" is random, so yes/no
    stays 50/50 over any run of images while staying unpredictable from the index.
    """
    pair_bit = _digest("minigpt.synthetic_shapes.coin", seed, split, index // 2, tag)[0] & 1
    return bool(pair_bit ^ (index & 1))


def randint(rng: random.Random, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi], built on ``random()`` alone so it never changes between Pythons."""
    return lo + min(int(rng.random() * (hi - lo + 1)), hi - lo)


def choice(rng: random.Random, seq: Sequence[Any]) -> Any:
    if not seq:
        raise ValueError("cannot choose from an empty sequence")
    return seq[randint(rng, 0, len(seq) - 1)]


def shuffled(rng: random.Random, seq: Sequence[Any]) -> List[Any]:
    out = list(seq)
    for i in range(len(out) - 1, 0, -1):
        j = randint(rng, 0, i)
        out[i], out[j] = out[j], out[i]
    return out


def sample(rng: random.Random, seq: Sequence[Any], k: int) -> List[Any]:
    """``k`` distinct items in random order (a partial Fisher-Yates shuffle)."""
    out = list(seq)
    for i in range(k):
        j = randint(rng, i, len(out) - 1)
        out[i], out[j] = out[j], out[i]
    return out[:k]
