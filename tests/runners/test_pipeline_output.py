"""A pipeline's stage folders: rooted at ``--options run.output_dir=X``; a rerun resumes instead of being refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from minigpt.runners.pipeline import run_pipeline
from minigpt.runners.run_guard import ResumeMismatchError

REPO = Path(__file__).resolve().parents[2]


def test_pipeline_output_dir_option_roots_the_stages_and_a_rerun_resumes(tiny_options, tmp_path):
    declared, given = tmp_path / "declared", tmp_path / "given"
    stages = ["stage1", "stage2"]
    pipe = {"pipeline": {
        "name": "two_stages", "output_dir": str(declared),
        "stages": [{"name": s, "cfg": str(REPO / "train_configs" / f"quickstart_{s}.yaml")} for s in stages],
    }}
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(pipe))
    options = [*tiny_options(given, 2), "run.test_splits=[]"]
    first = run_pipeline(str(cfg), options)
    assert [s["steps"] for s in first["stages"]] == [2, 2]
    assert not declared.exists()
    for name in stages:
        assert (given / name / "checkpoints" / "step_000002").is_dir()
    assert [s["dir"] for s in json.loads((given / "pipeline.json").read_text())["stages"]] == stages
    # each stage's bar says where it is in the pipeline
    labels = [yaml.safe_load((given / n / "config.yaml").read_text())["run"]["progress_label"] for n in stages]
    assert labels == ["stage 1/2 stage1", "stage 2/2 stage2"]
    # the same command again: each stage resumes at its last step and trains no step (no refusal)
    again = run_pipeline(str(cfg), options)
    assert [s["steps"] for s in again["stages"]] == [0, 0]
    # with another setting the resume is refused, naming the key
    with pytest.raises(ResumeMismatchError, match=r"run\.init_lr"):
        run_pipeline(str(cfg), [*options, "run.init_lr=0.5"])


def test_the_bar_shows_the_progress_label_else_the_stage_name(tmp_path):
    from minigpt.common.config import Config
    from minigpt.runners.step_loop import TrainLog

    for options, desc in ((["run.progress_label='stage 3/6 stage2'"], "stage 3/6 stage2"), ([], "quickstart_stage1")):
        run_cfg = Config(str(REPO / "train_configs" / "quickstart_stage1.yaml"), options).run_cfg
        log = TrainLog(run_cfg, str(tmp_path / desc.replace("/", "_")), 0, 10, None)
        try:
            assert log.bar.desc == desc
        finally:
            log.close()



def test_options_apply_pipelines_then_users_then_each_stages_own(tiny_options, tmp_path):
    stage1 = str(REPO / "train_configs" / "quickstart_stage1.yaml")
    pipe = {"pipeline": {
        "name": "precedence", "output_dir": str(tmp_path / "declared"),
        "options": ["run.init_lr=0.003", "run.min_lr=0.0001"],
        "stages": [{"name": "a", "cfg": stage1, "options": ["run.max_iters=2", "run.init_lr=0.002"]},
                   {"name": "b", "cfg": stage1}],
    }}
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(pipe))
    out = tmp_path / "given"
    result = run_pipeline(str(cfg), [*tiny_options(out, 1), "run.test_splits=[]", "run.min_lr=0.0002"])
    # stage a's own max_iters beats the user's; stage b has none and takes the user's
    assert [s["steps"] for s in result["stages"]] == [2, 1]
    run_of = {n: yaml.safe_load((out / n / "config.yaml").read_text())["run"] for n in ("a", "b")}
    assert run_of["a"]["init_lr"] == 0.002 and run_of["b"]["init_lr"] == 0.003
    assert run_of["a"]["min_lr"] == run_of["b"]["min_lr"] == 0.0002  # the user's beats the pipeline's
