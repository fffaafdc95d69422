"""The released-checkpoint eval configs (eval_configs/*_released.yaml): eval_scripts/ and demo.py take each.

Each config is run at toy width without its checkpoint (``--options model.scale=toy model.ckpt=null``):
the VQA eval script answers a few synthetic questions and writes its metrics; the demo's loader
builds the model, whose chat answers an image. The token ids these presets feed the LLM are checked
in tests/models/test_released_token_ids.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from shared_helpers import EVAL_CONFIGS

from minigpt.common.config import Config

RELEASED = {
    "tinygptv_stage3_released.yaml": ("tinygptv", "released_stage3", "TinyGPT-V_for_Stage3.pth"),
    "tinygptv_stage4_released.yaml": ("tinygptv", "released_stage4", "TinyGPT-V_for_Stage4.pth"),
    "minigpt4_vicuna7b_released.yaml": ("minigpt4", "released_vicuna7b", "pretrained_minigpt4_7b.pth"),
    "minigpt_v2_released.yaml": ("minigpt_v2", "released_llama2_chat_7b", "minigptv2_checkpoint.pth"),
}
TOY = ["model.scale=toy", "model.ckpt=null", "run.device=cpu", "run.precision=fp32", "run.num_threads=1",
       "run.num_workers=0"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("bench")
    generate_synthetic_dataset(root / "synthetic", n_train=2, n_test=2, seed=0, progress=False)
    return root


@pytest.mark.parametrize("name", list(RELEASED))
def test_each_released_config_names_its_preset_and_checkpoint_under_the_model_root(name, monkeypatch):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", "/models")
    family, model_type, ckpt = RELEASED[name]
    cfg = Config(EVAL_CONFIGS / name)
    assert (cfg.model_cfg.arch, cfg.model_cfg.model_type) == (family, model_type)
    assert cfg.model_cfg.ckpt == f"/models/{ckpt}"
    assert cfg.model_cfg.image_markers == "text" and cfg.model_cfg.bos == "first_segment"


@pytest.mark.parametrize("name", list(RELEASED))
def test_the_eval_script_and_the_demo_run_each_at_toy_width(name, data_root, tmp_path, monkeypatch):
    from minigpt.demo.cli import load_demo_model, parse_args
    from minigpt.evaluation.benchmarks.cli import main
    from minigpt.models.generation.chat import Chat

    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path / "no_weights"))  # no weight file can be read
    path = str(EVAL_CONFIGS / name)
    out = tmp_path / "eval"
    status = main("vqa", argv=[
        "--cfg-path", path, "--dataset", "synthetic_vqa", "--data-root", str(data_root), "--output-dir", str(out),
        "--max-samples", "2", "--batch-size", "2", "--max-new-tokens", "2", "--no-progress", "--options", *TOY,
    ])
    assert status == 0
    metrics = json.loads((out / "synthetic_vqa_test_metrics.json").read_text())["metrics"]
    assert "accuracy" in metrics

    args = parse_args(["--cfg-path", path, "--options", *TOY])
    cfg = Config(args.cfg_path, list(args.options))
    model = load_demo_model(cfg, torch.device("cpu"))
    size = cfg.model_cfg.vision_encoder.image_size
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    answers = Chat(model, max_new_tokens=2).answer_batch([image], ["What is in the picture?"])
    assert len(answers) == 1 and isinstance(answers[0], str)
