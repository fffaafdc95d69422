"""Random processing of training samples depends on the sample, not on the worker process or its history."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from minigpt.common.registry import registry
from minigpt.common.sample_rng import sample_seed, seeded_sample
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.processors.image import ImageTrainProcessor
from minigpt.runners.data import InfiniteLoader


class Dice(Dataset):
    """``n`` text samples whose answer records a draw of torch's, Python's and NumPy's global RNGs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict:
        draws = f"{torch.rand(()).item():.8f} {random.random():.8f} {np.random.rand():.8f}"
        return {"image": None, "instruction_input": "q", "answer": draws, "sample_id": f"dice:{index}"}


def _rng_states() -> Tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _same_states(a: Tuple, b: Tuple) -> bool:
    return torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


def test_seeded_sample_is_a_function_of_its_key_and_puts_the_callers_rng_back():
    assert sample_seed(42, "coco", 0, 7) == sample_seed(42, "coco", 0, 7) != sample_seed(42, "coco", 1, 7)
    torch.manual_seed(0)
    before = _rng_states()
    with seeded_sample(42, "coco", 0, 7):
        first = (torch.rand(3), random.random(), np.random.rand())
    assert _same_states(_rng_states(), before)
    torch.rand(5), random.random(), np.random.rand()  # whatever ran in this process before
    with seeded_sample(42, "coco", 0, 7):
        again = (torch.rand(3), random.random(), np.random.rand())
    with seeded_sample(42, "coco", 1, 7):
        other = torch.rand(3)
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    assert not torch.equal(first[0], other)


def _answers(loader: InfiniteLoader, batches: int) -> List[Tuple[str, str]]:
    return [pair for _ in range(batches) for pair in zip(*(lambda b: (b["sample_id"], b["answer"]))(next(loader)))]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_style_draws_depend_on_sample_and_epoch_only(num_workers):
    # 10 samples, batches of 2: 5 batches an epoch; 8 batches cross into epoch 1
    plain = _answers(InfiniteLoader(Dice(10), 2, 0, seed=3, rank=0, world_size=1), 8)
    torch.manual_seed(123)
    before = _rng_states()
    loader = InfiniteLoader(Dice(10), 2, num_workers, seed=3, rank=0, world_size=1)
    got = _answers(loader, 8)
    # workers or not, the same draws; reading (or starting workers) left this process's RNG alone
    assert got == plain
    assert _same_states(_rng_states(), before)
    # epoch 1 redraws the samples it repeats
    by_epoch = [dict(got[:10]), dict(got[10:])]
    assert all(by_epoch[0][sid] != draws for sid, draws in by_epoch[1].items())
    # a new loader (fresh workers) resumed mid-epoch draws what the first one drew
    resumed = InfiniteLoader(Dice(10), 2, num_workers, seed=3, rank=0, world_size=1)
    halfway = InfiniteLoader(Dice(10), 2, num_workers, seed=3, rank=0, world_size=1)
    _answers(halfway, 3)
    resumed.load_state_dict(halfway.state_dict())
    assert _answers(resumed, 5) == plain[6:16]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crops")
    generate_synthetic_dataset(root / "synthetic", n_train=12, n_test=2, seed=0, shard_size=3, progress=False)
    return root


def _cropped_stream(root: Path, num_workers: int) -> InfiniteLoader:
    builder = registry.get_builder_class("synthetic_caption_wds")({"build_info": {"shuffle_buffer": 4}}, str(root))
    stream = builder.build_datasets(["train"])["train"]
    stream.vis_processor = ImageTrainProcessor(image_size=32, min_scale=0.2)
    return InfiniteLoader(stream, 2, num_workers, seed=5, name="wds")


def _images(loader: InfiniteLoader, batches: int) -> List[Tuple[str, torch.Tensor]]:
    return [pair for _ in range(batches) for pair in (lambda b: zip(b["sample_id"], b["image"]))(next(loader))]


def test_stream_crops_are_the_same_after_a_resume_with_fresh_workers(shards):
    first = _cropped_stream(shards, 2)
    _images(first, 3)  # an odd count: the resumed loader's worker 0 plays the old worker 1
    state = first.state_dict()
    expected = _images(first, 6)
    resumed = _cropped_stream(shards, 2)
    resumed.load_state_dict(state)
    got = _images(resumed, 6)
    assert [sid for sid, _ in got] == [sid for sid, _ in expected]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, expected))
    # the crops are random: a sample seen again in a later epoch is cropped anew
    seen: Dict[str, torch.Tensor] = {}
    repeats = 0
    for sid, image in _images(_cropped_stream(shards, 2), 12):  # 24 samples: two passes over 12
        if sid in seen:
            repeats += 1
            assert not torch.equal(seen[sid], image), sid
        seen[sid] = image
    assert repeats >= 6
