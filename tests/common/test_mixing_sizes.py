"""Mixing by samples-per-epoch sizes ("5k", "20M") next to sample_ratio: parsing, rules, the runners."""

from __future__ import annotations

import pytest

from minigpt.common.config import Config
from minigpt.common.config.errors import ConfigError
from minigpt.common.mixing import epoch_sizes, mixing_weights, parse_size


@pytest.mark.parametrize("value, n", [(5000, 5000), ("5k", 5000), ("5K", 5000), ("1.5M", 1_500_000),
                                      ("20M", 20_000_000), ("2B", 2_000_000_000), (" 12 ", 12), (3.0, 3)])
def test_sizes_read_as_counts(value, n):
    assert parse_size(value, "datasets.x.samples_per_epoch") == n


@pytest.mark.parametrize("value", ["20X", "M", "-5k", "1.5", "0", 0, True, "1.2345k", [5], "5 k m", float("inf")])
def test_malformed_sizes_are_errors_naming_the_key(value):
    with pytest.raises(ValueError, match=r"datasets\.x\.samples_per_epoch"):
        parse_size(value, "datasets.x.samples_per_epoch")


def test_sizes_weigh_the_mixer_and_are_all_or_nothing():
    blocks = {"a": {"samples_per_epoch": "20M", "sample_ratio": 1.0}, "b": {"samples_per_epoch": "5M"}}
    assert mixing_weights(blocks) == {"a": 20e6, "b": 5e6}
    assert epoch_sizes({"a": {"sample_ratio": 2.0}, "b": {}}) is None
    assert mixing_weights({"a": {"sample_ratio": 2.0}, "b": {}}) == {"a": 2.0, "b": 1.0}
    with pytest.raises(ValueError, match="datasets a give samples_per_epoch but b do not"):
        mixing_weights({"a": {"samples_per_epoch": "5k"}, "b": {"sample_ratio": 1.0}})
    # a dataset that does not train (names leaves it out) needs no size
    assert mixing_weights({"a": {"samples_per_epoch": "5k"}, "b": {}}, ["a"]) == {"a": 5000.0}
    with pytest.raises(ValueError, match="both samples_per_epoch='5k' and sample_ratio=0.3"):
        epoch_sizes({"a": {"samples_per_epoch": "5k", "sample_ratio": 0.3}})


def _cfg(tmp_path, vqa_size, caption_size, *options):
    path = tmp_path / "sizes.yaml"
    path.write_text(
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets:\n"
        f"  synthetic_vqa: {{samples_per_epoch: {vqa_size}}}\n"
        f"  synthetic_coco_caption: {{samples_per_epoch: {caption_size}}}\n"
        "run: {stage_name: sizes, warmup_steps: 0}\n"
    )
    return path


def test_a_malformed_size_in_a_config_names_the_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"sizes\.yaml.*datasets\.synthetic_vqa\.samples_per_epoch.*'20X'"):
        Config(_cfg(tmp_path, "20X", "5k"))
    with pytest.raises(ConfigError, match="--options.*datasets.synthetic_coco_caption.samples_per_epoch"):
        Config(_cfg(tmp_path, "20k", "5k"), ["datasets.synthetic_coco_caption.samples_per_epoch=abc"])


def test_runner_epoch_makes_an_epoch_of_the_sizes_and_draws_both(tmp_path, tiny_options, monkeypatch):
    from shared_helpers import record_train_batches

    from minigpt.runners.stage import run_stage

    seen = record_train_batches(monkeypatch)
    # 12 + 4 samples per epoch in batches of 4: 3 + 1 = 4 steps an epoch, whatever the files hold (200 images)
    opts = [*tiny_options(tmp_path / "out"), "run.runner=runner_epoch", "run.max_epoch=2", "run.test_splits=[]"]
    summary = run_stage(Config(_cfg(tmp_path, 12, "0.004k"), opts))
    assert summary["steps"] == 8
    assert {sid.split(":")[0] for batch in seen for sid in batch} <= {"synthetic_vqa", "synthetic_coco_caption"}
    assert len(seen) == 8
