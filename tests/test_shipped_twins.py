"""Every shipped config runs at toy width (``model.scale=toy``) on the synthetic data (DESIGN.md §5).

Same parts, classes, processors, image sizes, templates, prompts and datasets as the real run; only
widths, depths, heads and vocabulary are shrunk. The real-format datasets (LAION, CC/SBU, RefCOCO,
LLaVA, VQAv2, GQA, Flickr30k, Visual Genome, ...) read, with their default paths, a data root the
synthetic generator lays out as the real datasets are (``real_layout=True``).
A training stage runs 2 steps; an evaluation config evaluates a few test samples. The configs no
run can be made of here (the benchmark evaluation, whose files the generator does not write, and
the browser demo) compose, build their toy model and answer one synthetic image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List

import pytest
import torch
from shared_helpers import EVAL_CONFIGS, STAGE_CONFIGS
from test_shipped_configs import stage_files

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples

TRAIN_CONFIGS = sorted({s for p in STAGE_CONFIGS.glob("*.yaml") for s in stage_files(p)})
# evaluation configs with a datasets: section the generator has data for; the others only build and answer
EVAL_RUNS = [EVAL_CONFIGS / "quickstart_eval.yaml"]
EVAL_BUILDS = [EVAL_CONFIGS / "quickstart_demo.yaml", EVAL_CONFIGS / "tinygptv_benchmark_eval.yaml"]


def test_every_shipped_config_is_run_or_built_here():
    shipped = {p for p in [*STAGE_CONFIGS.glob("*.yaml"), *EVAL_CONFIGS.glob("*.yaml")]}
    pipelines = {p for p in shipped if Config.is_pipeline_file(p)}
    assert shipped - pipelines == {*TRAIN_CONFIGS, *EVAL_RUNS, *EVAL_BUILDS}


def uses_synthetic_builders(cfg_path: Path) -> bool:
    """Whether ``cfg_path`` trains on the ``synthetic_*`` builders (the quickstart) rather than real-format ones."""
    return any(name.startswith("synthetic_") for name in Config(cfg_path).config.get("datasets") or {})


@pytest.fixture(scope="module")
def real_layout_root(tmp_path_factory) -> Path:
    """The synthetic scenes laid out where every real builder's default YAML looks (``real_layout``)."""
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("real_layout")
    generate_synthetic_dataset(root, n_train=40, n_test=10, seed=0, shard_size=16, progress=False, real_layout=True)
    return root


def twin_config(path: Path, options: List[str]) -> Config:
    """``path`` composed whole with ``options``: every dataset of the published mixture takes part."""
    return Config(path, options)


def root_for(path: Path, data_root: Path, real_layout_root: Path) -> Path:
    return data_root if uses_synthetic_builders(path) else real_layout_root


def twin_options(out: Path, data_root: Path, max_iters: int = 2) -> List[str]:
    return [
        "model.scale=toy",
        "model.ckpt=null",
        f"run.max_iters={max_iters}",
        "run.batch_size_train=2",
        "run.batch_size_eval=4",
        "run.max_eval_samples=4",
        "run.eval_max_new_tokens=4",
        "run.warmup_steps=1",
        "run.num_workers=0",
        "run.save_freq=0",
        f"run.data_root={data_root}",
        f"run.output_dir={out}",
        "run.progress=false",
        "run.num_threads=1",
        "run.device=cpu",
    ]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_each_training_stage_trains_two_steps_at_toy_width(path, data_root, real_layout_root, tmp_path):
    from minigpt.runners.stage import run_stage

    cfg = twin_config(path, twin_options(tmp_path / "out", root_for(path, data_root, real_layout_root)))
    summary = run_stage(cfg)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert math.isfinite(summary["final_loss_ema"])
    # two steps draw from some of the mixed datasets; each one's first sample goes through the model too
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    size = cfg.model_cfg.vision_encoder.image_size
    for name, splits in task.build_datasets(cfg).items():
        sample = next(iter(splits["train"]))
        if sample["image"] is not None:  # text-only datasets (unnatural_instruction) carry none
            assert sample["image"].shape[-2:] == (size, size), name
        out = task.train_step(model, collate_samples([sample]))
        assert torch.isfinite(out["loss"]), name


@pytest.mark.parametrize("path", EVAL_RUNS, ids=lambda p: p.name)
def test_each_evaluation_config_evaluates_at_toy_width(path, data_root, real_layout_root, tmp_path):
    from minigpt.runners.stage import run_stage

    cfg = Config(path, twin_options(tmp_path / "out", root_for(path, data_root, real_layout_root)))
    summary = run_stage(cfg)
    assert summary["metrics"]


@pytest.mark.parametrize("path", EVAL_BUILDS, ids=lambda p: p.name)
def test_each_model_only_config_builds_its_twin_and_answers(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path))  # empty: no weight file can be read
    cfg = Config(path, ["model.scale=toy", "model.ckpt=null"])
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval()
    size = cfg.model_cfg.vision_encoder.image_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(
            {
                "image": image,
                "instruction_input": ["<Img><ImageHere></Img> [vqa] What is it?"],
                "answer": ["a circle"],
            }
        )
        answers = model.generate(image, ["<Img><ImageHere></Img> What is it?"], max_new_tokens=3)
    assert torch.isfinite(out["loss"]) and len(answers) == 1


@pytest.mark.parametrize("name", ["tinygptv.yaml", "minigpt4.yaml", "minigpt_v2.yaml"])
def test_the_published_stages_chain_at_toy_width(name, real_layout_root, tmp_path):
    """Each published pipeline's stages at toy width, each starting from every earlier stage's checkpoint (as
    run_pipeline chains them)."""
    from minigpt.runners.stage import run_stage

    pipeline = STAGE_CONFIGS / name
    done: List[str] = []
    for stage, path in zip(Config.load_pipeline(pipeline).pipeline.stages, stage_files(pipeline)):
        out = tmp_path / str(stage.name)
        options = twin_options(out, real_layout_root)
        if done:
            options.append(f"model.ckpt={json.dumps(done)}")
        summary = run_stage(twin_config(path, options))
        assert summary["steps"] == 2 and math.isfinite(summary["final_loss_ema"]), stage.name
        done.append(str(out))
