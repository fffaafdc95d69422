"""Every shipped config runs at toy width (``model.scale=toy``) on the synthetic data (DESIGN.md §5).

Same parts, classes, processors, image sizes, templates, prompts and datasets as the real run; only
widths, depths, heads and vocabulary are shrunk. The real-format datasets (LAION, CC/SBU, RefCOCO,
LLaVA, VQAv2, ...) read the synthetic generator's files, which are in those formats: each is pointed
at the files of its synthetic stand-in (``STAND_INS``) by ``--options`` on its ``build_info``.
A training stage runs 2 steps; an evaluation config evaluates a few test samples. The configs no
run can be made of here (the benchmark evaluation, whose files the generator does not write, and
the browser demo) compose, build their toy model and answer one synthetic image.
A real-format dataset whose synthetic stand-in is not written yet (``AWAITING_STAND_INS``) is left out
of its stage's 2 steps; the stage is still composed whole, and trains and runs its toy model on the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from omegaconf import OmegaConf
from shared_helpers import EVAL_CONFIGS, STAGE_CONFIGS
from test_shipped_configs import stage_files

from minigpt.common.config import Config
from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples

# real-format dataset -> the synthetic dataset written in its format (whose build_info it borrows)
STAND_INS: Dict[str, str] = {
    "laion": "synthetic_caption_wds",
    "cc_sbu": "synthetic_caption_wds",
    "cc_sbu_align": "synthetic_cc_sbu_align",
    "coco_caption": "synthetic_coco_caption",
    "coco_vqa": "synthetic_vqa",
    "llava_conversation": "synthetic_llava",
    "refcoco": "synthetic_refcoco",
    "refcocop": "synthetic_refcoco",  # RefCOCO+/g: the same refer-pickle layout
    "refcocog": "synthetic_refcoco",
    "invrefcoco": "synthetic_invrefcoco",
    "invrefcocop": "synthetic_invrefcoco",
    "invrefcocog": "synthetic_invrefcoco",
    "okvqa": "synthetic_vqa",  # LAVIS's OK-VQA JSON has VQAv2's layout
}
# real-format datasets the synthetic generator does not write yet (its real-layout files are being added):
# each is left out of its stage's 2-step run, which trains on the rest of the mixture
AWAITING_STAND_INS = frozenset(
    {
        "aokvqa",
        "gqa",
        "ocrvqa",
        "textcaps",
        "unnatural_instruction",
        "llava_detail",
        "llava_reason",
        "flickr_grounded_caption",
        "flickr_caption_to_phrase",
        "flickr_object_to_phrase",
    }
)
TRAIN_CONFIGS = sorted({s for p in STAGE_CONFIGS.glob("*.yaml") for s in stage_files(p)})
# evaluation configs with a datasets: section the generator has data for; the others only build and answer
EVAL_RUNS = [EVAL_CONFIGS / "quickstart_eval.yaml"]
EVAL_BUILDS = [EVAL_CONFIGS / "quickstart_demo.yaml", EVAL_CONFIGS / "tinygptv_benchmark_eval.yaml"]


def test_every_shipped_config_is_run_or_built_here():
    shipped = {p for p in [*STAGE_CONFIGS.glob("*.yaml"), *EVAL_CONFIGS.glob("*.yaml")]}
    pipelines = {p for p in shipped if Config.is_pipeline_file(p)}
    assert shipped - pipelines == {*TRAIN_CONFIGS, *EVAL_RUNS, *EVAL_BUILDS}


def stand_in_options(cfg_path: Path) -> List[str]:
    """``--options`` that point each real-format dataset of ``cfg_path`` at its synthetic stand-in's files."""
    options: List[str] = []
    for name, block in (Config(cfg_path).config.get("datasets") or {}).items():
        if name.startswith("synthetic_") or name in AWAITING_STAND_INS:
            continue
        assert name in STAND_INS, (
            f"{cfg_path.name}: dataset {name!r} has no synthetic stand-in (add one to STAND_INS)"
        )
        info = OmegaConf.to_container(registry.get_builder_class(STAND_INS[name]).default_config().build_info)
        for key, value in info.items():
            if isinstance(value, dict):  # a split mapping: only the splits the real dataset has
                value = {split: v for split, v in value.items() if split in block.build_info[key]}
            options.append(f"datasets.{name}.build_info.{key}={json.dumps(value)}")
    return options


def twin_config(path: Path, options: List[str]) -> Config:
    """``path`` composed whole with ``options`` (and its stand-ins'), less the datasets still awaiting stand-ins."""
    cfg = Config(path, [*options, *stand_in_options(path)])
    for name in [n for n in cfg.datasets_cfg if n in AWAITING_STAND_INS]:
        del cfg.config.datasets[name]
    assert len(cfg.datasets_cfg), f"{path.name}: every dataset awaits a synthetic stand-in"
    return cfg


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
def test_each_training_stage_trains_two_steps_at_toy_width(path, data_root, tmp_path):
    from minigpt.runners.stage import run_stage

    cfg = twin_config(path, twin_options(tmp_path / "out", data_root))
    summary = run_stage(cfg)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    assert math.isfinite(summary["final_loss_ema"])
    # two steps draw from some of the mixed datasets; each one's first sample goes through the model too
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    model = task.build_model(cfg)
    size = cfg.model_cfg.vision_encoder.image_size
    for name, splits in task.build_datasets(cfg).items():
        sample = next(iter(splits["train"]))
        assert sample["image"].shape[-2:] == (size, size), name
        out = task.train_step(model, collate_samples([sample]))
        assert torch.isfinite(out["loss"]), name


@pytest.mark.parametrize("path", EVAL_RUNS, ids=lambda p: p.name)
def test_each_evaluation_config_evaluates_at_toy_width(path, data_root, tmp_path):
    from minigpt.runners.stage import run_stage

    cfg = Config(path, [*twin_options(tmp_path / "out", data_root), *stand_in_options(path)])
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
def test_the_published_stages_chain_at_toy_width(name, data_root, tmp_path):
    """Each published pipeline's stages at toy width, each starting from every earlier stage's checkpoint (as
    run_pipeline chains them)."""
    from minigpt.runners.stage import run_stage

    pipeline = STAGE_CONFIGS / name
    done: List[str] = []
    for stage, path in zip(Config.load_pipeline(pipeline).pipeline.stages, stage_files(pipeline)):
        out = tmp_path / str(stage.name)
        options = twin_options(out, data_root)
        if done:
            options.append(f"model.ckpt={json.dumps(done)}")
        summary = run_stage(twin_config(path, options))
        assert summary["steps"] == 2 and math.isfinite(summary["final_loss_ema"]), stage.name
        done.append(str(out))


def test_the_datasets_awaiting_stand_ins_are_registered_and_used_by_a_shipped_stage():
    used = {name for path in TRAIN_CONFIGS for name in Config(path).datasets_cfg}
    for name in AWAITING_STAND_INS:
        registry.get_builder_class(name)  # a typo here would silently skip nothing
        assert name not in STAND_INS and name in used, name
