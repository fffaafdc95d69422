"""``minigpt list-cfg`` and ``minigpt copy-cfg``: the configs shipped in the package.

    minigpt list-cfg [-p PATTERN]
    minigpt copy-cfg quickstart_demo .            # -> ./quickstart_demo.yaml
    minigpt copy-cfg quickstart my_run/           # a pipeline: my_run/train_configs/*.yaml, my_run/eval_configs/*.yaml
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from minigpt.common.config import Config, ConfigError
from minigpt.common.config.shipped import copy_shipped_config, shipped_configs


def _first_comment(path) -> str:
    """The config's first comment line: what it is for."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def format_config_list(pattern: Optional[str] = None) -> str:
    """The shipped configs, one per line under their folder, with ``(pipeline)`` marked and each first comment."""
    lines: List[str] = []
    for kind, paths in shipped_configs().items():
        chosen = [p for p in paths if not pattern or pattern.lower() in p.name.lower()]
        if not chosen:
            continue
        lines.append(f"{kind}/")
        width = max(len(p.stem) for p in chosen)
        for p in chosen:
            about = ("[pipeline] " if Config.is_pipeline_file(p) else "") + _first_comment(p)
            lines.append(f"  {p.stem.ljust(width)}  {about if len(about) <= 90 else about[:89] + '…'}")
    return "\n".join(lines) if lines else f"no shipped config matches {pattern!r}"


def list_main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the shipped configs."""
    p = argparse.ArgumentParser(description="List the train and eval configs shipped in the package.")
    p.add_argument("-p", "--pattern", default=None, help="only names containing this text")
    args = p.parse_args(argv)
    print(format_config_list(args.pattern))
    return 0


def copy_main(argv: Optional[Sequence[str]] = None) -> int:
    """Copy a shipped config out to edit; 2 when it is unknown or would overwrite a file."""
    p = argparse.ArgumentParser(description="Copy a shipped config (a pipeline with its stage and eval configs).")
    p.add_argument("name", help="a shipped config: quickstart, quickstart_demo.yaml, train_configs/tinygptv_stage1.yaml")
    p.add_argument("dest", help="folder to copy into (created if missing), or a .yaml path for a single config")
    args = p.parse_args(argv)
    try:
        written = copy_shipped_config(args.name, args.dest)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"copied {path}")
    return 0
