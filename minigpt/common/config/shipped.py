"""The train and eval configs shipped inside the package, found by name from anywhere.

The repository's ``train_configs/`` and ``eval_configs/`` are package data (``minigpt/recipes/``),
so an installed wheel carries them: ``--cfg-path quickstart`` or ``--cfg-path
train_configs/quickstart.yaml`` works from any folder. A path that exists is always taken as it is;
only a path that does not exist is looked up among the shipped configs.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path
from typing import Dict, List

from minigpt.common.config.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
KINDS = ("train_configs", "eval_configs")


def shipped_configs() -> Dict[str, List[Path]]:
    """``{"train_configs": [...], "eval_configs": [...]}``: every shipped config, sorted by name."""
    return {kind: sorted((RECIPES_DIR / kind).glob("*.yaml")) for kind in KINDS}


def find_shipped_config(name: str) -> Path:
    """The shipped config ``name`` names: ``quickstart``, ``quickstart.yaml``, ``train_configs/quickstart.yaml``.

    Raises :class:`ConfigError` naming the close matches when there is none, or both folders when
    a bare name is in each.
    """
    text = str(name).replace("\\", "/")
    kind, _, stem = text.rpartition("/")
    if kind not in ("", *KINDS):
        raise ConfigError(f"{name}: no such file, and no shipped config has that name (`minigpt list-cfg` lists them)")
    file = stem if stem.endswith((".yaml", ".yml")) else stem + ".yaml"
    kinds = [kind] if kind else list(KINDS)
    found = [RECIPES_DIR / k / file for k in kinds if (RECIPES_DIR / k / file).is_file()]
    if len(found) > 1:
        raise ConfigError(f"{name}: both {' and '.join(f'{k}/{file}' for k in kinds)} are shipped; say which")
    if not found:
        known = {p.stem: f"{k}/{p.name}" for k, paths in shipped_configs().items() if k in kinds for p in paths}
        close = [known[c] for c in difflib.get_close_matches(Path(file).stem, list(known), n=3, cutoff=0.6)]
        hint = f" Did you mean: {', '.join(close)}?" if close else " `minigpt list-cfg` lists them."
        raise ConfigError(f"{name}: no such file, and no shipped config has that name.{hint}")
    return found[0]


def resolve_config_path(path: str) -> str:
    """``path`` itself when it exists, else the shipped config of that name (see :func:`find_shipped_config`)."""
    if os.path.exists(path):
        return path
    return str(find_shipped_config(path))


def copy_shipped_config(name: str, dest: str) -> List[str]:
    """Copy a shipped config to ``dest`` (a folder, or a file path for a single config); returns the files written.

    A pipeline brings its stage and eval configs, laid out as shipped (``dest/train_configs/``,
    ``dest/eval_configs/``) so the relative paths inside it still hold. Never overwrites a file.
    """
    from minigpt.common.config.composed import Config

    src = find_shipped_config(name)
    dest_path = Path(dest)
    if Config.is_pipeline_file(src):
        pipe = Config.load_pipeline(str(src)).pipeline
        files = [src, *(Path(str(stage.cfg)) for stage in pipe.stages)]
        if pipe.get("eval"):
            files.append(Path(str(pipe.eval.cfg)))
        root = os.path.normpath(RECIPES_DIR)
        pairs = [(f, dest_path / os.path.relpath(os.path.normpath(f), root)) for f in files]
    elif dest_path.suffix in (".yaml", ".yml") and not dest_path.is_dir():
        pairs = [(src, dest_path)]
    else:
        pairs = [(src, dest_path / src.name)]
    for _, target in pairs:
        if target.exists():
            raise ConfigError(f"{target} exists: copy-cfg does not overwrite (remove it or pick another destination)")
    written = []
    for source, target in dict(pairs).items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(str(target))
    return written


def cfg_path_arg(text: str) -> str:
    """An ``argparse`` ``type=`` for ``--cfg-path``: a file, or a shipped config's name."""
    import argparse

    try:
        return resolve_config_path(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
