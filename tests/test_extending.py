"""docs/extending.md runs as written: its code blocks become a third-party package, installed beside
minigpt, whose encoder, projector, LLM, adapter, head, dataset and new kind a 2-step training run uses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"```(?:python|yaml|toml)\n# file: (\S+)\n(.*?)```", re.S)


def doc_files() -> Dict[str, str]:
    """``{relative path: text}`` of every code block of the doc that names its file."""
    return {path: body for path, body in BLOCK.findall(DOC.read_text())}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    pkg = tmp_path_factory.mktemp("plugin_src")
    for rel, body in doc_files().items():
        if rel.startswith("my_minigpt_parts/") or rel == "pyproject.toml":
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            (pkg / rel).write_text(body)
    site = tmp_path_factory.mktemp("plugin_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(pkg)],
        check=True, capture_output=True,
    )
    return site


def _env(site: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env.pop("MINIGPT_DATA_ROOT", None)
    return env


def test_the_doc_names_one_of_each_component():
    files = doc_files()
    for name in ("encoder", "projector", "llm", "adapter", "head", "dataset", "kind"):
        assert f"my_minigpt_parts/{name}.py" in files
    assert "plugin_stage.yaml" in files


def test_every_kind_is_registered_through_the_entry_point(plugin_site, tmp_path):
    code = (
        "from minigpt import registry\n"
        "checks = [('vision_encoder', 'patch_linear'), ('projector', 'pool_linear'), ('llm', 'frozen_embedding_lm'),"
        " ('adapter', 'gated_scale'), ('head', 'answer_length'), ('builder', 'my_captions'), ('reward', 'brevity')]\n"
        "for kind, name in checks:\n"
        "    cls = registry.get_class(kind, name)\n"
        "    assert name in registry.list(kind), (kind, name)\n"
        "    print(kind, cls.__module__)\n"
        "print(registry.get_class('reward', 'brevity')()('one two three'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(plugin_site), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert all(line.split()[1].startswith("my_minigpt_parts.") for line in lines[:7])
    assert float(lines[7]) == 0.25


def test_the_docs_stage_trains_two_steps_with_every_plugin_part(plugin_site, data_root, tmp_path):
    root = tmp_path / "data"
    (root / "my_captions").mkdir(parents=True)
    (root / "my_captions" / "images").symlink_to(data_root / "synthetic" / "images")
    records = json.loads((data_root / "synthetic" / "coco_caption" / "coco_karpathy_train.json").read_text())
    (root / "my_captions" / "captions_train.json").write_text(json.dumps(records[:40]))
    cfg = tmp_path / "plugin_stage.yaml"
    cfg.write_text(doc_files()["plugin_stage.yaml"])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--cfg-path", str(cfg), "--options", "run.max_iters=2",
         "run.batch_size_train=2", f"run.data_root={root}", f"run.output_dir={out}", "run.progress=false",
         "run.log_freq=1", "run.num_threads=1", "run.test_splits=[]"],
        capture_output=True, text=True, env=_env(plugin_site), cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "event" not in r]
    assert len(steps) == 2 and all(r["dataset"] == "my_captions" for r in steps)
    from safetensors.torch import load_file

    saved = load_file(str(next(out.glob("checkpoints/step_*/trained.safetensors"))))
    assert any(k.startswith("adapters.") for k in saved)  # the adapter trained and was saved
    assert any(k.startswith("output_heads.answer_length.") for k in saved)
    assert any(k.startswith("vision_encoder.patch.") for k in saved)
    assert not any("embed_tokens" in k for k in saved)  # frozen_embedding_lm kept its embeddings
