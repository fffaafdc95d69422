"""Demo fixtures: a tiny model taught a few synthetic scenes, and ``demo.py`` serving it on a loopback port.

A randomly initialised model answers noise and never writes a box, so the server tests would prove
little with it. ``taught_checkpoint`` instead trains the demo config's own model (the quickstart's
tiny TinyGPT-V, ``[INST]`` template) on two synthetic scenes until it answers their refer, VQA and
caption prompts exactly as taught, and a question about a short MP4 (a square moving right; its
frames sampled by the preset's video processor, as the demo samples an upload), prompted the way the demo prompts (``compose_prompt``), and saves
it as a checkpoint the demo loads with ``--options model.ckpt=...``. The server tests then know what
a correct answer, and a correct box, is.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

from minigpt.demo.serving import ServerNotUp, stop_server, wait_for_server

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "eval_configs" / "quickstart_demo.yaml"
SERVER_START_TIMEOUT = 180  # seconds: imports of torch, transformers and gradio on a busy 2-core machine


@dataclass(frozen=True)
class TaughtSample:
    """One prompt the taught model answers exactly: its image (or video, task ``video``) file, task shortcut, message and answer."""

    image_path: str
    task: str
    message: str
    answer: str


@dataclass(frozen=True)
class TaughtModel:
    checkpoint: str
    samples: List[TaughtSample]

    def sample(self, task: str, scene: int = 0) -> TaughtSample:
        return [s for s in self.samples if s.task == task][scene]


@pytest.fixture(scope="session")
def taught_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TaughtModel:
    """The demo config's model trained on 2 scenes x (refer, vqa, caption) until greedy decoding repeats them."""
    import torch

    from minigpt.common.config import Config
    from minigpt.common.registry import registry
    from minigpt.datasets.synthetic import make_example
    from minigpt.demo.inputs import compose_prompt
    from minigpt.models.generation.chat import Chat, video_eval_processor
    from minigpt.models.generation.conversation import with_image, with_video
    from minigpt.models.weights.checkpoint import save_trained

    folder = tmp_path_factory.mktemp("taught")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: more threads only fight other processes
    try:
        torch.manual_seed(0)
        cfg = Config(DEMO_CONFIG, ["model.ckpt=null"])
        model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg)
        vis = Chat(model).vis_processor
        samples: List[TaughtSample] = []
        images, prompts, answers = [], [], []
        for i in range(2):
            ex = make_example(11, "train", i)
            path = str(folder / f"scene_{i}.png")
            ex.image.save(path)
            ref, question = ex.refs()[0], ex.questions[0]
            for task, message, answer in (
                ("refer", f"give me the location of {ref['expression']}", ref["box_text"]),
                ("vqa", question["question"], question["answer"]),
                ("caption", "", ex.caption),
            ):
                samples.append(TaughtSample(path, task, message, answer))
                images.append(vis(ex.image))
                prompts.append(with_image(compose_prompt(message, task)))
                answers.append(answer)
        if importlib.util.find_spec("av") and importlib.util.find_spec("decord"):
            from shared_helpers import moving_square_frames, write_mp4

            clip = str(write_mp4(folder / "square_right.mp4", moving_square_frames("right")))
            message, answer = "which way does the square move?", "the red square moves to the right"
            samples.append(TaughtSample(clip, "video", message, answer))
            images.append(video_eval_processor(model)(clip))  # [T, 3, H, W], as the demo samples an upload
            prompts.append(with_video(compose_prompt(message)))
            answers.append(answer)
        batch = {"image": images, "instruction_input": prompts, "answer": answers}  # images and a video
        opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.0)
        learned = False
        for step in range(1, 201):
            model.train()
            loss = model(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 5 == 0 and loss.item() < 0.2:
                model.eval()
                out = model.generate(batch["image"], prompts, max_new_tokens=40)
                if out == answers:
                    learned = True
                    break
        assert learned, (
            f"the tiny model did not learn its {len(answers)} samples in {step} steps (loss {loss.item():.3f})"
        )
        save_trained(model.eval(), str(folder / "checkpoint"))
    finally:
        torch.set_num_threads(threads)
    return TaughtModel(str(folder / "checkpoint"), samples)


def free_port() -> int:
    """A TCP port nobody listens on right now, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    env["GRADIO_TEMP_DIR"] = str(tmp)  # uploads and outputs land in the test's folder, not /tmp/gradio
    env.pop("MINIGPT_DATA_ROOT", None)
    return env


@dataclass
class DemoServer:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    taught: TaughtModel

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """``wait_for_server``, failing the test with the server's output if it exits or never comes up."""
    try:
        wait_for_server(url, process, timeout, poll_s=0.5)
    except ServerNotUp as exc:
        raise AssertionError(f"{exc}:\n{log_path.read_text()[-4000:]}") from None


@pytest.fixture(scope="session")
def demo_server(
    taught_checkpoint: TaughtModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoServer]:
    """``python demo.py --cfg-path eval_configs/quickstart_demo.yaml`` with the taught checkpoint, on a free port."""
    tmp = tmp_path_factory.mktemp("demo_server")
    port = free_port()
    log_path = tmp / "demo.log"
    cmd = [
        sys.executable, "demo.py", "--cfg-path", str(DEMO_CONFIG), "--server-port", str(port),
        "--options", f"model.ckpt={taught_checkpoint.checkpoint}", "run.num_threads=1",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=demo_env(tmp), stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log_path, SERVER_START_TIMEOUT)
        yield DemoServer(url, port, process, log_path, taught_checkpoint)
    finally:
        stop_server(process)
