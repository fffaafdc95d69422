"""Model presets that inherit: ``base: <sibling preset file>`` plus only the keys that differ.

A preset YAML under ``minigpt/configs/models/<family>/`` holds a ``model:`` block. It may also say,
at its top level, ``base: stage1_2_3.yaml`` (a path relative to its own folder); its ``model:``
block is then laid over the base's, mapping by mapping, so the file states only what differs. A
key the base does not have is a typo (unless the base's value there is ``null`` or ``{}``, which
any block may fill), and a missing base file or a cycle of bases is a :class:`ConfigError` naming
the file. :func:`load_model_preset` is the one way to read a preset: the config composer and
``load_model`` both use it.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Dict, List, Tuple

from minigpt.common.config.errors import ConfigError, join, quoted_list, type_name, walk
from minigpt.common.config.yaml_io import PathLike, load_yaml

PRESET_KEYS = ("base", "model")


def load_model_preset(path: PathLike) -> Dict[Any, Any]:
    """The ``model:`` block of the preset at ``path``, with its chain of ``base:`` presets laid under it."""
    return load_model_preset_with_sources(path)[0]


def load_model_preset_with_sources(path: PathLike) -> Tuple[Dict[Any, Any], Dict[str, str]]:
    """``(model block, {dotted key under model: file that set it})`` for the preset at ``path``."""
    return _load(Path(path), [])


def _load(path: Path, chain: List[Path]) -> Tuple[Dict[Any, Any], Dict[str, str]]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in [*chain, resolved])
        raise ConfigError(f"{chain[-1]}: base: presets inherit in a cycle ({cycle})")
    data = load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConfigError(f"defaults file {path} has no 'model:' mapping at its top level")
    unknown = [str(key) for key in data if key not in PRESET_KEYS]
    if unknown and "base" in data:
        raise ConfigError(
            f"{path}: unknown top-level key '{unknown[0]}' in a preset with a base "
            f"(a preset holds {quoted_list(PRESET_KEYS)})"
        )
    block = copy.deepcopy(data["model"])
    own = {dotted: str(path) for dotted, _ in walk(block, "model") if dotted != "model"}
    base = data.get("base")
    if base is None:
        return block, own
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be the file name of a sibling preset, got {type_name(base)} {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        siblings = sorted(p.name for p in path.parent.glob("*.yaml") if p.resolve() != resolved)
        close = difflib.get_close_matches(base, siblings, n=3, cutoff=0.6)
        hint = f" — did you mean {quoted_list(close)}?" if close else f" (presets there: {', '.join(siblings)})"
        raise ConfigError(f"{path}: base: preset {base!r} does not exist (looked for {base_path}){hint}")
    inherited, sources = _load(base_path, [*chain, resolved])
    merged = _overlay(inherited, block, "model", path)
    sources.update(own)
    return merged, sources


def _overlay(base: Dict[Any, Any], over: Dict[Any, Any], dotted: str, path: Path) -> Dict[Any, Any]:
    """``base`` with ``over`` laid on it; each key of ``over`` must be in ``base`` (or under an open block)."""
    out = dict(base)
    for key, value in over.items():
        sub = join(dotted, key)
        if key not in base:
            names = sorted(str(k) for k in base)
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
            hint = f" — did you mean {quoted_list([join(dotted, c) for c in close])}?" if close else ""
            raise ConfigError(f"{path}: '{sub}' is not a key of its base preset{hint}")
        if isinstance(base[key], dict) and base[key] and isinstance(value, dict):
            out[key] = _overlay(base[key], value, sub, path)
        else:
            out[key] = copy.deepcopy(value)
    return out
