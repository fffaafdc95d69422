"""bench_vs_llava at a tiny size: the two models are the same network, and the report has every figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import bench_vs_llava as bench  # noqa: E402

SHAPE = bench.SHAPES["tiny"]


@pytest.fixture(scope="module")
def pair():
    ours = bench.build_ours(SHAPE)
    llava = bench.build_llava(SHAPE, bench.token_ids(ours))
    bench.copy_weights(ours, llava)
    return ours, llava


def test_same_shapes_and_trainable_set(pair):
    ours, llava = pair
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    # the one difference: ours' LM head has a (zeroed, trained) bias of vocab_size entries
    assert trainable(ours) == trainable(llava) + SHAPE.vocab_size
    assert sum(p.numel() for p in ours.vision_encoder.parameters() if p.requires_grad) == 0
    assert ours.num_image_tokens() == SHAPE.num_patches == llava.config.image_seq_length
    assert bench.attn_implementations(ours, llava) == dict.fromkeys(
        ("ours.vision", "ours.llm", "llava.vision", "llava.llm"), "sdpa"
    )


def test_identity_of_logits_and_loss(pair):
    ours, llava = pair
    samples = bench.train_samples(SHAPE)
    report = bench.check_identity(ours, llava, samples)
    b = SHAPE.train_batch
    assert report["logits_shape"][0] == b and report["logits_shape"][2] == SHAPE.vocab_size
    assert report["image_tokens"] == SHAPE.num_patches and report["labelled_tokens"] > 0
    assert report["max_abs_logit_diff"] <= bench.TOLERANCE and report["abs_loss_diff"] <= bench.TOLERANCE


def test_identity_check_catches_a_different_weight(pair):
    ours, llava = pair
    with torch.no_grad():
        llava.lm_head.weight[:, 0].add_(0.01)
    try:
        with pytest.raises(bench.IdentityError, match="disagree"):
            bench.check_identity(ours, llava, bench.train_samples(SHAPE))
    finally:
        bench.copy_weights(ours, llava)


def test_greedy_generation_gives_the_same_text_on_both_sides(pair):
    ours, llava = pair
    images, prompts = bench.gen_prompts(SHAPE, 2)
    ours_text = bench.ours_generate(ours.eval(), images, prompts, 6)()
    inputs = bench.llava_inputs(ours, prompts, None, images)
    ids = bench.llava_generate(llava.eval(), inputs, 6, torch.device("cpu"))()[
        :, inputs["input_ids"].shape[1] :
    ]
    assert ids.shape == (2, 6)
    assert ours_text == [t.strip() for t in ours.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def test_report_json_has_every_required_figure(tmp_path):
    report = bench.main(
        [
            "--size",
            "tiny",
            "--repeats",
            "1",
            "--gen-repeats",
            "1",
            "--warmup",
            "0",
            "--no-data",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["rows"] == report["rows"]
    assert set(on_disk) >= {"benchmark", "machine", "date", "rows", "raw"}
    assert on_disk["benchmark"] == "bench_vs_llava"
    assert {"cpu", "cores", "torch", "device"} <= set(on_disk["machine"])
    metrics = [r["metric"] for r in on_disk["rows"]]
    missing = [m for m in bench.expand_required(SHAPE) if m not in metrics]
    assert not missing
    assert len(metrics) == len(set(metrics))
    for r in on_disk["rows"]:
        assert set(r) == {"metric", "value", "unit", "note"}
        assert isinstance(r["value"], (int, float)) and r["value"] > 0, r
    raw = on_disk["raw"]
    assert raw["identity"]["max_abs_logit_diff"] <= bench.TOLERANCE
    assert all(g["same_text_as_hf_generate"] for g in raw["generation"].values())
    assert all(g["same_text_as_forward_steps"] for g in raw["generation"].values())
    assert all(g["same_text_as_full_prefill"] for g in raw["generation"].values())
    ratios = [r for r in on_disk["rows"] if "_ratio" in r["metric"] or r["metric"].startswith("mfu.")]
    assert len(ratios) == 5 and all("per round: median" in r["note"] for r in ratios)
    assert len(raw["train_step_s"]["matmul_peak"]) == 1 and len(raw["mfu_rounds"]["ours"]) == 1
    assert len(raw["train_step_s"]["ours"]) == 1 and set(raw["memory"]) == {"ours", "llava"}


def test_mfu_divides_each_round_by_that_rounds_matmul_rate():
    # round 2 ran everything at half speed: its step and its matmul both took twice as long
    steps, mms = [1.0, 2.0, 1.2], [0.5, 1.0, 0.5]
    assert bench.round_mfu(10.0, steps, 10.0, mms) == pytest.approx(0.5)  # per round: 0.5, 0.5, 0.42
    assert bench.round_mfu(10.0, [2.0, 4.0, 2.4], 10.0, mms) == pytest.approx(0.25)  # steps twice as slow
    run, flops = bench.matmul_round(torch.device("cpu"), 32)
    run()
    assert flops == bench.MATMUL_ROUND_REPEATS * 2 * 32**3


def test_train_flops_count_the_parts():
    f = bench.train_step_flops(SHAPE, 2, 40)
    assert f["total"] == pytest.approx(sum(v for k, v in f.items() if k != "total"))
    # twice the batch, twice the FLOPs; the LM head grows with the vocabulary only
    assert bench.train_step_flops(SHAPE, 4, 40)["total"] == pytest.approx(2 * f["total"])
    assert f["lm_head"] == pytest.approx(2 * 3 * 2 * 40 * SHAPE.llm_hidden * SHAPE.vocab_size)


def test_cpu_clock_needs_one_thread_and_is_recorded(tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="one torch thread"):
            bench.run("tiny", repeats=1, gen_repeats=1, warmup=0, with_memory=False, with_data=False, clock="cpu")
        torch.set_num_threads(1)
        report = bench.run("tiny", repeats=1, gen_repeats=1, warmup=0, with_memory=False, with_data=False, clock="cpu")
    finally:
        torch.set_num_threads(threads)
    assert report["raw"]["clock"] == "cpu" and report["raw"]["threads"] == 1
    step = next(r for r in report["rows"] if r["metric"] == "train_step_s.ours")
    assert "cpu clock, 1 thread" in step["note"] and step["value"] > 0


def test_spread_gives_quartiles_and_range_of_the_rounds():
    assert bench.spread([1.5, 1.0, 2.0, 1.25, 1.75], 2) == "per round: median 1.50, IQR 1.25-1.75, range 1.00-2.00, 5 rounds"
    assert bench.spread([1.2]) == "per round: median 1.200, IQR 1.200-1.200, range 1.200-1.200, 1 round"
    # a round's ratio pairs the two sides' times of that round, not the sorted lists
    assert bench.round_ratios([2.0, 4.0], [1.0, 4.0]) == [2.0, 1.0]
