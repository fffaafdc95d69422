"""The ``minigpt`` console command: the subcommands, shipped configs by name, and a wheel that carries them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from minigpt.cli.main import COMMANDS, main
from minigpt.common.config import Config, ConfigError
from minigpt.common.config.shipped import copy_shipped_config, find_shipped_config, resolve_config_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd, env_path=str(REPO_ROOT)):
    env = {**os.environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "eval", "demo", "export", "chat", "data", "list-cfg", "copy-cfg", "plot"):
        assert f"\n  {name} " in out, name
    assert set(COMMANDS) == {"train", "eval", "demo", "export", "chat", "data", "list-cfg", "copy-cfg", "plot"}


def test_every_command_resolves_to_a_function():
    from minigpt.cli.main import command

    for name in COMMANDS:
        assert callable(command(name)), name


def test_unknown_command_suggests_the_close_one(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'. Did you mean: train?" in capsys.readouterr().err
    assert main([]) == 2


def test_subcommand_help_is_named_after_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: minigpt train ")


def test_shipped_configs_are_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository
    for name in ("quickstart", "quickstart.yaml", "train_configs/quickstart.yaml"):
        assert find_shipped_config(name).name == "quickstart.yaml"
    assert find_shipped_config("quickstart_demo").parent.name == "eval_configs"
    (tmp_path / "quickstart.yaml").write_text("model: {arch: tinygptv}\n")
    assert resolve_config_path("quickstart.yaml") == "quickstart.yaml"  # an existing file wins
    with pytest.raises(ConfigError, match=r"quikstart: no such file.*Did you mean: train_configs/quickstart.yaml"):
        find_shipped_config("quikstart")
    with pytest.raises(ConfigError, match="no shipped config"):
        find_shipped_config("other_dir/quickstart.yaml")


def test_train_takes_a_shipped_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--cfg-path", "quickstart_stage1", "--print-config"]) == 0
    composed = yaml.safe_load(capsys.readouterr().out)
    assert composed["model"]["arch"] == "tinygptv" and composed["run"]["stage_name"] == "quickstart_stage1"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--cfg-path", "nope_stage9"])
    assert exc.value.code == 2
    assert "nope_stage9: no such file, and no shipped config has that name" in capsys.readouterr().err


def test_list_and_copy(tmp_path, capsys):
    assert main(["list-cfg"]) == 0
    out = capsys.readouterr().out
    assert "train_configs/" in out and "eval_configs/" in out
    assert "  quickstart " in out and "[pipeline]" in out and "  quickstart_demo " in out
    assert main(["list-cfg", "-p", "lavin"]) == 0
    assert "\n  quickstart_stage1 " not in capsys.readouterr().out

    assert main(["copy-cfg", "quickstart", str(tmp_path / "mine")]) == 0
    copied = tmp_path / "mine" / "train_configs" / "quickstart.yaml"
    assert copied.is_file() and (tmp_path / "mine" / "eval_configs" / "quickstart_eval.yaml").is_file()
    # the copy is a complete pipeline: its stages and eval config are found next to it
    pipe = Config.load_pipeline(str(copied)).pipeline
    assert [Path(str(s.cfg)).parent for s in pipe.stages] == [copied.parent] * len(pipe.stages)
    assert main(["copy-cfg", "quickstart", str(tmp_path / "mine")]) == 2  # never overwrites
    assert "exists: copy-cfg does not overwrite" in capsys.readouterr().err
    assert copy_shipped_config("quickstart_demo", str(tmp_path / "demo.yaml")) == [str(tmp_path / "demo.yaml")]


def test_python_m_train_runs_the_command(tmp_path):
    proc = _run(["-m", "minigpt.cli.train", "--help"], tmp_path)
    assert proc.returncode == 0 and "--cfg-path" in proc.stdout
    proc = _run(["-m", "minigpt.cli", "eval", "vqa", "--help"], tmp_path)
    assert proc.returncode == 0 and "--dataset" in proc.stdout


def test_the_wheel_carries_the_configs_and_the_command(tmp_path):
    """``pip wheel`` then the installed package, run from a folder without the repository."""
    # built from a copy, so the build leaves nothing in the checkout
    src = tmp_path / "src"
    keep = ["pyproject.toml", "README.md", "minigpt", "train_configs", "eval_configs"]
    for name in keep + [n for n in ("LICENSE", "MANIFEST.in", "setup.py") if (REPO_ROOT / n).exists()]:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(REPO_ROOT / name, src / name)
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)]
    if importlib.util.find_spec("setuptools") is not None:
        args.insert(4, "--no-build-isolation")  # offline and quicker when the build backend is at hand
    subprocess.run(args, check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("/", 2)[2] for n in names if n.startswith("minigpt/recipes/")}
    for kind in ("train_configs", "eval_configs"):
        assert {f"{kind}/{p.name}" for p in (REPO_ROOT / kind).glob("*.yaml")} <= shipped, kind
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "minigpt = minigpt.cli.main:main" in text and "minigpt-synthetic" in text

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = _run(["-m", "minigpt.cli", "list-cfg"], work, env_path=str(site))
    assert proc.returncode == 0 and "quickstart_demo" in proc.stdout, proc.stderr
    proc = _run(["-m", "minigpt.cli", "train", "--cfg-path", "train_configs/quickstart.yaml", "--print-config"],
                work, env_path=str(site))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(site / "minigpt" / "recipes" / "train_configs" / "quickstart_stage0.yaml") in proc.stdout


def test_data_lists_the_catalogue_and_generates_synthetic_data(tmp_path, capsys):
    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0
    assert "synthetic_vqa" in capsys.readouterr().out
    out = tmp_path / "synthetic"
    assert main(["data", "synthetic", "--out", str(out), "--n-train", "4", "--n-test", "2", "--num-workers", "1"]) == 0
    assert (out / "manifest.json").is_file()
