"""``demo.py``: compose an eval config, load its model through the registry, serve the chat page.

    python demo.py --cfg-path eval_configs/quickstart_demo.yaml
    python demo.py --cfg-path eval_configs/quickstart_demo.yaml --options model.ckpt=null   # random init
    python demo.py --cfg-path eval_configs/tinygptv_benchmark_eval.yaml --gpu-id 0 --server-port 7860

The config supplies ``model:`` (arch, model_type, ckpt, template, preprocess) and ``run:`` (device,
num_threads, seed, eval_max_new_tokens and eval_num_beams as the page's defaults); its
``datasets:`` section is not used. The server listens on 127.0.0.1 unless ``--server-name`` says
otherwise (``0.0.0.0`` for every interface); ``--share`` asks gradio for a public link.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import shutil
import signal
import sys
import tempfile
from typing import Any, List, Optional, Tuple

import torch

from minigpt.common.config import Config, ConfigError
from minigpt.common.config.shipped import cfg_path_arg
from minigpt.common.registry import RegistryError, registry
from minigpt.demo.inputs import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_VIDEO_BYTES,
    DEFAULT_MAX_VIDEO_SECONDS,
    UploadLimits,
    image_last_tags,
)

logger = logging.getLogger("minigpt.demo")

MAX_NEW_TOKENS_LIMIT = 512


class DemoSetupError(RuntimeError):
    """The demo cannot start (bad config, missing checkpoint, no GPU); the message says what to do."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The demo's command line (see the module docstring)."""
    p = argparse.ArgumentParser(description="Chat with a minigpt model about an image or a video, in the browser.")
    p.add_argument(
        "--cfg-path", required=True, type=cfg_path_arg, help="an eval config (eval_configs/*.yaml): model and run settings"
    )
    p.add_argument(
        "--gpu-id",
        type=int,
        default=None,
        help="CUDA device index when run.device is cuda or auto (default 0)",
    )
    p.add_argument(
        "--server-name",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--server-port", type=int, default=None, help="port (default: gradio's, 7860 or the next free one)"
    )
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (needs internet)"
    )
    p.add_argument(
        "--options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. model.ckpt=output/quickstart run.device=cpu",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="answers generated at the same time (others queue; default 1)",
    )
    p.add_argument(
        "--max-queue", type=int, default=16, help="requests that may wait; more are turned away (default 16)"
    )
    p.add_argument(
        "--max-image-mb",
        type=float,
        default=DEFAULT_MAX_IMAGE_BYTES / 2**20,
        help=f"largest upload in MB (default {DEFAULT_MAX_IMAGE_BYTES / 2**20:g})",
    )
    p.add_argument(
        "--max-image-megapixels",
        type=float,
        default=DEFAULT_MAX_IMAGE_PIXELS / 1e6,
        help=f"largest image in megapixels, judged before decoding (default {DEFAULT_MAX_IMAGE_PIXELS / 1e6:g})",
    )
    p.add_argument(
        "--max-video-mb",
        type=float,
        default=DEFAULT_MAX_VIDEO_BYTES / 2**20,
        help=f"largest video upload in MB (default {DEFAULT_MAX_VIDEO_BYTES / 2**20:g})",
    )
    p.add_argument(
        "--max-video-seconds",
        type=float,
        default=DEFAULT_MAX_VIDEO_SECONDS,
        help=f"longest video upload in seconds (default {DEFAULT_MAX_VIDEO_SECONDS:g})",
    )
    args = p.parse_args(argv)
    for name in ("concurrency", "max_queue"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_image_mb", "max_image_megapixels", "max_video_mb", "max_video_seconds"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.server_port is not None and not 0 < args.server_port < 65536:
        p.error("--server-port must lie between 1 and 65535")
    return args


def question_first_tags(cfg: Config) -> Tuple[str, ...]:
    """The task tags whose questions go before the image (``run.image_last_tasks``); a bad name stops the demo."""
    try:
        return image_last_tags(list(cfg.run_cfg.get("image_last_tasks") or ()))
    except ValueError as exc:
        raise DemoSetupError(str(exc)) from None


def check_checkpoints(cfg: Config) -> None:
    """Stop with advice when ``model.ckpt`` names a checkpoint that is not there."""
    from minigpt.models.weights.checkpoint import expand_checkpoints, resolve_checkpoint_file

    ckpt = cfg.model_cfg.get("ckpt")
    try:
        paths = expand_checkpoints(ckpt)
    except (FileNotFoundError, ValueError) as exc:
        raise DemoSetupError(f"model.ckpt (from {cfg.source_of('model.ckpt')}): {exc}") from exc
    for path in paths:
        try:
            resolve_checkpoint_file(str(path))
        except FileNotFoundError as exc:
            raise DemoSetupError(
                f"model.ckpt (from {cfg.source_of('model.ckpt')}) names {path}, which holds no checkpoint: {exc}.\n"
                "The demo serves a trained model. Train it first: for eval_configs/quickstart_demo.yaml that is "
                "the quickstart, `python train.py --cfg-path train_configs/quickstart.yaml`, which writes "
                "output/quickstart (start the demo from the folder that holds output/), "
                "or point to a checkpoint with --options model.ckpt=PATH.\n"
                "To serve a randomly initialised model on purpose (its answers are noise), "
                "add --options model.ckpt=null."
            ) from exc


def resolve_device(run_device: str, gpu_id: Optional[int]) -> torch.device:
    """``run.device`` (auto | cpu | cuda) and ``--gpu-id`` -> the device the model is served on."""
    from minigpt.common.launch import resolve_device as run_device_of

    if run_device == "cpu" and gpu_id is not None:
        logger.warning("--gpu-id %d ignored: the config serves on the CPU (set --options run.device=cuda)", gpu_id)
    try:
        return run_device_of(run_device, 0 if gpu_id is None else gpu_id)
    except (ValueError, RuntimeError) as exc:
        raise DemoSetupError(f"{exc} (--options run.device=..., --gpu-id N)") from exc


def load_demo_model(cfg: Config, device: torch.device) -> Any:
    """The config's model, built through the registry from ``model:`` (checkpoints included), in eval mode."""
    from minigpt.common.launch import seed_everything

    rc, mc = cfg.run_cfg, cfg.model_cfg
    if rc.get("num_threads"):
        torch.set_num_threads(int(rc.num_threads))
    seed_everything(int(rc.seed))  # parts a checkpoint does not cover start the same on every start
    model = registry.get_model_class(mc.arch).from_config(mc)
    if not mc.get("ckpt"):
        logger.warning("model.ckpt is not set: serving a randomly initialised model (its answers are noise)")
    return model.eval().to(device)


def describe(cfg: Config, device: torch.device) -> str:
    """The line under the page's title: which model, which checkpoint, which device."""
    mc = cfg.model_cfg
    ckpt = mc.get("ckpt")
    if not ckpt:
        where = "no checkpoint (random init)"
    elif isinstance(ckpt, str):
        where = f"checkpoint `{ckpt}`"
    else:
        where = f"checkpoints `{'`, `'.join(map(str, ckpt))}`"
    return (
        f"`{mc.arch}` / `{mc.model_type}`, {where}, on `{device}`. Upload an image (or a video), pick a task "
        "shortcut or type a question; boxes in an answer are drawn on the image."
    )


def main(argv: Optional[List[str]] = None) -> int:
    """Compose the config, load the model, serve the page until interrupted; 2 on a setup error."""
    from minigpt.common.logger import setup_logging

    args = parse_args(argv)
    setup_logging()
    try:
        if Config.is_pipeline_file(args.cfg_path):
            raise DemoSetupError(
                f"{args.cfg_path} is a pipeline (training) config; the demo takes an eval config with "
                "model: and run: sections, e.g. eval_configs/quickstart_demo.yaml"
            )
        cfg = Config(args.cfg_path, list(args.options))
        check_checkpoints(cfg)
        question_first = question_first_tags(cfg)
        device = resolve_device(str(cfg.run_cfg.device), args.gpu_id)
        max_new_tokens = min(max(1, int(cfg.run_cfg.eval_max_new_tokens)), MAX_NEW_TOKENS_LIMIT)
        num_beams = max(1, int(cfg.run_cfg.eval_num_beams))
        model = load_demo_model(cfg, device)
    except (ConfigError, RegistryError, DemoSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from minigpt.demo.app import build_demo, launch_demo
    from minigpt.demo.examples import write_examples
    from minigpt.demo.session import DemoChat

    limits = UploadLimits(
        max_bytes=int(args.max_image_mb * 2**20),
        max_pixels=int(args.max_image_megapixels * 1e6),
        max_video_bytes=int(args.max_video_mb * 2**20),
        max_video_seconds=float(args.max_video_seconds),
    )
    chat = DemoChat(
        model,
        limits=limits,
        max_new_tokens=max_new_tokens,
        max_new_tokens_limit=MAX_NEW_TOKENS_LIMIT,
        num_beams=num_beams,
        precision=str(cfg.run_cfg.precision),
        # a model made for text-only and image questions alike answers a question without an image
        text_only=bool(getattr(model, "ANSWERS_TEXT_ONLY", False)),
        image_last_tags=question_first,  # the order the checkpoint was trained in (run.image_last_tasks)
    )
    examples_dir = tempfile.mkdtemp(prefix="minigpt-demo-examples-")
    atexit.register(shutil.rmtree, examples_dir, True)
    # `kill` (SIGTERM) would end the process without atexit handlers: exit normally instead
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    examples = write_examples(examples_dir, image_size=64)
    title = f"minigpt demo: {cfg.model_cfg.arch} ({cfg.model_cfg.model_type})"
    demo = build_demo(
        chat, examples, title=title, description=describe(cfg, device), concurrency_limit=args.concurrency
    )
    logger.info("serving on http://%s:%s", args.server_name, args.server_port or "<gradio's port>")
    launch_demo(
        demo,
        server_name=args.server_name,
        server_port=args.server_port,
        share=args.share,
        max_queue=args.max_queue,
        max_file_size=max(limits.max_bytes, limits.max_video_bytes),  # each kind's own cap is checked on upload
        allowed_paths=[examples_dir],
    )
    return 0
