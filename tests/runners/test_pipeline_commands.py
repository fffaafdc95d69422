"""Pipeline command stages: ``python -m <module> <args>`` between training stages, with folder placeholders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from minigpt.common.config import ConfigError
from minigpt.common.config.pipeline_file import load_pipeline
from minigpt.runners.pipeline import fill_placeholders, run_pipeline

REPO = Path(__file__).resolve().parents[2]


def test_placeholders_name_earlier_stage_folders_and_the_data_root():
    folders = {"stage0": "/out/stage0"}
    assert fill_placeholders("--ckpt={dir:stage0}", folders, "data") == "--ckpt=/out/stage0"
    assert fill_placeholders("{data_root}/x {output_dir}", folders, "data", "/out/f") == "data/x /out/f"
    with pytest.raises(ValueError, match=r"no stage 'later' before this one \(stages so far: stage0\)"):
        fill_placeholders("{dir:later}", folders, "data")


def test_a_command_stage_is_checked_when_the_pipeline_is_read(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"pipeline": {"stages": [{"name": "f", "module": "minigpt.features", "args": "extract"}]}}))
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.args must be a list of strings"):
        load_pipeline(cfg)
    cfg.write_text(yaml.safe_dump({"pipeline": {"stages": [{"name": "f", "module": "x; rm -rf", "args": []}]}}))
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.module must be a module name"):
        load_pipeline(cfg)
    cfg.write_text(yaml.safe_dump({"pipeline": {"stages": [{"name": "f", "module": "json.tool", "cfg": "x.yaml"}]}}))
    with pytest.raises(ConfigError, match=r"unknown key 'cfg'; a module stage takes"):
        load_pipeline(cfg)


def test_a_command_stage_runs_between_training_stages_and_later_options_see_its_folder(tiny_options, tmp_path):
    given = tmp_path / "out"
    # the command writes a small synthetic data set into its folder; the next stage reads its data from there
    pipe = {"pipeline": {"name": "with_command", "stages": [
        {"name": "stage1", "cfg": str(REPO / "train_configs" / "quickstart_stage1.yaml")},
        {"name": "data", "module": "minigpt.datasets.synthetic", "args": [
            "--out", "{output_dir}/synthetic", "--n-train", "8", "--n-test", "4", "--num-workers", "1", "--no-progress"]},
        {"name": "stage2", "cfg": str(REPO / "train_configs" / "quickstart_stage2.yaml"),
         "options": ["run.data_root={dir:data}"]},
    ]}}
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(pipe))
    result = run_pipeline(str(cfg), [*tiny_options(given, 1), "run.test_splits=[]"])
    assert [s["stage"] for s in result["stages"]] == ["stage1", "data", "stage2"]
    assert [s["steps"] for s in result["stages"]] == [1, 0, 1]
    assert (given / "data" / "synthetic" / "manifest.json").is_file()
    composed = yaml.safe_load((given / "stage2" / "config.yaml").read_text())
    assert composed["run"]["data_root"] == str(given / "data")
    stages = [s["dir"] for s in json.loads((given / "pipeline.json").read_text())["stages"]]
    assert stages == ["stage1", "stage2"]  # a command's folder is no checkpoint
