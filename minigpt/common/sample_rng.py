"""Per-sample randomness: a sample's random augmentation is a function of the sample's key alone.

Random processors (``image_train``'s random resized crop, ``video_train``'s frame and window
choice) draw from the global RNGs of the process that reads the sample: torch's, and Python's or
NumPy's for any that use them. In a DataLoader worker those streams depend on which worker drew
the sample and on everything that worker read before, so a resumed run (whose workers start
afresh) would crop differently from the run it continues. Readers therefore read each training
sample inside :func:`seeded_sample`, keyed by what identifies the read: the run's seed, the
dataset, the epoch and the sample's index (map-style) or stream position (webdataset). The
process's own RNG streams are put back afterwards, so the main process's RNG (dropout, the
mixer) is the same whether or not a sample was read in it.
"""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch


def sample_seed(*key: Any) -> int:
    """A 64-bit seed from ``key`` (its parts joined as text and hashed): equal keys, equal seeds, in any process."""
    digest = hashlib.sha256(":".join(map(str, key)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


@contextmanager
def seeded_sample(*key: Any) -> Iterator[int]:
    """Inside: Python's, NumPy's and torch's CPU RNG seeded by :func:`sample_seed` of ``key``; after: as before.

    Only the CPU generator of torch is seeded (``torch.manual_seed`` would reseed the CUDA
    generators of the main process too); processors run on the CPU. Yields the seed.
    """
    seed = sample_seed(*key)
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    torch.default_generator.manual_seed(seed)
    try:
        yield seed
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
