"""Every eval config (eval_configs/*.yaml) runs at toy width through the entry points that take it.

Each config found by glob is classified by what it is for (a new one is picked up as it lands):

* ``evaluate``: it lists ``datasets:``; ``eval_scripts/evaluate.py`` scores their test splits;
* ``benchmarks``: its header names ``eval_scripts/eval_<family>.py --cfg-path eval_configs/<it>``; each of
  the four eval scripts runs every benchmark of its family on the real-layout synthetic root, which holds
  them in their released formats (RefCOCO/+/g on split ``val``, the held-out split the synthetic refs have);
* ``demo``: its header names ``demo.py --cfg-path eval_configs/<it>``; ``demo.py`` composes it, checks it
  and loads the model, the page is not served, and its chat answers a question about an image;
* ``t2i``: its header names ``eval_scripts/eval_t2i.py --cfg-path eval_configs/<it>``; the script has the
  config's LLM answer drawing requests for synthetic captions and draws and scores what it writes;
* ``model-only`` (none of those): the model builds at toy width and answers one image.

Always ``model.scale=toy`` and ``model.ckpt=null``: the model's parts at toy widths, random init.
"""

from __future__ import annotations

import json
import re
import runpy
import signal
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from shared_helpers import EVAL_CONFIGS
from test_shipped_twins import root_for

from minigpt.common.config import Config
from minigpt.common.registry import registry

REPO = Path(__file__).resolve().parent.parent
TOY = ["model.scale=toy", "model.ckpt=null"]
CPU = ["run.device=cpu", "run.precision=fp32", "run.num_workers=0", "run.num_threads=1", "run.progress=false"]
BENCHMARK_SCRIPTS = ("eval_vqa.py", "eval_ref.py", "eval_caption.py", "eval_scienceqa.py", "eval_pope.py")


def kinds_of(path: Path) -> List[str]:
    """What ``path`` is for: ``evaluate``, ``benchmarks``, ``demo``, ``t2i`` (any of them), else ``model-only``."""
    text = path.read_text()
    named = rf"--cfg-path eval_configs/{re.escape(path.name)}\b"
    kinds = []
    if Config(path, TOY).config.get("datasets"):
        kinds.append("evaluate")
    if re.search(r"eval_scripts/eval_(?!t2i\.)\w+\.py " + named, text):
        kinds.append("benchmarks")
    if re.search(r"eval_scripts/eval_t2i\.py " + named, text):
        kinds.append("t2i")
    if re.search(r"\bdemo\.py " + named, text):
        kinds.append("demo")
    return kinds or ["model-only"]


EVAL_RUNS: List[Tuple[Path, str]] = [(p, k) for p in sorted(EVAL_CONFIGS.glob("*.yaml")) for k in kinds_of(p)]


def test_the_shipped_eval_configs_are_classified():
    kinds = {(p.name, k) for p, k in EVAL_RUNS}
    assert {
        ("quickstart_eval.yaml", "evaluate"),
        ("tinygptv_benchmark_eval.yaml", "benchmarks"),
        ("quickstart_demo.yaml", "demo"),
        ("easygen_t2i_eval.yaml", "t2i"),
    } <= kinds
    assert {p.name for p, _ in EVAL_RUNS} == {p.name for p in EVAL_CONFIGS.glob("*.yaml")}


def _run_script(script: Path, argv: List[str], monkeypatch) -> int:
    """``python <script> <argv>`` in this process (its ``__main__`` block); returns the exit status."""
    monkeypatch.setattr("minigpt.common.logger.setup_logging", lambda: None)
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    return done.value.code


def _evaluate(path: Path, root: Path, out: Path, monkeypatch, capsys) -> None:
    options = [*TOY, *CPU, f"run.data_root={root}", f"run.output_dir={out}", "run.max_eval_samples=4",
               "run.batch_size_eval=4", "run.eval_max_new_tokens=4"]
    assert _run_script(REPO / "eval_scripts" / "evaluate.py", ["--cfg-path", str(path), "--options", *options],
                       monkeypatch) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["all_metrics"] and result["checkpoint"] is None
    assert "metrics written to" in capsys.readouterr().out


def _benchmarks(path: Path, root: Path, out: Path, monkeypatch, capsys) -> None:
    from minigpt.evaluation.benchmarks import BENCHMARKS

    for script in BENCHMARK_SCRIPTS:
        family = script[len("eval_"):-len(".py")]
        names = [n for n, b in BENCHMARKS.items() if b.family == family and not n.startswith("synthetic_")]
        argv = ["--cfg-path", str(path), "--dataset", ",".join(names), "--data-root", str(root),
                "--output-dir", str(out), "--max-samples", "2", "--batch-size", "2", "--max-new-tokens", "3",
                "--no-progress", "--options", *TOY, *CPU]
        if family == "ref":
            argv += ["--split", "val"]
        assert _run_script(REPO / "eval_scripts" / script, argv, monkeypatch) == 0, script
        printed = capsys.readouterr().out
        assert "metrics written to" in printed, script
        for name in names:
            split = "val" if family == "ref" else BENCHMARKS[name].default_split
            metrics = json.loads((out / f"{name}_{split}_metrics.json").read_text())
            assert metrics["samples"] == 2 and metrics["metrics"], (script, name)
            assert name in printed, (script, name)


def _demo(path: Path, root: Path, out: Path, monkeypatch, capsys) -> None:
    from minigpt.datasets.synthetic import make_example
    from minigpt.demo import app

    served = {}
    monkeypatch.setattr(app, "build_demo", lambda chat, examples, **kw: served.update(chat=chat, examples=examples))
    monkeypatch.setattr(app, "launch_demo", lambda demo, **kw: None)
    sigterm = signal.getsignal(signal.SIGTERM)  # demo.py exits normally on SIGTERM; this process keeps its own
    try:
        assert _run_script(REPO / "demo.py", ["--cfg-path", str(path), "--options", *TOY, *CPU], monkeypatch) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    image = out / "scene.png"
    out.mkdir(parents=True, exist_ok=True)
    make_example(3, "test", 0).image.save(image)
    replies = list(served["chat"].respond(None, str(image), "what color is the square?", "vqa", max_new_tokens=4))
    final = replies[-1]
    assert final.done and not final.error, final.status
    ((question, answer),) = final.conversation.turns
    assert question == "[vqa] what color is the square?" and isinstance(answer, str)
    assert final.messages[-1]["role"] == "assistant"
    assert served["examples"], "the page's example images"


def _t2i(path: Path, root: Path, out: Path, monkeypatch, capsys) -> None:
    prompts = root / "synthetic" / "coco_caption" / "coco_karpathy_test.json"
    argv = ["--cfg-path", str(path), "--prompts", str(prompts), "--request", "Draw {}", "--t2i", "synthetic_shapes",
            "--output-dir", str(out), "--max-samples", "2", "--batch-size", "2", "--max-new-tokens", "4",
            "--no-progress", "--options", *TOY, "run.num_threads=1"]
    assert _run_script(REPO / "eval_scripts" / "eval_t2i.py", argv, monkeypatch) == 0
    metrics = json.loads((out / "t2i_test_metrics.json").read_text())
    # a random LLM writes no <Img>...</Img>: nothing is drawn, which the script reports rather than fails on
    assert metrics["samples"] == 2 and metrics["metrics"] == {"drawn": 0.0}, metrics
    assert "t2i" in capsys.readouterr().out


def _model_only(path: Path, root: Path, out: Path, monkeypatch, capsys) -> None:
    cfg = Config(path, TOY)
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval()
    size = cfg.model_cfg.vision_encoder.image_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = model({"image": image, "instruction_input": ["<Img><ImageHere></Img> [vqa] What is it?"],
                      "answer": ["a circle"]})["loss"]
        answers = model.generate(image, ["<Img><ImageHere></Img> What is it?"], max_new_tokens=3)
    assert torch.isfinite(loss) and len(answers) == 1 and isinstance(answers[0], str)


RUNS = {"evaluate": _evaluate, "benchmarks": _benchmarks, "demo": _demo, "t2i": _t2i, "model-only": _model_only}


@pytest.mark.parametrize("path, kind", EVAL_RUNS, ids=[f"{p.name}-{k}" for p, k in EVAL_RUNS])
def test_each_eval_config_runs_at_toy_width(path, kind, real_layout_root, data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path / "no_weights"))  # empty: no weight file can be read
    root = data_root if kind == "t2i" else root_for(path, data_root, real_layout_root)  # t2i: the synthetic captions
    RUNS[kind](path, root, tmp_path / "out", monkeypatch, capsys)


def test_an_unrecognised_model_only_config_builds_and_answers(tmp_path, monkeypatch, capsys):
    """The fallback, for a config that names no entry point (e.g. one pointing at a released checkpoint)."""
    path = tmp_path / "released_stage4.yaml"
    path.write_text("# a released checkpoint\nmodel: {arch: tinygptv, model_type: stage4, ckpt: /nowhere/x.pth}\n")
    assert kinds_of(path) == ["model-only"]
    named = tmp_path / "served.yaml"
    named.write_text(f"# python demo.py --cfg-path eval_configs/{named.name}\n{path.read_text()}")
    assert kinds_of(named) == ["demo"]
    monkeypatch.setenv("MINIGPT_MODEL_ROOT", str(tmp_path / "no_weights"))
    _model_only(path, tmp_path, tmp_path / "out", monkeypatch, capsys)
