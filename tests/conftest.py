"""Shared fixtures: a small synthetic data root, tiny run options, and a runner for the CLI entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

import pytest
from shared_helpers import EVAL_CONFIGS, STAGE_CONFIGS  # noqa: F401  (fixtures below and tests use them)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding ``synthetic/`` (200 train / 40 test images, shards of 50 so two ranks each get one;
    the image-generation dialogues and documents; 40 / 8 drawing requests; 8 train / 4 test clips under
    ``synthetic/videochat``)."""
    from minigpt.datasets.synthetic import generate_synthetic_dataset
    from minigpt.datasets.synthetic.videos import generate_synthetic_videos

    root = tmp_path_factory.mktemp("data")
    generate_synthetic_dataset(root / "synthetic", n_train=200, n_test=40, seed=0, shard_size=50, progress=False,
                               easygen=True, creation={"train": 40, "test": 8})
    generate_synthetic_videos(root / "synthetic", n_train=8, n_test=4)
    return root


@pytest.fixture(scope="session")
def real_layout_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic scenes laid out where every real builder's default YAML and every benchmark of
    eval_scripts/ look (``real_layout``): 40 train / 10 test images."""
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("real_layout")
    generate_synthetic_dataset(root, n_train=40, n_test=10, seed=0, shard_size=16, progress=False, real_layout=True)
    return root


@pytest.fixture(scope="session")
def tiny_options(data_root: Path) -> Callable[..., List[str]]:
    """``tiny_options(output_dir, max_iters=3, extra=())``: --options that make a stage run in seconds."""

    def make(output_dir: os.PathLike, max_iters: int = 3, extra: Sequence[str] = ()) -> List[str]:
        return [
            f"run.max_iters={max_iters}",
            "run.batch_size_train=4",
            "run.batch_size_eval=8",
            f"run.data_root={data_root}",
            f"run.output_dir={output_dir}",
            "run.progress=false",
            "run.max_eval_samples=8",
            "run.log_freq=1",
            # one thread per process: on a small shared machine, intra-op threads fighting other
            # processes make each step tens of times slower
            "run.num_threads=1",
            *extra,
        ]

    return make


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("MINIGPT_DATA_ROOT", None)
    return env


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(args, timeout=300)``: run ``python <args>`` in the repo root; returns the completed process."""

    def run(args: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *map(str, args)],
            cwd=REPO_ROOT,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def stage1_run(tmp_path_factory, tiny_options, run_cli):
    """One `train.py` run of quickstart stage 1 (3 steps); later tests load its checkpoint."""
    out = tmp_path_factory.mktemp("stage1") / "out"
    proc = run_cli(["train.py", "--cfg-path", STAGE_CONFIGS / "quickstart_stage1.yaml", "--options", *tiny_options(out)])
    assert proc.returncode == 0, f"stage 1 failed:\n{proc.stderr[-4000:]}"
    return out, proc


@pytest.fixture
def stage_from_yaml(tiny_options, tmp_path):
    """``make(yaml_text, output_dir, max_iters, *options)`` -> a composed Config of a tiny stage on the shared data."""
    from minigpt.common.config import Config

    def make(text: str, out: Path, max_iters: int, *extra: str) -> Config:
        path = tmp_path / "stage.yaml"
        path.write_text(text)
        return Config(path, [*tiny_options(out, max_iters), *extra])

    return make
