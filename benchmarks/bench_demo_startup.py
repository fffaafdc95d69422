"""Seconds from ``python demo.py ...`` to a serving page and to the first answer, on the CPU.

Not a test. Each run starts ``demo.py`` in a fresh process on a free loopback port, polls the page
until it answers (``server_up_s``), then asks one question about one of the demo's example images
through ``gradio_client`` (``first_answer_s``, counted from the launch; ``answer_request_s`` is that
request alone, connection included; ``demo_cpu_s`` is the CPU time the demo process used until
then, which is close to what the start-up takes on an idle core). Runs are sequential; the medians of ``--runs`` runs are the
figures. Prints one JSON object (and writes it to ``--out`` when given). Run from the repository root::

    python benchmarks/bench_demo_startup.py [--cfg-path eval_configs/quickstart_demo.yaml] [--runs 3]

With the default config the model is the quickstart's (``output/quickstart``, all its stages). When those
checkpoints are missing, ``--random-if-missing`` serves a freshly saved random-init checkpoint of the
same model instead (same loading work, noise answers) and says so in the output.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from minigpt.demo.serving import stop_server, wait_for_server  # noqa: E402  (after the repo is on sys.path)

DEFAULT_CFG = os.path.join("eval_configs", "quickstart_demo.yaml")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def one_run(
    cfg_path: str, options: List[str], image: str, task: str, message: str, timeout: float, tmp: str
) -> Dict[str, Any]:
    """Launch, wait for the page, ask once, stop; the timings of that start."""
    from gradio_client import Client, handle_file

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "demo.py", "--cfg-path", cfg_path, "--server-port", str(port)]
    if options:
        cmd += ["--options", *options]
    # uploads and answer images go to this run's folder, not gradio's shared cache
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": os.path.join(tmp, "gradio")}
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_server(url, process, timeout)
            except RuntimeError:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-4000:])
                raise
            up = time.perf_counter() - t0
            t1 = time.perf_counter()
            client = Client(
                url, verbose=False, download_files=os.path.join(tmp, "downloads"), analytics_enabled=False
            )
            chat, _boxes, status, _ = client.predict(
                handle_file(image), message, task, 0.0, 1, 48, api_name="/ask"
            )
            done = time.perf_counter()
            cpu = _cpu_seconds(process.pid)
            client.close()
        finally:
            stop_server(process)
    answer = chat[-1]["content"] if chat else None  # HTML-escaped for the page
    if isinstance(answer, list):
        answer = "".join(part.get("text", "") for part in answer if isinstance(part, dict))
    return {
        "server_up_s": round(up, 2),
        "first_answer_s": round(done - t0, 2),
        "answer_request_s": round(done - t1, 2),
        "demo_cpu_s": None if cpu is None else round(cpu, 2),
        "answer": None if answer is None else html.unescape(answer),
        "status": status,
    }


def _checkpoints_present(cfg_path: str, options: List[str]) -> bool:
    from minigpt.common.config import Config
    from minigpt.demo.cli import DemoSetupError, check_checkpoints

    try:
        check_checkpoints(Config(os.path.join(REPO, cfg_path), options))
    except DemoSetupError:
        return False
    return True


def _random_checkpoint(cfg_path: str, folder: str) -> str:
    import torch

    from minigpt.common.config import Config
    from minigpt.common.registry import registry
    from minigpt.models.weights.checkpoint import save_trained

    torch.manual_seed(0)
    mc = Config(os.path.join(REPO, cfg_path), ["model.ckpt=null"]).model_cfg
    save_trained(registry.get_model_class(mc.arch).from_config(mc), folder)
    return folder


def _machine() -> Dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_1m_before": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cfg-path", default=DEFAULT_CFG, help="the demo config, relative to the repository root")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="passed on to demo.py")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the page")
    p.add_argument(
        "--random-if-missing",
        action="store_true",
        help="serve a random-init checkpoint when the config's is missing",
    )
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from minigpt.demo.examples import write_examples

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        options = list(args.options)
        model = "the config's checkpoints"
        if not _checkpoints_present(args.cfg_path, options):
            if not args.random_if_missing:
                print(f"error: {args.cfg_path} names checkpoints that are missing (see demo.py's message); "
                      "train them, or pass --random-if-missing", file=sys.stderr)  # fmt: skip
                return 2
            options.append(f"model.ckpt={_random_checkpoint(args.cfg_path, os.path.join(tmp, 'ckpt'))}")
            model = "random-init checkpoint (the config's checkpoints are missing)"
        example = write_examples(os.path.join(tmp, "examples"))[0]
        machine = _machine()
        runs = [
            one_run(
                args.cfg_path, options, example.image_path, example.task, example.message, args.timeout, tmp
            )
            for _ in range(args.runs)
        ]
    keys = ("server_up_s", "first_answer_s", "answer_request_s", "demo_cpu_s")
    report = {
        "benchmark": "demo_startup",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "cfg_path": args.cfg_path,
        "model": model,
        "question": {"task": example.task, "message": example.message, "expected": example.expected},
        "median": {
            k: round(statistics.median(r[k] for r in runs), 2)
            for k in keys
            if all(r[k] is not None for r in runs)
        },
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
