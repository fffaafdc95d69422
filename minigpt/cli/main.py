"""``minigpt``: one console command with a subcommand per job (train, eval, demo, chat, ...).

    minigpt --help
    minigpt list-cfg
    minigpt train --cfg-path quickstart --options run.max_iters=20
    minigpt eval --cfg-path quickstart_eval --options model.ckpt=output/quickstart
    minigpt eval vqa --cfg-path tinygptv_benchmark_eval --dataset okvqa,gqa
    minigpt chat --cfg-path quickstart_demo

Each subcommand is the ``main(argv)`` the repository's scripts call too (``train.py``, ``demo.py``,
``eval_scripts/*.py``), so both spell the same options. ``--cfg-path`` takes a file, or the name of
a config shipped in the package (``minigpt list-cfg`` lists them).
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# name -> (module, function, one-line help); modules are imported only when their command runs,
# so `minigpt --help` and `minigpt list-cfg` stay quick
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "train": ("minigpt.cli.train", "main", "train one stage or a pipeline of stages from a config"),
    "eval": ("minigpt.cli.evaluate", "main", "score a checkpoint: a config's test splits, or `eval FAMILY` benchmarks"),
    "demo": ("minigpt.demo.cli", "main", "chat about an image in the browser (gradio)"),
    "chat": ("minigpt.demo.terminal", "main", "chat about images in the terminal, answers streamed"),
    "export": ("minigpt.models.weights.export", "main", "export a trained model with its tokenizer and config"),
    "data": ("minigpt.cli.main", "data_main", "datasets: `list`, `check NAME`, `synthetic --out DIR`"),
    "list-cfg": ("minigpt.cli.configs", "list_main", "list the train and eval configs shipped in the package"),
    "copy-cfg": ("minigpt.cli.configs", "copy_main", "copy a shipped config (a pipeline with its stages) to edit"),
    "plot": ("minigpt.cli.plot", "main", "draw a run's loss, lr, throughput and eval metrics to PNG"),
}


def usage() -> str:
    """The text of ``minigpt --help``."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: minigpt COMMAND [options]   (minigpt COMMAND --help for a command's options)",
        "",
        "Build, train, evaluate and serve small multimodal LLMs from config.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()),
        "",
        "--cfg-path takes a YAML file or the name of a shipped config (see `minigpt list-cfg`).",
    ]
    return "\n".join(lines)


def data_main(argv: Optional[Sequence[str]] = None) -> int:
    """``minigpt data``: the dataset catalogue (``list``, ``check``) and the synthetic generator (``synthetic``)."""
    argv = list(argv or [])
    if argv[:1] == ["synthetic"]:
        from minigpt.datasets.synthetic.__main__ import main as synthetic_main

        return synthetic_main(argv[1:])
    from minigpt.datasets.catalog import main as catalog_main

    return catalog_main(argv)


def command(name: str) -> Callable[[List[str]], object]:
    """The function behind ``minigpt NAME``."""
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``minigpt COMMAND ...``; returns the command's exit status (2 for an unknown command)."""
    import difflib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=2)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        print(f"minigpt: unknown command {name!r}.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    # argparse names the program after sys.argv[0]: `minigpt train --help` says "usage: minigpt train"
    sys.argv = [f"minigpt {name}", *rest]
    status = command(name)(rest)
    # commands return an exit status, or (export) what they wrote
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
