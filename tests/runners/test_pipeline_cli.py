"""The command lines: train.py (one stage, torchrun, bad configs, a pipeline) and eval_scripts/evaluate.py."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml
from safetensors.torch import load_file

from minigpt.cli import train as train_cli
from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.models.weights.checkpoint import (
    PIPELINE_FILE,
    STAGE0_HEADS_PREFIX,
    expand_checkpoints,
    resolve_checkpoint_file,
    trained_state_dict,
)

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "train_configs" / "quickstart_stage1.yaml"
STAGE2 = REPO / "train_configs" / "quickstart_stage2.yaml"
EVAL_CFG = REPO / "eval_configs" / "quickstart_eval.yaml"
METRIC_KEYS = ("step", "loss", "lr", "samples_per_s", "tokens_per_s")


def _rows(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _step_rows(path: Path) -> List[Dict]:
    return [r for r in _rows(path) if "step" in r and "event" not in r]


def _tensor_count(run_dir: Path) -> int:
    """Tensors a family model loads from a stage's checkpoint (a stage-0 checkpoint's label heads are not)."""
    return sum(not k.startswith(STAGE0_HEADS_PREFIX) for k in load_file(resolve_checkpoint_file(str(run_dir))))


def _assert_model_starts_from(run_dir: Path, stage_cfg: Path, data_root: Path, caplog) -> None:
    """Build the stage's model with model.ckpt=run_dir: every trained tensor equals the checkpoint's."""
    caplog.set_level("INFO")
    cfg = Config(stage_cfg, [f"model.ckpt={run_dir}", f"run.data_root={data_root}"])
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
    saved = load_file(resolve_checkpoint_file(str(run_dir)))
    current = trained_state_dict(model)
    assert set(saved) == set(current)
    different = [k for k in saved if not torch.equal(saved[k], current[k])]
    assert not different, f"tensors not loaded from {run_dir}: {different[:5]}"
    assert f"loaded {len(saved)} tensors from {run_dir}" in caplog.text


# -- one stage ------------------------------------------------------------------------------------
def test_stage1_writes_config_metrics_and_checkpoint(stage1_run):
    out, proc = stage1_run
    run = yaml.safe_load((out / "config.yaml").read_text())["run"]
    assert run["max_iters"] == 3 and run["output_dir"] == str(out)

    rows = _step_rows(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert set(METRIC_KEYS) <= set(r), r
        assert math.isfinite(r["loss"]) and r["samples_per_s"] > 0 and r["tokens_per_s"] > 0
        # the 3 steps sit inside the stage's linear warmup (warmup_steps is 30)
        frac = (r["step"] - 1) / run["warmup_steps"]
        assert r["lr"] == pytest.approx(run["warmup_lr"] + (run["init_lr"] - run["warmup_lr"]) * frac)
    end = [r for r in _rows(out / "metrics.jsonl") if r.get("event") == "train_end"]
    assert len(end) == 1 and end[0]["steps"] == 3 and end[0]["skipped_steps"] == 0

    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_000003"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000003"]
    assert (ckpts / "step_000003" / "trained.safetensors").is_file()
    assert (ckpts / "step_000003" / "training_state.pt").is_file()
    assert "on 1 process(es)" in proc.stderr


def test_stage2_cli_loads_stage1_checkpoint(stage1_run, run_cli, tiny_options, tmp_path):
    stage1_out, _ = stage1_run
    out = tmp_path / "stage2"
    proc = run_cli(
        ["train.py", "--cfg-path", STAGE2, "--options", *tiny_options(out, 2), f"model.ckpt={stage1_out}"]
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"loaded {_tensor_count(stage1_out)} tensors from {stage1_out}" in proc.stderr
    assert "keys not in this model" not in proc.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["ckpt"] == str(stage1_out)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000002"


def test_stage2_initial_weights_equal_stage1_final_weights(stage1_run, data_root, caplog):
    _assert_model_starts_from(stage1_run[0], STAGE2, data_root, caplog)


def test_torchrun_two_processes_write_one_checkpoint(run_cli, tiny_options, tmp_path, data_root, caplog):
    out = tmp_path / "ddp"
    proc = run_cli(
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "train.py", "--cfg-path", STAGE1, "--options", *tiny_options(out), "run.dist_backend=gloo"],
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "on 2 process(es)" in proc.stderr
    # rank 0 alone writes the metrics rows and the checkpoint
    assert [r["step"] for r in _step_rows(out / "metrics.jsonl")] == [1, 2, 3]
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_000003"]
    _assert_model_starts_from(out, STAGE2, data_root, caplog)


# -- bad configs stop before any work ------------------------------------------------------------
def test_yaml_typo_exits_2_before_work(run_cli, tmp_path):
    out = tmp_path / "never"
    bad = tmp_path / "typo.yaml"
    bad.write_text(
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets: {synthetic_caption_wds: {}}\n"
        f"run: {{max_iter: 5, output_dir: {out}}}\n"
    )
    proc = run_cli(["train.py", "--cfg-path", bad])
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "run.max_iter" in proc.stderr
    assert re.search(r"did you mean 'run\.max_iters'", proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def _main_fails(argv: List[str], capsys, monkeypatch) -> str:
    monkeypatch.setattr(train_cli, "setup_logging", lambda: None)
    with pytest.raises(SystemExit) as info:
        train_cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["run.max_iterz=3"], [r"run\.max_iterz", r"did you mean 'run\.max_iters'"]),
        (["model.arch=tinygtpv"], [r"tinygtpv", r"[Dd]id you mean:? '?tinygptv"]),
        (["run.min_lr=0.1", "run.init_lr=0.01"], [r"run\.min_lr = 0\.1", r"must be <= run\.init_lr = 0\.01"]),
        (["model.ckpt=/nonexistent/stage1"], [r"model\.ckpt", r"/nonexistent/stage1"]),
        (["run.resume_ckpt_path=/nonexistent/ckpt"], [r"run\.resume_ckpt_path", r"/nonexistent/ckpt"]),
    ],
    ids=["options-typo", "arch-typo", "min_lr-above-init_lr", "missing-ckpt", "missing-resume"],
)
def test_bad_options_exit_2_before_work(extra, expected, tiny_options, tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"
    err = _main_fails(["--cfg-path", str(STAGE1), "--options", *tiny_options(out), *extra], capsys, monkeypatch)
    for pattern in expected:
        assert re.search(pattern, err), f"{pattern!r} not in: {err}"
    assert not out.exists()


def test_unknown_dataset_in_yaml_suggests_the_right_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"
    bad = tmp_path / "dataset_typo.yaml"
    bad.write_text(
        "model: {arch: tinygptv, model_type: tiny}\n"
        "datasets: {synthetic_vqaa: {}}\n"
        f"run: {{output_dir: {out}}}\n"
    )
    err = _main_fails(["--cfg-path", str(bad)], capsys, monkeypatch)
    assert str(bad) in err and "synthetic_vqaa" in err
    assert re.search(r"[Dd]id you mean:? '?synthetic_vqa\b", err)
    assert not out.exists()


def test_print_config_prints_parseable_yaml_with_the_override(capsys, monkeypatch):
    monkeypatch.setattr(train_cli, "setup_logging", lambda: None)
    assert train_cli.main(["--cfg-path", str(STAGE1), "--print-config", "--options", "run.max_iters=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["max_iters"] == 7
    assert printed["model"]["arch"] == "tinygptv"
    assert "synthetic_caption_wds" in printed["datasets"]


def test_print_config_of_a_pipeline_prints_one_document_per_stage(capsys, monkeypatch):
    monkeypatch.setattr(train_cli, "setup_logging", lambda: None)
    cfg = REPO / "train_configs" / "quickstart.yaml"
    assert train_cli.main(["--cfg-path", str(cfg), "--print-config", "--options", "run.max_iters=7"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    names = [f"quickstart_stage{k}" for k in (0, 1, 2, 3)] + ["quickstart_grounding", "quickstart_stage4"]
    assert [d["run"]["stage_name"] for d in docs] == names
    assert all(d["run"]["max_iters"] == 7 for d in docs)
    # each stage's own options show: the vision cache is on from stage 1, as the run applies it
    assert [d["run"]["vision_feature_cache"]["enabled"] for d in docs] == [False] + [True] * 5
    # a stage's own options come after the user's, as in the run
    assert train_cli.main(["--cfg-path", str(cfg), "--print-config", "--options",
                           "run.vision_feature_cache.enabled=false"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["run"]["vision_feature_cache"]["enabled"] for d in docs] == [False] + [True] * 5


# -- the pipeline --------------------------------------------------------------------------------
def _segments(stderr: str, names: List[str]) -> Dict[str, str]:
    """stderr split at the pipeline's "stage k/N <name>:" lines, one piece per stage (the last runs to the end)."""
    found = list(re.finditer(r"minigpt\.runners\.pipeline: stage (\d+)/(\d+) (\S+):", stderr))
    assert [(int(m.group(1)), int(m.group(2))) for m in found] == [(k, len(names)) for k in range(1, len(names) + 1)]
    marks = [(m.start(), m.group(3)) for m in found]
    assert [name for _, name in marks] == names, stderr[-4000:]
    ends = [start for start, _ in marks[1:]] + [len(stderr)]
    return {name: stderr[start:end] for (start, name), end in zip(marks, ends)}


def test_quickstart_pipeline_chains_stages_and_evaluates(run_cli, tmp_path):
    data = tmp_path / "data"
    out = tmp_path / "pipeline"
    stages = ["stage0", "stage1", "stage2", "stage3", "grounding", "stage4"]
    pipe = {
        "pipeline": {
            "name": "quickstart_test",
            "output_dir": str(out),
            "data": {"synthetic": {"root": "synthetic", "n_train": 200, "n_test": 40, "seed": 0,
                                   "shard_size": 100, "num_workers": 0}},
            "stages": [{"name": s, "cfg": str(REPO / "train_configs" / f"quickstart_{s}.yaml")} for s in stages],
            "eval": {"cfg": str(EVAL_CFG)},
        }
    }
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(pipe))
    options = ["run.max_iters=2", "run.batch_size_train=4", f"run.data_root={data}", "run.progress=false",
               "run.max_eval_samples=8", "run.num_threads=1", "run.log_freq=1"]
    proc = run_cli(["train.py", "--cfg-path", cfg, "--options", *options], timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (data / "synthetic" / "manifest.json").is_file()

    result = json.loads((out / "metrics.json").read_text())
    for key in ("vqa_accuracy", "grounding_acc@0.5", "caption_bleu4_nltk"):
        assert 0.0 <= result[key] <= 1.0, (key, result)
    assert result["wall_time_s"] > 0
    assert [s["stage"] for s in result["stages"]] == stages
    assert all(s["steps"] == 2 for s in result["stages"])
    assert "vqa_accuracy" in proc.stdout and "wall_time_s" in proc.stdout

    pieces = _segments(proc.stderr, stages)
    for k, name in enumerate(stages):
        earlier = [out / s for s in stages[:k]]
        ckpt = yaml.safe_load((out / name / "config.yaml").read_text())["model"]["ckpt"]
        assert (ckpt or []) == [str(p) for p in earlier]
        for prev in earlier:
            assert f"loaded {_tensor_count(prev)} tensors from {prev}" in pieces[name], (name, prev)
        rows = _step_rows(out / name / "metrics.jsonl")
        assert [r["step"] for r in rows] == [1, 2]
        assert all(r["tokens_per_s"] > 0 for r in rows), (name, rows)  # stage 0 too: its labelled visual tokens
    eval_ckpt = yaml.safe_load((out / "eval" / "config.yaml").read_text())["model"]["ckpt"]
    assert eval_ckpt == [str(out / s) for s in stages]
    # stage 4's checkpoint is read once: by the evaluation
    assert proc.stderr.count(f"tensors from {out / 'stage4'}") == 1
    # the output folder lists its stages, so model.ckpt=<output folder> loads the pipeline's model
    manifest = json.loads((out / PIPELINE_FILE).read_text())
    assert [(s["name"], s["dir"]) for s in manifest["stages"]] == [(s, s) for s in stages]
    assert expand_checkpoints(str(out)) == [str(out / s) for s in stages]


# -- evaluate.py ---------------------------------------------------------------------------------
def test_evaluate_script_scores_a_checkpoint(stage1_run, run_cli, data_root, tmp_path):
    stage1_out, _ = stage1_run
    out = tmp_path / "eval"
    options = [f"model.ckpt={stage1_out}", f"run.output_dir={out}", f"run.data_root={data_root}",
               "run.max_eval_samples=4", "run.eval_max_new_tokens=8", "run.progress=false", "run.num_threads=1",
               "run.evaluate_only=false"]  # the script forces it back on
    proc = run_cli([REPO / "eval_scripts" / "evaluate.py", "--cfg-path", EVAL_CFG, "--options", *options])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"loaded {_tensor_count(stage1_out)} tensors from {stage1_out}" in proc.stderr
    assert re.search(r"synthetic_vqa/test/vqa_accuracy\s+\d\.\d{4}", proc.stdout)

    result = json.loads((out / "metrics.json").read_text())
    assert result["checkpoint"] == str(stage1_out)
    for key in ("vqa_accuracy", "grounding_acc@0.5", "caption_bleu4_nltk"):
        assert 0.0 <= result[key] <= 1.0
    for name in ("synthetic_vqa", "synthetic_refcoco", "synthetic_invrefcoco", "synthetic_coco_caption"):
        assert result["all_metrics"][f"{name}/test/samples"] == 4
        assert len((out / "predictions" / f"{name}_test.jsonl").read_text().splitlines()) == 4
    # evaluation only: no optimizer step, so no checkpoint and no training rows
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


def test_evaluate_script_rejects_bad_config_with_exit_2(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "eval_scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr("minigpt.cli.evaluate.setup_logging", lambda: None)
    out = tmp_path / "never"
    code = script.main(["--cfg-path", str(EVAL_CFG), "--options", "run.max_eval_samplez=4", f"run.output_dir={out}"])
    assert code == 2
    assert "did you mean 'run.max_eval_samples'" in capsys.readouterr().err
    assert not out.exists()


def test_print_config_of_a_pipeline_with_a_command_stage_prints_the_training_stages(capsys, monkeypatch):
    monkeypatch.setattr(train_cli, "setup_logging", lambda: None)
    cfg = REPO / "train_configs" / "video_quickstart.yaml"
    assert train_cli.main(["--cfg-path", str(cfg), "--print-config"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    pipe = yaml.safe_load(cfg.read_text())["pipeline"]
    training = [s for s in pipe["stages"] if "module" not in s]
    assert len(training) < len(pipe["stages"])  # the file has a command stage
    assert len(docs) == len(training) and all("model" in d and "run" in d for d in docs)
