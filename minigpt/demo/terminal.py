"""``minigpt chat``: talk to a model about images in the terminal, the answer printed as it is generated.

    minigpt chat --cfg-path quickstart_demo [--image scene.png] [--options model.ckpt=output/quickstart]

At the ``>>>`` prompt, a line is a question (a task tag such as ``[refer]``, ``[vqa]`` or
``[caption]`` in front works as in the browser demo, and ``[caption]`` alone asks for a caption);
``/image PATH`` starts a conversation about another image, ``/save PATH`` writes the image with
the last answer's boxes drawn, ``/reset`` forgets the turns, ``/exit`` (or Ctrl-D) leaves. The config is an eval config, as for ``minigpt demo``; it picks the
model, the device and the default answer length.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, TextIO

from PIL import Image

from minigpt.common.config.shipped import cfg_path_arg
from minigpt.common.grounding import parse_boxes
from minigpt.demo.inputs import DemoInputError, UploadLimits, compose_prompt, load_image
from minigpt.models.generation.chat import Chat

PROMPT = ">>> "
HELP = (
    "commands: /image PATH (talk about another image), /save PATH (the image with the last answer's boxes), "
    "/reset (forget the turns), /help, /exit (or Ctrl-D). "
    "Anything else is a question; a task tag in front ([vqa], [refer], [caption], [grounding], [identify]) "
    "asks for that task."
)


class TerminalChat:
    """One conversation in the terminal with a loaded model (not registered): images, turns, streamed answers.

    ``text_only``: questions without an image are answered (a model built for both, e.g. ``lavin``);
    otherwise the chat asks for ``/image PATH`` first.
    """

    def __init__(
        self,
        model: Any,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        precision: str = "fp32",
        text_only: bool = False,
        limits: Optional[UploadLimits] = None,
        image_last_tags: Sequence[str] = (),
    ) -> None:
        self.chat = Chat(model, require_image=not text_only, image_last_tags=image_last_tags)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.precision = precision
        self.limits = limits if limits is not None else UploadLimits()
        self.image_path: Optional[str] = None
        self.image: Optional[Image.Image] = None  # as loaded, for drawing boxes on

    def set_image(self, path: str) -> str:
        """Start a conversation about the image at ``path``; returns a line saying so. Raises DemoInputError."""
        image = load_image(path, self.limits)
        self.chat.reset()
        self.chat.upload_image(image)
        self.image_path, self.image = path, image
        return f"image: {path} ({image.width}x{image.height}); a new conversation"

    def reset(self) -> str:
        """Forget the turns, keep the image."""
        image = self.chat.image
        self.chat.reset()
        if image is not None:
            self.chat.upload_image(image)
        return "the conversation starts again" + (f" about {self.image_path}" if image is not None else "")

    def save_boxes(self, path: str) -> str:
        """Write the image with the last answer's boxes drawn (as the browser demo draws them); returns a line."""
        from minigpt.demo.session import DemoChat

        history = [turn for turn in self.chat.history if turn[1] is not None]
        if self.image is None or not history:
            raise DemoInputError("Nothing to draw yet: /image PATH, then ask for boxes, e.g. [refer] the red circle")
        boxes = DemoChat.answer_boxes(*history[-1])
        if not boxes:
            raise DemoInputError("The last answer has no box to draw.")
        try:
            DemoChat.draw(self.image, boxes).save(path)
        except (OSError, ValueError) as exc:
            raise DemoInputError(f"Cannot write {path}: {exc}") from exc
        return f"saved {path} ({len(boxes)} box{'es' if len(boxes) != 1 else ''})"

    def answer(self, message: str) -> Iterator[str]:
        """The answer to ``message``, piece by piece. Raises DemoInputError or ValueError on bad input."""
        prompt = compose_prompt(message)
        if self.chat.require_image and self.chat.image is None:
            raise DemoInputError("Give an image first: /image PATH")
        gen = {"max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            gen.update(do_sample=True, temperature=self.temperature)
        self.chat.ask(prompt)
        try:
            self.chat.model_inputs(**gen)  # a question past the context fails here, before any output
        except ValueError:
            self._drop_question()
            raise
        return self._stream(gen)

    def _stream(self, gen: dict) -> Iterator[str]:
        try:
            yield from self.chat.stream_answer(precision=self.precision, **gen)
        except Exception:
            self._drop_question()
            raise

    def _drop_question(self) -> None:
        """Forget a question that got no answer, keeping the turns before it."""
        if not self.chat.pending:
            return
        history = self.chat.history[:-1]
        image = self.chat.image
        self.chat.reset()
        if image is not None:
            self.chat.upload_image(image)
        for question, answer in history:
            self.chat.ask(question)
            self.chat.answers.append(answer)


def run_repl(chat: TerminalChat, read_line: Callable[[str], str], out: TextIO) -> int:
    """Read lines until ``/exit`` or end of input, answering each question as it streams; returns 0."""
    print(HELP, file=out, flush=True)
    while True:
        try:
            line = read_line(PROMPT).strip()
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print(file=out)
            continue
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            if cmd in ("/exit", "/quit"):
                return 0
            try:
                if cmd == "/image":
                    parts = shlex.split(arg) if arg.strip() else []
                    if len(parts) != 1:
                        raise DemoInputError("usage: /image PATH (quote a path with spaces)")
                    print(chat.set_image(parts[0]), file=out, flush=True)
                elif cmd == "/save":
                    parts = shlex.split(arg) if arg.strip() else []
                    if len(parts) != 1:
                        raise DemoInputError("usage: /save PATH.png")
                    print(chat.save_boxes(parts[0]), file=out, flush=True)
                elif cmd == "/reset":
                    print(chat.reset(), file=out, flush=True)
                elif cmd == "/help":
                    print(HELP, file=out, flush=True)
                else:
                    print(f"unknown command {cmd}; {HELP}", file=out, flush=True)
            except DemoInputError as exc:
                print(f"error: {exc}", file=out, flush=True)
            continue
        started = time.perf_counter()
        text = ""
        try:
            for piece in chat.answer(line):
                text += piece
                out.write(piece)
                out.flush()
        except (DemoInputError, ValueError) as exc:
            print(f"error: {exc}", file=out, flush=True)
            continue
        except KeyboardInterrupt:  # stop this answer, keep chatting
            print(" [stopped]", file=out, flush=True)
            continue
        boxes = parse_boxes(text)
        note = f", {len(boxes)} box{'es' if len(boxes) != 1 else ''}" if boxes else ""
        print(f"\n[{time.perf_counter() - started:.1f} s{note}]", file=out, flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Chat with a minigpt model about images in the terminal.", epilog=HELP)
    p.add_argument("--cfg-path", required=True, type=cfg_path_arg, help="an eval config, e.g. quickstart_demo")
    p.add_argument("--image", default=None, help="the image to start with (or /image PATH in the chat)")
    p.add_argument("--gpu-id", type=int, default=None, help="CUDA device index when run.device is cuda or auto")
    p.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default: run.eval_max_new_tokens)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) answers greedily; above 0 samples")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    args = p.parse_args(argv)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        p.error("--max-new-tokens must be at least 1")
    if not args.temperature >= 0:
        p.error("--temperature must be 0 or more")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Load the config's model and chat until ``/exit``; 2 on a setup error (config, checkpoint, image)."""
    from minigpt.common.config import Config, ConfigError
    from minigpt.common.logger import setup_logging
    from minigpt.common.registry import RegistryError
    from minigpt.demo.cli import (
        DemoSetupError,
        check_checkpoints,
        load_demo_model,
        question_first_tags,
        resolve_device,
    )

    args = parse_args(argv)
    setup_logging()
    try:
        if Config.is_pipeline_file(args.cfg_path):
            raise DemoSetupError(f"{args.cfg_path} is a pipeline (training) config; chat takes an eval config")
        cfg = Config(args.cfg_path, list(args.options))
        check_checkpoints(cfg)
        question_first = question_first_tags(cfg)
        device = resolve_device(str(cfg.run_cfg.device), args.gpu_id)
        model = load_demo_model(cfg, device)
        chat = TerminalChat(
            model,
            max_new_tokens=args.max_new_tokens or int(cfg.run_cfg.eval_max_new_tokens),
            temperature=args.temperature,
            precision=str(cfg.run_cfg.precision),
            text_only=bool(getattr(model, "ANSWERS_TEXT_ONLY", False)),
            image_last_tags=question_first,
        )
        if args.image:
            print(chat.set_image(args.image), flush=True)
    except (ConfigError, RegistryError, DemoSetupError, DemoInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:
        pass
    return run_repl(chat, input, sys.stdout)
