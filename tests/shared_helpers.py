"""Helpers several test modules use.

Importable because pytest puts tests/, where conftest.py is, on sys.path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from transformers import LogitsProcessor

# TinyGPT-V's real-size parts (EVA ViT -> Q-Former -> linear layers -> Phi with LoRA) at toy widths: the
# library's twin (minigpt/common/config/toy.py) at 28 px with 4 queries. Merged over a real preset's model
# section, they build the real composition in milliseconds
TOY_REAL_WIDTHS = {"scale": "toy", "vision_encoder": {"image_size": 28}, "projector": {"num_query_token": 4}}


class ForceTokens(LogitsProcessor):
    """Makes every row emit ``ids`` one by one (then the last one forever); ``calls`` counts the steps asked.

    ``delay`` sleeps that many seconds per step, for tests that need generation to take a while.
    """

    def __init__(self, ids: Sequence[int], delay: float = 0.0):
        self.ids, self.calls, self.delay = list(ids), 0, delay

    def __call__(self, input_ids, scores):
        target = self.ids[min(self.calls, len(self.ids) - 1)]
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        forced = torch.full_like(scores, -1e9)
        forced[:, target] = 0.0
        return forced


def record_train_batches(monkeypatch) -> List[List[str]]:
    """The sample ids of each batch ``BaseTask.train_step`` trains on from now on, in order."""
    from minigpt.tasks.base_task import BaseTask

    seen: List[List[str]] = []
    original = BaseTask.train_step

    def recording(self, model, samples):
        seen.append(list(samples["sample_id"]))
        return original(self, model, samples)

    monkeypatch.setattr(BaseTask, "train_step", recording)
    return seen

# the shipped config folders (conftest.py is not importable by name: tests/demo has one too)
STAGE_CONFIGS = Path(__file__).resolve().parent.parent / "train_configs"
EVAL_CONFIGS = Path(__file__).resolve().parent.parent / "eval_configs"


def missing_arch(path: Path) -> Optional[str]:
    """Why the shipped config ``path`` cannot compose in this checkout, or None.

    A config (or a stage or the evaluation of a pipeline) may name a model arch whose family is not
    registered here yet (``lavin`` until the LaVIN model lands); the shipped-config tests skip it, saying so.
    """
    from minigpt.common.config import Config, load_yaml
    from minigpt.common.registry import registry

    files = [path]
    if Config.is_pipeline_file(path):
        pipe = Config.load_pipeline(path).pipeline
        files = [Path(str(s.cfg)) for s in pipe.stages if s.get("cfg")] + ([Path(str(pipe.eval.cfg))] if pipe.get("eval") else [])
    for file in files:
        arch = ((load_yaml(file) or {}).get("model") or {}).get("arch")
        if arch and arch not in registry.list_models():
            return f"{path.name}: model arch {arch!r} ({file.name}) is not registered in this checkout"
    return None


def shipped_params(paths: Sequence[Path]) -> List[Any]:
    """``paths`` as parametrize values, those whose model arch is not registered marked skip (:func:`missing_arch`)."""
    import pytest

    out: List[Any] = []
    for path in paths:
        reason = missing_arch(path)
        out.append(pytest.param(path, marks=pytest.mark.skip(reason=reason)) if reason else path)
    return out


def stage_at_root(cfg_path: Path, yaml_text: str, root: Path, out: Path, max_iters: int, *extra: str):
    """A tiny stage ``yaml_text`` written to ``cfg_path``, composed to train ``max_iters`` steps on ``root``."""
    from minigpt.common.config import Config

    cfg_path.write_text(yaml_text)
    options = [f"run.max_iters={max_iters}", "run.batch_size_train=4", f"run.data_root={root}",
               f"run.output_dir={out}", "run.progress=false", "run.log_freq=1", "run.num_threads=1",
               "run.test_splits=[]", *extra]
    return Config(cfg_path, options)


# -- small videos --------------------------------------------------------------------------------
SQUARE_COLOURS = {"red": (230, 40, 40), "blue": (40, 80, 230)}


def moving_square_frames(direction: str, colour: str = "red", n: int = 8, size: int = 64) -> List[Any]:
    """``n`` uint8 ``[size, size, 3]`` frames of a square crossing a grey field ``left`` or ``right``."""
    import numpy as np

    side = size // 4
    frames = []
    for i in range(n):
        step = (size - side) * i // max(1, n - 1)
        x = step if direction == "right" else size - side - step
        frame = np.full((size, size, 3), 128, np.uint8)
        frame[size // 2 - side // 2: size // 2 + side // 2, x: x + side] = SQUARE_COLOURS[colour]
        frames.append(frame)
    return frames


def write_mp4(path: Path, frames: Sequence[Any], fps: int = 8) -> Path:
    """``frames`` (uint8 ``[H, W, 3]``) as an H.264 MP4 file (PyAV, the ``test`` extra), which browsers play."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return path


def write_addition_instructions(path: Path, n: int = 40) -> Path:
    """``n`` Unnatural-Instructions records ("add i and i+1" -> the sum) as a JSON file: text-only data."""
    import json

    records = [
        {"instances": [{"instruction_with_input": f"add {i} and {i + 1}", "constraints": None, "output": str(2 * i + 1)}]}
        for i in range(n)
    ]
    path = Path(path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(records))
    return path


def assert_trains_vision_encoder(model: Any, batch: Any) -> None:
    """One training step's backward on ``batch`` gives a finite loss and a gradient in the trainable vision encoder.

    The model is left in eval mode with its gradients cleared.
    """
    model.train()
    try:
        out = model(batch)
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        grads = [p.grad for p in model.vision_encoder.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def train_on_two_processes(cfg_path: Path, out: Path, options: Sequence[str], timeout: int) -> List[Dict[str, Any]]:
    """``train.py`` on ``cfg_path`` under torchrun (2 processes, gloo, one thread each); the step rows it logged.

    ``options`` are ``--options`` overrides after ``run.test_splits=[]`` and the gloo backend; the
    run must write ``out/metrics.jsonl`` (``run.output_dir`` is the caller's to set). A failed run
    fails the test with the end of its stderr.
    """
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    env.pop("MINIGPT_DATA_ROOT", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "train.py",
           "--cfg-path", str(cfg_path), "--options", "run.test_splits=[]", "run.dist_backend=gloo", *options]  # fmt: skip
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "event" not in r]


def stage0_model(preset: str = "tinygptv_tiny", **overrides: Any) -> Any:
    """The ``vision_pretrain`` (stage-0) model of ``preset`` with dotted-key ``overrides`` of its model config."""
    from omegaconf import OmegaConf

    from minigpt.common.registry import registry

    cls = registry.get_model_class("vision_pretrain")
    cfg = OmegaConf.load(cls.default_config_path(preset)).model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cls.from_config(cfg)
