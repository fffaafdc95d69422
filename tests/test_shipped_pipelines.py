"""Every shipped pipeline (train_configs/ files with a ``pipeline:`` block) runs end to end through train.py.

``train.py --cfg-path train_configs/<pipeline>.yaml --options model.scale=toy run.max_iters=2 ...``, in
process, on the real-layout synthetic root (the quickstart, which generates its own data, on a copy
whose ``data:`` section asks for 40 images). Every stage trains 2 steps and starts from the weights the
earlier stages saved (read from the model as its first step sees it), and the pipeline writes its
manifest and metrics.json. Single stages: tests/test_shipped_twins.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file
from shared_helpers import STAGE_CONFIGS, shipped_params
from test_shipped_twins import twin_options

from minigpt.cli import train as train_cli
from minigpt.common.config import Config
from minigpt.common.constants import PIPELINE_FILE
from minigpt.models.weights.checkpoint import STAGE0_HEADS_PREFIX, resolve_checkpoint_file
from minigpt.models.weights.names import canonical_name

PIPELINES = sorted(p for p in STAGE_CONFIGS.glob("*.yaml") if Config.is_pipeline_file(p))
SMALL_SYNTHETIC = {"n_train": 40, "n_test": 10, "shard_size": 16, "num_workers": 0}
SMALL_VIDEOS = {"n_train": 8, "n_test": 4}


def runnable_copy(path: Path, folder: Path) -> Path:
    """``path`` itself, or for a pipeline that generates its own synthetic data, a copy asking for 40 images."""
    pipe = Config.load_pipeline(path)  # stage and eval paths made absolute
    if not (pipe.pipeline.get("data") or {}).get("synthetic"):
        return path
    pipe.pipeline.data.synthetic.update(SMALL_SYNTHETIC)
    if pipe.pipeline.data.synthetic.get("videos"):
        pipe.pipeline.data.synthetic.videos.update(SMALL_VIDEOS)
    if pipe.pipeline.data.synthetic.get("creation"):
        pipe.pipeline.data.synthetic.creation = {"train": 40, "test": 10}
    copy = folder / path.name
    copy.write_text(OmegaConf.to_yaml(pipe))
    return copy


def record_first_step_weights(monkeypatch) -> Dict[str, Dict[str, torch.Tensor]]:
    """stage name -> the model's tensors (canonical names) as the stage's first training step sees them."""
    from minigpt.runners import pipeline
    from minigpt.tasks.base_task import BaseTask

    seen: Dict[str, Dict[str, torch.Tensor]] = {}
    current: List[str] = []
    run_stage, train_step = pipeline.run_stage, BaseTask.train_step

    def stage(cfg):
        current.append(str(cfg.run_cfg.stage_name))
        return run_stage(cfg)

    def step(self, model, samples):
        if current and current[-1] not in seen:
            seen[current[-1]] = {canonical_name(k): v.detach().clone() for k, v in model.state_dict().items()}
        return train_step(self, model, samples)

    monkeypatch.setattr(pipeline, "run_stage", stage)
    monkeypatch.setattr(BaseTask, "train_step", step)
    return seen


def test_every_pipeline_is_run_here():
    assert {p.name for p in PIPELINES} >= {"tinygptv.yaml", "minigpt4.yaml", "minigpt_v2.yaml", "quickstart.yaml"}


@pytest.mark.parametrize("path", shipped_params(PIPELINES), ids=lambda p: p.name)
def test_each_pipeline_runs_end_to_end_through_train_py(path, real_layout_root, tmp_path, monkeypatch, capsys):
    pipe = Config.load_pipeline(path).pipeline
    every = [str(s.name) for s in pipe.stages]
    stages = [str(s.name) for s in pipe.stages if s.get("module") is None]  # command stages train nothing
    starts = {str(s.name): s.get("start_from") for s in pipe.stages}
    generates_data = bool((pipe.get("data") or {}).get("synthetic"))
    data_root = tmp_path / "data" if generates_data else real_layout_root
    out = tmp_path / "out"
    first_step = record_first_step_weights(monkeypatch)
    monkeypatch.setattr(train_cli, "setup_logging", lambda: None)

    options = [*twin_options(out, data_root), "run.log_freq=1"]
    argv = ["--cfg-path", str(runnable_copy(path, tmp_path)), "--options", *options]
    assert train_cli.main(argv) == 0

    result = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in result["stages"]] == every
    assert all(s["steps"] == 2 for s in result["stages"] if s["stage"] in stages), result["stages"]
    manifest = json.loads((out / PIPELINE_FILE).read_text())
    assert [(s["name"], s["dir"]) for s in manifest["stages"]] == [(s, s) for s in stages]
    assert "metrics written to" in capsys.readouterr().out
    if pipe.get("eval"):
        assert result["all_metrics"], "the pipeline's evaluation reported no metric"

    saved_by: Dict[str, Dict[str, torch.Tensor]] = {}  # what each stage saved
    for k, name in enumerate(stages):
        earlier = stages[:k] if starts[name] is None else [str(n) for n in starts[name]]
        saved: Dict[str, torch.Tensor] = {}  # what the stages it starts from saved, later stages over earlier ones
        for n in earlier:
            saved.update(saved_by[n])
        rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
        assert [r["step"] for r in rows if "step" in r and "event" not in r] == [1, 2], name
        start = first_step[name]
        assert set(saved) <= set(start), f"{name}: tensors of earlier stages not in its model"
        differ = [key for key, value in saved.items() if not torch.equal(start[key], value.to(start[key].dtype))]
        assert not differ, f"{name} did not start from the earlier stages' weights: {differ[:5]}"
        # a vision pretraining stage's label heads stay out of the family model (on purpose)
        own = {key: v for key, v in load_file(resolve_checkpoint_file(str(out / name))).items()
               if not key.startswith(STAGE0_HEADS_PREFIX)}
        # the stage trained what it saved: the comparison above would see a stage that started afresh
        assert any(not torch.equal(start[key], value.to(start[key].dtype)) for key, value in own.items()), name
        saved_by[name] = own
        ckpt = yaml.safe_load((out / name / "config.yaml").read_text())["model"]["ckpt"]
        assert (ckpt or []) == [str(out / s) for s in earlier], name
