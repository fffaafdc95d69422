"""``--options``: ``dotted.key=value`` overrides, parsed as YAML and laid over the composed config.

:func:`parse_options` reads the strings (``run.max_iters=20``, ``run.train_splits=[train, val]``);
:func:`apply_option` places one value, through the same type checks as a YAML file's values, into an
existing key or under an open block. An unknown key is an error with the close keys.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import yaml

from minigpt.common.config.composer import Composer
from minigpt.common.config.errors import ABSENT, OPTIONS_SOURCE, ConfigError, suggest_key, walk
from minigpt.common.config.yaml_io import parse_yaml_value, yaml_error_text


def parse_options(options: Sequence[str]) -> List[Tuple[str, Any, str]]:
    """``(dotted key, value, original text)`` for each ``key=value`` string; a malformed one is an error."""
    parsed = []
    for text in options:
        if not isinstance(text, str) or "=" not in text:
            raise ConfigError(
                f"--options {text!r}: expected dotted.key=value (e.g. run.max_iters=20 or "
                "run.train_splits=[train])"
            )
        key, _, raw = text.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--options {text!r}: the key before '=' must be a dotted key like run.max_iters")
        try:
            value = parse_yaml_value(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--options {text!r}: the value is not valid YAML: {yaml_error_text(exc)}") from exc
        parsed.append((key, value, text))
    return parsed


def apply_option(composer: Composer, composed: Dict[Any, Any], key: str, value: Any, text: str) -> None:
    """Set ``key`` to ``value`` in ``composed`` (merging into a block when both are mappings)."""
    parts = key.split(".")
    node: Any = composed
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        child = node.get(part, ABSENT) if isinstance(node, dict) else ABSENT
        if isinstance(child, dict):
            node = child
            continue
        if (child is ABSENT or child is None) and isinstance(node, dict) and composer.under_open(here):
            node[part] = {}
            node = node[part]
            continue
        raise unknown_option(key, text, composed)
    leaf = parts[-1]
    if not isinstance(node, dict) or (leaf not in node and not composer.under_open(key)):
        raise unknown_option(key, text, composed)

    current = node.get(leaf)
    if isinstance(current, dict) and current and isinstance(value, dict):
        node[leaf] = composer.merge(current, value, key, OPTIONS_SOURCE)
        return
    base = composer.schema[key][0] if key in composer.schema else None
    node[leaf] = composer.merge_value(base, value, key, OPTIONS_SOURCE)


def unknown_option(key: str, text: str, composed: Dict[Any, Any]) -> ConfigError:
    """The error for an option whose key is not in the composed config, with the close keys."""
    keys = [dotted for dotted, _ in walk(composed, "") if dotted]
    hint = suggest_key(key, keys)
    if not hint:
        hint = " — top-level sections are model, datasets and run; see `train.py --print-config` for every key."
    return ConfigError(f"--options {text!r}: '{key}' is not a key of the composed config{hint}")
