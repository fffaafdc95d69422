"""The config's error type and the wording its messages share: type names, "did you mean" hints, dotted keys.

Every config problem is a :class:`ConfigError` whose message is one paragraph naming the file (or
``--options``), the dotted key and, where a name was misspelt, the close matches. The helpers here
are the only place that wording is built, so the loader, the composer, the run schema and the rules
all speak alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Iterator, Sequence, Tuple

MISSING = "???"  # OmegaConf's marker for a value the user must supply
OPTIONS_SOURCE = "--options"
ABSENT = object()  # "no such key", distinct from a null value


class ConfigError(ValueError):
    """A config that cannot be composed or is invalid; the message names the file and the dotted key."""


def one_line(text: Any) -> str:
    """``text`` with every run of whitespace (newlines included) folded to one space."""
    return " ".join(str(text).split())


def join(prefix: str, key: Any) -> str:
    """The dotted key of ``key`` under ``prefix`` (``prefix`` may be empty)."""
    return f"{prefix}.{key}" if prefix else str(key)


def walk(tree: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """Yield (dotted key, value) for `prefix` itself and every mapping node and leaf below it."""
    yield prefix, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from walk(value, join(prefix, key))


def type_name(value: Any) -> str:
    """The YAML-ish name of ``value``'s type (``null``, ``bool``, ``int``, ``list``, ``mapping`` …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def is_number(value: Any) -> bool:
    """An int or a float, but not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_interpolation(value: Any) -> bool:
    """Whether ``value`` is a string holding an OmegaConf interpolation (``${...}``)."""
    return isinstance(value, str) and "${" in value


def quoted_list(names: Sequence[str]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def did_you_mean(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str:
    """`` — did you mean 'x'?`` for the close matches of ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=cutoff)
    return f" — did you mean {quoted_list(close)}?" if close else ""


def suggest_key(dotted: str, keys: Sequence[str]) -> str:
    """A "did you mean" for a dotted key: siblings by last name first, then whole keys."""
    parent, _, leaf = dotted.rpartition(".")
    siblings = {key.rpartition(".")[2]: key for key in keys if key.rpartition(".")[0] == parent}
    close = [siblings[name] for name in difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.6)]
    if not close:  # a misspelt parent (`runn.max_iters`): whole keys, strictly, as prefixes inflate the ratio
        close = difflib.get_close_matches(dotted, list(keys), n=3, cutoff=0.8)
    return f" — did you mean {quoted_list(close)}?" if close else ""


def shown(dotted: str, value: Any, source: str) -> str:
    """``run.min_lr = 0.5 (from --options)``: a value as rule messages show it."""
    return f"{dotted} = {value!r} (from {source})"
