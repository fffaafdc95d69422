"""The synthetic drawing requests, their judge, the synthetic_drawing builder and the creation scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minigpt.common.constants import DREAM_TOKEN
from minigpt.datasets.builders.dream_builders import SyntheticDrawingBuilder
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.synthetic import generate_synthetic_dataset, is_complete
from minigpt.datasets.synthetic.draw_judge import NONE, judge_drawing
from minigpt.datasets.synthetic.draw_prompts import QUADRANTS, make_request
from minigpt.datasets.synthetic.scenes import COLOURS
from minigpt.tasks.evaluation.records import EvalRecord
from minigpt.tasks.evaluation.scorers import SAMPLES_SCORER


def test_requests_name_their_image_and_the_judge_reads_it_back_at_16_px():
    rows = [make_request(0, "test", i, 64) for i in range(120)]
    assert {r["colour"] for r, _ in rows} == set(COLOURS) and {r["quadrant"] for r, _ in rows} == set(QUADRANTS)
    for row, _ in rows[:10]:
        assert row["colour"] in row["prompt"] and row["kind"] in row["prompt"] and row["quadrant"] in row["prompt"]
        assert row["answer"] == DREAM_TOKEN
    hits = [judge_drawing(np.asarray(img.resize((16, 16), 3))) == (r["colour"], r["quadrant"]) for r, img in rows]
    assert np.mean(hits) >= 0.97
    assert make_request(0, "test", 5, 64)[0] == rows[5][0]  # seeded: the same request again
    assert make_request(0, "train", 5, 64)[0]["image"] != rows[5][0]["image"]


def test_the_judge_says_none_for_a_blank_image_and_is_at_chance_on_noise():
    assert judge_drawing(np.full((16, 16, 3), 240, dtype=np.uint8)) == (NONE, NONE)
    rng = np.random.default_rng(0)
    requests = [make_request(0, "test", i, 64)[0] for i in range(300)]
    verdicts = [judge_drawing(rng.random((16, 16, 3))) for _ in requests]
    colour = np.mean([v[0] == r["colour"] for v, r in zip(verdicts, requests)])
    quadrant = np.mean([v[1] == r["quadrant"] for v, r in zip(verdicts, requests)])
    assert colour < 0.30 and quadrant < 0.40  # chance: 1/6 and 1/4
    with pytest.raises(ValueError, match="H, W, 3"):
        judge_drawing(np.zeros((3, 16, 16)))


def test_generator_writes_requests_only_when_asked(tmp_path):
    plain = generate_synthetic_dataset(tmp_path / "a", n_train=4, n_test=2, progress=False)
    assert "creation_train" not in plain["files"] and "creation" not in plain
    asked = generate_synthetic_dataset(tmp_path / "b", n_train=4, n_test=2, progress=False,
                                       creation={"train": 6, "test": 3})
    assert asked["counts"]["creation_train"] == 6 and asked["counts"]["creation_test"] == 3
    rows = json.loads((tmp_path / "b" / asked["files"]["creation_test"]).read_text())
    assert len(rows) == 3 and all((tmp_path / "b" / r["image"]).is_file() for r in rows)
    assert is_complete(tmp_path / "b", 4, 2, 0, creation={"train": 6, "test": 3})
    assert not is_complete(tmp_path / "b", 4, 2, 0, creation={"train": 7, "test": 3})
    assert not is_complete(tmp_path / "a", 4, 2, 0, creation={"train": 6, "test": 3})


def test_builder_gives_requests_with_targets_in_minus_one_to_one(data_root):
    ds = SyntheticDrawingBuilder({}, data_root=str(data_root)).build_datasets(["train"])["train"]
    sample = ds[0]
    assert sample["image"] is None and sample["answer"] == DREAM_TOKEN and sample["task"] == "creation"
    assert "<ImageHere>" not in sample["instruction_input"]
    target = sample["target_image"]
    assert target.shape == (3, 64, 64) and float(target.min()) >= -1.0 and float(target.max()) <= 1.0
    assert set(sample["drawing"]) == {"colour", "kind", "quadrant"}
    batch = collate_samples([ds[0], ds[1]])
    assert batch["target_image"].shape == (2, 3, 64, 64) and batch["image"] is None
    mixed = collate_samples([ds[0], {"image": None, "instruction_input": "hi", "answer": "yo", "target_image": None}])
    assert isinstance(mixed["target_image"], list) and mixed["target_image"][1] is None


def test_creation_scorer_counts_colour_and_quadrant():
    def record(i, colour, quadrant):
        target = {"sample_id": str(i), "task": "creation", "answer": DREAM_TOKEN,
                  "drawing": {"colour": colour, "kind": "circle", "quadrant": quadrant}}
        return EvalRecord(str(i), None, "draw", target)

    records = [record(0, "red", "top left"), record(1, "blue", "top right"), record(2, "green", "bottom left")]
    predictions = ["red|top left", "blue|bottom right", "not drawn|not drawn"]
    rows = [SAMPLES_SCORER.score(r, p) for r, p in zip(records, predictions)]
    figures = SAMPLES_SCORER.aggregate(records, rows)
    assert figures["creation_colour_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert figures["creation_quadrant_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert figures["creation_both_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert figures["creation_drawn_rate"] == pytest.approx(2 / 3, abs=1e-4)


def test_random_init_dreamllm_draws_at_chance_for_the_judge():
    from minigpt.models import load_model

    torch.manual_seed(0)
    model = load_model("dreamllm", "tiny", is_eval=True)
    requests = [make_request(0, "test", i, 64)[0] for i in range(48)]
    images = model.draw([r["prompt"] for r in requests], steps=5, generator=torch.Generator().manual_seed(0))
    verdicts = [judge_drawing(img.permute(1, 2, 0).numpy()) for img in images]
    colour = np.mean([v[0] == r["colour"] for v, r in zip(verdicts, requests)])
    quadrant = np.mean([v[1] == r["quadrant"] for v, r in zip(verdicts, requests)])
    assert colour <= 0.35 and quadrant <= 0.45, (colour, quadrant)  # chance: 0.17 and 0.25
