"""bench_training_opts' FLOP part: what the vision feature cache skips, and the depth extension."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared_helpers import TOY_REAL_WIDTHS  # noqa: E402

from benchmarks import bench_training_opts as bench  # noqa: E402

# TinyGPT-V's stage-1 composition (EVA ViT -> frozen Q-Former -> linear layers -> Phi with LoRA) at toy
# widths: train_configs/tinygptv_stage1.yaml's model section with the real preset's parts made small
TOY_REAL = bench.model_overrides(bench.REAL_STAGE1.read_text(), bench.NO_WEIGHTS, TOY_REAL_WIDTHS)


def _with_depths(overrides, vision: int, llm: int):
    from omegaconf import OmegaConf

    depths = {"vision_encoder": {"depth": vision}, "llm": {"config": {"num_hidden_layers": llm}}}
    return OmegaConf.to_container(OmegaConf.merge(overrides, depths))


def test_tiny_stage1_cache_skips_exactly_the_encoder_forward():
    f = bench.step_flops("tiny", bench.model_overrides(bench.STAGE1), "one shape: a red circle at the top.")
    assert f["point"] == "vision_encoder" and f["feature_shape"] == [64, 128]
    assert f["prefix"] > 0 and f["warm_cache"] > 0
    # the frozen encoder runs forward only; everything after it is the same work with or without the cache
    assert f["no_cache"] - f["warm_cache"] == pytest.approx(f["prefix"], rel=1e-12)
    assert f["image_tokens"] == 16 and 16 < f["seq_len"] and 0 < f["label_tokens"] < f["seq_len"] - 16


def test_stage1_composition_caches_after_the_frozen_qformer():
    f = bench.step_flops("stage1_2_3", _with_depths(TOY_REAL, 1, 1))
    assert f["point"] == "projector_prefix"
    assert f["feature_shape"] == [4, 16]  # the Q-Former's query outputs, not the ViT's patch tokens
    assert f["no_cache"] - f["warm_cache"] == pytest.approx(f["prefix"], rel=1e-12)
    # stage 1 caps the text at max_txt_len (32), image slots not counted
    assert f["seq_len"] - f["image_tokens"] <= 32


def test_depth_extension_equals_the_count_at_that_depth():
    extended = bench.extrapolated_step_flops("stage1_2_3", TOY_REAL, vision_depth=4, llm_layers=3)
    direct = bench.step_flops("stage1_2_3", _with_depths(TOY_REAL, 4, 3))
    for key in ("no_cache", "warm_cache", "prefix"):
        assert extended[key] == pytest.approx(direct[key], rel=1e-12), key
    assert extended["warm_cache_per_vision_block"] == 0 and extended["prefix_per_llm_layer"] == 0
    assert extended["no_cache_per_llm_layer"] > 0 and extended["prefix_per_vision_block"] > 0


def test_rows_report_the_ceiling_as_the_count_ratio():
    f = {
        "no_cache": 3.0e9,
        "warm_cache": 2.0e9,
        "prefix": 1.0e9,
        "point": "projector_prefix",
        "feature_shape": [32, 768],
        "seq_len": 63,
        "image_tokens": 32,
        "label_tokens": 14,
        "vision_depth": 39,
        "llm_layers": 32,
    }
    rows = {r["metric"]: r for r in bench.rows_of({"batch_size": 32, "flops": {"real_size_stage1": f}})}
    assert rows["vision feature cache FLOP ceiling [real_size_stage1]"]["value"] == 1.5
    assert rows["stage-1 step FLOPs, no cache [real_size_stage1]"]["value"] == 3.0
    assert "39-block EVA ViT-g" in rows["stage-1 step FLOPs, no cache [real_size_stage1]"]["note"]
    assert "Q-Former" in rows["stage-1 step FLOPs, warm cache [real_size_stage1]"]["note"]


def test_row_notes_name_the_frozen_parts_from_the_stage_yaml():
    assert bench._trained(bench.STAGE1) == "vision_encoder and llm frozen, the rest trains"
    assert bench._trained(bench.STAGE4) == "vision_encoder frozen, the rest trains"  # quickstart stage 4
    assert bench._trained("model: {arch: tinygptv, model_type: tiny}") == "every part trains"
