"""Text-to-image evaluation: FID from statistics files, CLIP score, and eval_t2i.py resuming and scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minigpt.common.t2i import build_t2i
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.evaluation.t2i_eval import main, read_prompts
from minigpt.evaluation.t2i_metrics import (
    ClipScorer,
    MetricInputError,
    build_features,
    feature_stats,
    features_of,
    frechet_distance,
    load_stats,
    save_stats,
)
from minigpt.tasks.evaluation.records import BenchmarkDataError


def test_frechet_distance_is_zero_for_equal_statistics_and_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu, sigma = feature_stats(rng.normal(size=(200, 5)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    # one dimension: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    got = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert got == pytest.approx(4.0 + 4.0 + 9.0 - 2.0 * 6.0)
    with pytest.raises(MetricInputError, match="same feature network"):
        frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])


def test_statistics_files_round_trip_and_bad_ones_are_named(tmp_path):
    path = str(tmp_path / "ref.npz")
    save_stats(path, np.zeros(3), np.eye(3))
    mu, sigma = load_stats(path)
    assert mu.shape == (3,) and np.array_equal(sigma, np.eye(3))
    with pytest.raises(MetricInputError, match="not found"):
        load_stats(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "half.npz", mu=np.zeros(3))
    with pytest.raises(MetricInputError, match=r"half\.npz lacks sigma"):
        load_stats(str(tmp_path / "half.npz"))
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(MetricInputError, match="are not"):
        load_stats(str(tmp_path / "shape.npz"))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(MetricInputError, match="not a readable"):
        load_stats(str(tmp_path / "text.npz"))


def test_feature_specs_are_checked_and_the_inception_file_is_never_fetched(tmp_path):
    with pytest.raises(MetricInputError, match="nothing is downloaded"):
        build_features(f"torchscript:{tmp_path / 'inception.pt'}")
    for bad in ("random:x", "random:0", "inception", "random"):
        with pytest.raises(MetricInputError, match="--features"):
            build_features(bad)


def test_a_torchscript_feature_file_is_called_with_return_features(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[-1] == 299
            return x.float().mean((2, 3)) if return_features else x.float().sum()

    path = tmp_path / "net.pt"
    torch.jit.script(Net()).save(str(path))
    images = build_t2i({"name": "synthetic_shapes"})(["one shape: a red circle at the top."] * 2)
    feats = features_of(images, build_features(f"torchscript:{path}"))
    assert feats.shape == (2, 3)


def test_fid_with_random_features_prefers_the_right_drawings_to_empty_ones(synthetic):
    root, captions = synthetic
    from PIL import Image

    real = [Image.open(p).convert("RGB") for p in sorted((root / "images" / "test").glob("*.jpg"))]
    features = build_features("random:32:1")
    ref = feature_stats(features_of(real, features))
    t2i = build_t2i({"name": "synthetic_shapes"})
    drawn = frechet_distance(*feature_stats(features_of(t2i(captions), features)), *ref)
    empty = frechet_distance(*feature_stats(features_of(t2i(["nothing"] * len(captions)), features)), *ref)
    assert drawn < empty


# -- the script ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i") / "synthetic"
    generate_synthetic_dataset(root, n_train=2, n_test=12, seed=0, shard_size=16, progress=False)
    entries = json.loads((root / "coco_caption" / "coco_karpathy_test.json").read_text())
    return root, [e["caption"][0] if isinstance(e["caption"], list) else e["caption"] for e in entries]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    path = tmp_path_factory.mktemp("clip") / "tiny_clip"
    CLIPModel(config).save_pretrained(path)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(path)
    return path


def test_clip_scores_are_in_range_and_an_unusable_folder_is_named(clip_dir, tmp_path):
    scorer = ClipScorer(str(clip_dir))
    images = build_t2i({"name": "synthetic_shapes"})(["one shape: a red circle at the top."] * 2)
    scores = scorer.scores(images, ["a red circle", "a blue square"])
    assert len(scores) == 2 and all(0.0 <= s <= 100.0 for s in scores)
    with pytest.raises(MetricInputError, match="not a folder"):
        ClipScorer(str(tmp_path / "none"))


def test_eval_t2i_stops_resumes_and_scores_fid_and_clip(synthetic, clip_dir, tmp_path, capsys):
    root, _ = synthetic
    out = tmp_path / "out"
    ref = tmp_path / "ref.npz"
    args = ["--prompts", str(root / "coco_caption" / "coco_karpathy_test.json"), "--output-dir", str(out),
            "--name", "shapes", "--ref-stats", str(ref), "--ref-images", str(root / "images" / "test"),
            "--features", "random:16", "--clip-model", str(clip_dir), "--batch-size", "4", "--no-progress"]
    assert main([*args, "--max-batches", "1"]) == 0
    assert "rerun the same command" in capsys.readouterr().out
    assert ref.is_file() and len(list((out / "t2i_images" / "shapes_test").glob("*.png"))) == 4
    assert not (out / "shapes_test_metrics.json").exists()
    assert main(args) == 0
    metrics = json.loads((out / "shapes_test_metrics.json").read_text())
    assert metrics["samples"] == 12 and metrics["metrics"]["drawn"] == 1.0
    assert np.isfinite(metrics["metrics"]["fid"]) and 0.0 <= metrics["metrics"]["clip_score"] <= 100.0
    lines = [json.loads(x) for x in (out / "shapes_test_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and all((out / line["prediction"]).is_file() for line in lines)
    assert len(list((out / "t2i_images" / "shapes_test").glob("*.png"))) == 12
    # an input error is a clear message and exit status 2
    assert main([*args[:4], "--ref-stats", str(ref)]) == 2
    assert "--ref-stats needs --features" in capsys.readouterr().err


def test_the_llm_route_draws_only_what_the_llm_writes_between_image_tags(synthetic, tmp_path):
    root, _ = synthetic
    cfg = tmp_path / "llm.yaml"
    cfg.write_text("model: {arch: tinygptv, model_type: tiny}\nrun: {num_threads: 1}\n")
    out = tmp_path / "out"
    assert main(["--prompts", str(root / "coco_caption" / "coco_karpathy_test.json"), "--output-dir", str(out),
                 "--cfg-path", str(cfg), "--max-samples", "2", "--max-new-tokens", "4", "--no-progress"]) == 0
    metrics = json.loads((out / "t2i_test_metrics.json").read_text())["metrics"]
    assert metrics == {"drawn": 0.0}  # a random LLM writes no <Img>...</Img>: nothing drawn, nothing to score


def test_prompt_files_keep_one_caption_per_image_and_bad_ones_are_named(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"image": "a.jpg", "caption": ["x", "y"]}, {"image": "a.jpg", "caption": "z"},
                                {"id": 7, "prompt": "w"}]))
    assert [(r.id, r.prompt) for r in read_prompts(str(path))] == [("a.jpg", "x"), ("7", "w")]
    path.write_text(json.dumps([{"image": "a.jpg"}]))
    with pytest.raises(BenchmarkDataError, match="entry 0 of .*p.json has no caption"):
        read_prompts(str(path))


def test_two_processes_draw_the_same_images_and_give_the_same_figures(synthetic, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    REPO_ROOT = Path(__file__).resolve().parents[2]

    def cli_env() -> dict:  # as the run_cli fixture's (tests/conftest.py): this checkout first, one thread
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["OMP_NUM_THREADS"] = "1"
        env.pop("MINIGPT_DATA_ROOT", None)
        return env

    root, _ = synthetic
    ref = tmp_path / "ref.npz"
    common = ["--prompts", str(root / "coco_caption" / "coco_karpathy_test.json"), "--ref-stats", str(ref),
              "--ref-images", str(root / "images" / "test"), "--features", "random:16", "--no-progress",
              "--batch-size", "3"]
    assert main([*common, "--output-dir", str(tmp_path / "one")]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "eval_scripts/eval_t2i.py", *common, "--output-dir", str(tmp_path / "two")],
        cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "t2i_test_metrics.json").read_text())["metrics"] for d in ("one", "two"))
    assert one == two and one["drawn"] == 1.0
    parts = list((tmp_path / "two" / "predictions").glob("t2i_test.rank*-of-2.jsonl"))
    assert len(parts) == 2 and all(p.read_text().strip() for p in parts)  # both processes drew
