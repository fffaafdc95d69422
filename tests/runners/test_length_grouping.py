"""Length- and modality-grouped batching: batches really grouped, every sample as often as before, seeded, resumable."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
from shared_helpers import record_train_batches
from torch.utils.data import Dataset

from minigpt.common.io import DatasetError
from minigpt.common.registry import registry
from minigpt.models import load_model
from minigpt.runners.checkpointing import DATA_STATE, load_training_state
from minigpt.runners.data import InfiniteLoader, MixedLoader
from minigpt.runners.length_grouping import (
    LengthGroupedBatchSampler,
    padding_fraction,
    scan_lengths,
    token_lengths,
)
from minigpt.runners.stage import run_stage


def _data(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [rng.randint(5, 200) for _ in range(n)], [rng.random() < 0.7 for _ in range(n)]


class Toy(Dataset):
    """Text samples ``<name>:<index>`` whose answer length is ``lengths[index]`` words."""

    def __init__(self, name: str, lengths: List[int]) -> None:
        self.name, self.lengths = name, lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> Dict:
        return {
            "image": None,
            "instruction_input": "q",
            "answer": "w " * self.lengths[index],
            "sample_id": f"{self.name}:{index}",
        }


def test_batches_hold_one_modality_and_neighbouring_lengths_and_each_sample_once_per_epoch():
    lengths, has_image = _data(1000)
    bs = 8
    sampler = LengthGroupedBatchSampler(lengths, has_image, bs, seed=3, group_batches=10)
    batches = list(sampler)
    n_img, n_txt = sum(has_image), len(has_image) - sum(has_image)
    assert len(batches) == n_img // bs + n_txt // bs == len(sampler)
    seen = Counter(i for b in batches for i in b)
    assert max(seen.values()) == 1
    assert (
        sum(has_image[i] for i in seen) == n_img - n_img % bs
    )  # only the partial last batch of each modality
    for b in batches:
        assert len(b) == bs and len({has_image[i] for i in b}) == 1
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    shuffled = list(range(1000))
    random.Random(0).shuffle(shuffled)
    plain = [shuffled[k : k + bs] for k in range(0, 1000 - bs + 1, bs)]
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < plain_spread / 5, (spread, plain_spread)
    # the batches are shuffled, not served shortest- or longest-first
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_the_same_seed_and_epoch_give_the_same_batches_and_start_skips_exactly():
    lengths, has_image = _data(300)
    a = LengthGroupedBatchSampler(lengths, has_image, 4, seed=1)
    b = LengthGroupedBatchSampler(lengths, has_image, 4, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(b) != list(a)
    assert list(LengthGroupedBatchSampler(lengths, has_image, 4, seed=2)) != list(a)
    a.set_epoch(1)
    a.start = 5
    assert list(a) == list(b)[5:]


def test_ranks_split_each_step_and_together_cover_it():
    lengths, has_image = _data(500)
    per_rank = [
        list(LengthGroupedBatchSampler(lengths, has_image, 4, num_replicas=2, rank=r, seed=7)) for r in (0, 1)
    ]
    assert len(per_rank[0]) == len(per_rank[1])
    steps = LengthGroupedBatchSampler(lengths, has_image, 4, num_replicas=2, seed=7).global_batches(0)
    for k, step in enumerate(steps):
        assert per_rank[0][k] + per_rank[1][k] == step
    assert not {i for b in per_rank[0] for i in b} & {i for b in per_rank[1] for i in b}


def _grouped_loader(name: str, lengths: List[int], seed: int, num_workers: int = 0) -> InfiniteLoader:
    return InfiniteLoader(
        Toy(name, lengths),
        3,
        num_workers,
        seed=seed,
        rank=0,
        world_size=1,
        lengths=lengths,
        has_image=[False] * len(lengths),
        group_batches=4,
    )


def _draw(mixer: MixedLoader, n: int) -> List[str]:
    return [sid for _ in range(n) for sid in next(mixer)["sample_id"]]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_grouped_mixture_keeps_its_ratios_and_resumes_the_same_sequence(num_workers):
    ratios = {"a": 0.6, "b": 0.4}
    sizes = {"a": _data(60, 1)[0], "b": _data(30, 2)[0]}

    def mixer() -> MixedLoader:
        return MixedLoader(
            {n: _grouped_loader(n, sizes[n], 10 + i, num_workers) for i, n in enumerate(sizes)},
            ratios,
            seed=5,
        )

    ids = _draw(mixer(), 400)
    counts = Counter(sid.split(":")[0] for sid in ids)
    assert abs(counts["a"] / len(ids) - 0.6) < 0.06
    # whole epochs of "a": every sample equally often
    per_sample = Counter(sid for sid in ids if sid.startswith("a:"))
    assert len(per_sample) == 60 and max(per_sample.values()) - min(per_sample.values()) <= 1

    first = mixer()
    _draw(first, 37)  # mid-epoch in both datasets
    state = first.state_dict()
    assert state["loaders"]["a"]["grouped"] is True
    expected = _draw(first, 50)
    resumed = mixer()
    resumed.load_state_dict(state)
    assert _draw(resumed, 50) == expected


@pytest.fixture(scope="module")
def llava(data_root):
    return registry.get_builder_class("synthetic_llava")({}, data_root=str(data_root)).build_datasets(
        ["train"]
    )["train"]


def test_lengths_are_scanned_without_decoding_images(llava, monkeypatch):
    import minigpt.datasets.datasets.base_dataset as base

    tokenizer = load_model("tinygptv", "tiny").tokenizer
    expected = token_lengths(tokenizer)([llava[i] for i in range(40)])

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded while scanning lengths")

    monkeypatch.setattr(base, "open_image", no_decoding)
    lengths, has_image = scan_lengths(llava, token_lengths(tokenizer), "synthetic_llava")
    assert lengths[:40] == expected and len(lengths) == len(llava) and all(has_image)


def test_a_reader_error_while_scanning_counts_as_an_empty_sample_of_the_dataset_modality():
    class Broken(Toy):
        read_images = False

        def __getitem__(self, index):
            if index == 2:
                raise DatasetError("bad record")
            return super().__getitem__(index)

    lengths, has_image = scan_lengths(Broken("x", [3, 4, 5, 6]))
    assert lengths[2] == 0 and has_image == [False, False, False, False]
    assert lengths[3] == len("q " + "w " * 6)  # characters, without a tokenizer


def test_grouping_cuts_the_padding_of_llava_conversations(llava):
    model = load_model("tinygptv", "tiny")
    lengths, has_image = scan_lengths(llava, token_lengths(model.tokenizer), "synthetic_llava")

    def mean_padding(**grouping) -> float:
        loader = InfiniteLoader(llava, 8, 0, seed=0, rank=0, world_size=1, **grouping)
        fractions = []
        for _ in range(10):
            batch = next(loader)
            inputs = model.build_inputs(batch["instruction_input"], batch["answer"], model.num_image_tokens())
            fractions.append(padding_fraction(inputs["attention_mask"]))
        return sum(fractions) / len(fractions)

    plain, grouped = mean_padding(), mean_padding(lengths=lengths, has_image=has_image, group_batches=20)
    assert grouped < plain * 0.6, (grouped, plain)


def test_the_runner_resumes_a_grouped_run_on_the_same_sequence(stage_from_yaml, tmp_path, monkeypatch):
    yaml = (
        "model: {arch: tinygptv, model_type: tiny, template: llama2_inst}\n"
        "datasets:\n"
        "  synthetic_llava: {sample_ratio: 2.0}\n"
        "  synthetic_refcoco: {sample_ratio: 1.0}\n"
        "run: {stage_name: grouped, warmup_steps: 0, lr_sched: constant_lr, group_by_length: true,"
        " length_group_batches: 4}\n"
    )
    seen = record_train_batches(monkeypatch)

    def stage(out: Path, steps: int, *extra: str) -> Dict:
        return run_stage(stage_from_yaml(yaml, out, steps, "run.test_splits=[]", "run.num_workers=0", *extra))

    stage(tmp_path / "straight", 6)
    straight, seen[:] = list(seen), []
    stage(tmp_path / "split", 3)
    position = load_training_state(str(tmp_path / "split" / "checkpoints" / "step_000003"))[DATA_STATE]
    assert all(p["grouped"] for p in position["ranks"][0]["loaders"].values())
    seen.clear()
    stage(tmp_path / "split", 6, "run.resume_ckpt_path=auto")
    assert seen == straight[3:]
    assert {sid.split(":")[0] for batch in straight for sid in batch} == {
        "synthetic_llava",
        "synthetic_refcoco",
    }
