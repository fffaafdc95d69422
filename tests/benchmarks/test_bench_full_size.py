"""bench_full_size on the tiny preset (the code the full-size GPU run takes, at CPU-second sizes)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import bench_full_size as bench  # noqa: E402


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_full_size") / "full_size_tiny.json"
    argv = [
        "--size",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "4",
        "--new-tokens",
        "5",
        "--gen-batch",
        "2",
        "--out",
        str(out),
    ]
    report = bench.main(argv)
    return report, out


def test_settings_follow_the_stage_and_eval_configs():
    full_train = bench.stage_settings("train", "full")
    assert (full_train["preset"], full_train["batch_size"], full_train["precision"]) == (
        "stage1_2_3",
        6,
        "bf16",
    )
    assert full_train["overrides"]["llm"]["lora_r"] == 64 and full_train["overrides"]["ckpt"] is None
    full_infer = bench.stage_settings("infer", "full")
    assert (
        full_infer["preset"] == "stage4" and full_infer["overrides"]["ckpt"] is None
    )  # no released file read
    assert bench.stage_settings("train", "tiny")["batch_size"] == 32


def test_train_part_runs_the_recipe_s_longest_sequences_and_learns(tiny_report):
    report, _ = tiny_report
    t = report["raw"]["train"]
    assert t["batch_size"] == 4 and len(t["step_s"]) == 2 and len(t["losses"]) == 3
    # every answer is cut at max_txt_len, then the one placeholder becomes the image tokens
    assert t["positions_per_step"] == 4 * (t["max_txt_len"] - 1 + t["image_tokens"])
    assert 0 < t["answer_tokens_per_step"] < t["positions_per_step"]
    assert all(math.isfinite(x) for x in t["losses"]) and t["losses"][-1] < t["losses"][0]
    assert t["samples_per_s"] == pytest.approx(4 / t["step_s_median"], rel=0.01)
    assert t["trainable_parameters"] < t["parameters"] and t["optimizer_state_mb"] > 0
    assert t["peak_rss_mb"] > 100
    assert t["llm_autocast"] == "off"  # fp32 on a CPU: the recorded state, not the config's word


def test_infer_part_generates_every_token(tiny_report):
    report, _ = tiny_report
    g = report["raw"]["infer"]
    assert (g["gen_batch"], g["new_tokens"], g["preset"], g["llm_autocast"]) == (2, 5, "tiny", "off")
    assert g["tokens_per_s"] == pytest.approx(10 / g["generate_s"], rel=0.01)


def test_report_rows_and_results_file(tiny_report):
    report, out = tiny_report
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "full_size_cpu" and saved["rows"] == report["rows"]
    metrics = [r["metric"] for r in saved["rows"]]
    assert metrics == [
        "stage-3 training step",
        "stage-3 training samples/s",
        "stage-3 training tokens/s",
        "stage-3 training peak memory",
        "inference tokens/s",
        "inference peak memory",
    ]
    memory = {r["metric"]: r for r in saved["rows"]}
    assert (
        "peak RSS" in memory["inference peak memory"]["note"]
        and "8 GB" in memory["inference peak memory"]["note"]
    )
    assert memory["stage-3 training peak memory"]["value"] == round(
        report["raw"]["train"]["peak_rss_mb"] / 1024, 2
    )


def test_the_llm_autocast_seen_is_recorded():
    import torch

    from minigpt.models import load_model

    model = load_model("tinygptv", "tiny")
    seen = bench.record_llm_autocast(model, torch.device("cpu"))
    samples = {
        "image": torch.rand(1, 3, 64, 64),
        "instruction_input": ["<Img><ImageHere></Img> hi"],
        "answer": ["a"],
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(samples)
    assert seen == {"llm_autocast": "bfloat16"}
    model(samples)
    assert seen == {"llm_autocast": "off"}


def test_gpu_rows_read_the_allocator_peaks():
    t = {
        "preset": "stage1_2_3",
        "config": "c.yaml",
        "batch_size": 6,
        "positions_per_step": 1146,
        "image_tokens": 32,
        "max_txt_len": 160,
        "precision": "bf16",
        "step_s": [0.5, 0.5],
        "step_s_median": 0.5,
        "trainable_parameters": 1,
        "parameters": 2,
        "samples_per_s": 12.0,
        "tokens_per_s": 2292.0,
        "answer_tokens_per_s": 1600.0,
        "peak_gpu_allocated_mb": 20480.0,
        "peak_gpu_reserved_mb": 22528.0,
        "peak_rss_mb": 3000.0,
        "weight_mb": 7500.0,
        "optimizer_state_mb": 700.0,
    }
    rows = {r["metric"]: r for r in bench.rows_of({"train": t}, "cuda")}
    peak = rows["stage-3 training peak memory"]
    assert (
        peak["value"] == 20.0
        and "max_memory_allocated" in peak["note"]
        and "reserved 22.0 GiB" in peak["note"]
    )
    assert "inference peak memory" not in rows


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--size", "huge"])
