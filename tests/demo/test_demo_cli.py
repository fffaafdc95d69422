"""``demo.py``'s command line: defaults, the advice when the quickstart model is missing, devices."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from minigpt.common.config import Config
from minigpt.demo.cli import DemoSetupError, check_checkpoints, main, parse_args, resolve_device

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "eval_configs" / "quickstart_demo.yaml"


def test_defaults_listen_on_loopback():
    args = parse_args(["--cfg-path", str(DEMO_CONFIG)])
    assert args.server_name == "127.0.0.1" and not args.share
    assert args.concurrency == 1 and args.max_queue == 16
    assert args.max_image_mb == 20 and args.max_image_megapixels == 50


@pytest.mark.parametrize(
    "argv, culprit",
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--max-image-mb", "0"], "--max-image-mb"),
        (["--server-port", "70000"], "--server-port"),
    ],
)
def test_bad_arguments_are_named(argv, culprit, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--cfg-path", str(DEMO_CONFIG), *argv])
    assert culprit in capsys.readouterr().err


def test_the_quickstart_config_names_the_pipeline_folder():
    cfg = Config(DEMO_CONFIG)
    assert cfg.model_cfg.ckpt == "output/quickstart"  # stands for all its stages (pipeline.json)
    assert cfg.run_cfg.device == "cpu"


def test_without_the_quickstart_model_the_demo_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no output/quickstart here
    assert main(["--cfg-path", str(DEMO_CONFIG)]) == 2
    err = capsys.readouterr().err
    assert "output/quickstart" in err and "holds no checkpoint" in err
    assert "python train.py --cfg-path train_configs/quickstart.yaml" in err
    assert "--options model.ckpt=null" in err


def _manifest(root, stages):
    import json

    from minigpt.common.constants import PIPELINE_FILE

    root.mkdir(parents=True, exist_ok=True)
    (root / PIPELINE_FILE).write_text(json.dumps({"stages": [{"name": s, "dir": s} for s in stages]}))


def test_a_partly_trained_quickstart_names_the_missing_stage(tmp_path, monkeypatch):
    from minigpt.common.constants import TRAINED_FILE

    out = tmp_path / "output/quickstart"
    for s in ("stage0", "stage1"):
        (out / s).mkdir(parents=True)
    (out / f"stage0/{TRAINED_FILE}").write_bytes(b"")  # stage1's folder exists, its checkpoint does not
    _manifest(out, ["stage0", "stage1"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DemoSetupError, match=r"names output/quickstart/stage1, which holds no checkpoint"):
        check_checkpoints(Config(DEMO_CONFIG))


def test_a_pipeline_that_finished_no_stage_is_named(tmp_path, monkeypatch):
    _manifest(tmp_path / "output/quickstart", [])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DemoSetupError, match=r"pipeline.json: the pipeline has no finished stage yet"):
        check_checkpoints(Config(DEMO_CONFIG))


def test_a_pipeline_config_is_refused(capsys):
    assert main(["--cfg-path", str(REPO_ROOT / "train_configs" / "quickstart.yaml")]) == 2
    assert "is a pipeline (training) config" in capsys.readouterr().err


def test_a_bad_option_is_a_config_error(capsys):
    assert main(["--cfg-path", str(DEMO_CONFIG), "--options", "model.ckpts=null"]) == 2
    assert "model.ckpts" in capsys.readouterr().err


def test_devices(caplog):
    with caplog.at_level(logging.WARNING, logger="minigpt.demo"):
        assert resolve_device("cpu", 1) == torch.device("cpu")
    assert "--gpu-id 1 ignored" in caplog.text
    with pytest.raises(DemoSetupError, match="run.device must be auto, cpu or cuda"):
        resolve_device("tpu", None)
    if torch.cuda.is_available():
        assert resolve_device("auto", None) == torch.device("cuda", 0)
        with pytest.raises(DemoSetupError, match="CUDA device"):
            resolve_device("cuda", torch.cuda.device_count())
    else:
        assert resolve_device("auto", 0) == torch.device("cpu")
        with pytest.raises(DemoSetupError, match="no CUDA device is visible"):
            resolve_device("cuda", 0)


def test_wait_for_server_reports_a_process_that_exits_before_serving():
    import subprocess
    import sys

    from minigpt.demo.serving import ServerNotUp, wait_for_server

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(ServerNotUp, match="exited with 3 before serving"):
        wait_for_server("http://127.0.0.1:9/", proc, timeout=5)


def test_stop_server_terminates_and_kills_a_process_that_ignores_sigterm():
    import signal
    import subprocess
    import sys

    from minigpt.demo.serving import stop_server

    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_server(polite, grace_s=10) == -signal.SIGTERM
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert stubborn.stdout.readline().strip() == "ready"  # the handler is in place before SIGTERM comes
    assert stop_server(stubborn, grace_s=0.5) == -signal.SIGKILL


def test_an_unknown_question_first_task_is_named(capsys):
    argv = ["--cfg-path", str(DEMO_CONFIG), "--options", "model.ckpt=null", "run.image_last_tasks=[identfy]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "run.image_last_tasks" in err and "'identfy'" in err


def test_the_demo_asks_identify_in_the_order_the_quickstart_trains_and_evaluates_it():
    # the quickstart's stage 4 and evaluation put the [identify] question before the image; the demo must too
    from minigpt.demo.cli import question_first_tags

    demo = question_first_tags(Config(DEMO_CONFIG, ["model.ckpt=null"]))
    evaluation = Config(REPO_ROOT / "eval_configs" / "quickstart_eval.yaml", [])
    trained = Config(REPO_ROOT / "train_configs" / "quickstart_stage4.yaml", [])
    for cfg in (evaluation, trained):
        assert bool(cfg.datasets_cfg.synthetic_invrefcoco.image_last) == ("[identify]" in demo)
        assert not cfg.datasets_cfg.synthetic_refcoco.get("image_last", False)
    assert "[refer]" not in demo
