"""The merging engine: lay user blocks and ``--options`` over defaults, type-checked against them.

A :class:`Composer` holds what one composition learns as it goes: the schema (every default key with
its value and the file it came from), which keys are open (a ``{}`` or ``null`` default accepts any
sub-keys), which file set each value, and which interpolated values still await a type check. The
defaults are the schema: a user key they lack is a typo, a value whose type differs from the default
is a mistake, and both are reported with the file, the dotted key and the close matches. Which
defaults files make up a section is decided in :mod:`minigpt.common.config.sections`.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Dict, List, Set, Tuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt.common.config.errors import (
    ABSENT,
    MISSING,
    ConfigError,
    is_interpolation,
    is_number,
    join,
    one_line,
    quoted_list,
    type_name,
    walk,
)


class Composer:
    """The state of one composition: schema, open keys, value sources and deferred type checks."""

    def __init__(self, cfg_path: str) -> None:
        self.cfg_path = cfg_path
        self.sources: Dict[str, str] = {}
        self.schema: Dict[str, Tuple[Any, str]] = {}  # dotted key -> (default value, defaults file)
        self.open: Set[str] = set()  # dotted keys whose default ({} or null) accepts any sub-keys
        self.deferred: Dict[str, str] = {}  # interpolated values, type-checked once resolved

    def register_defaults(self, prefix: str, tree: Any, source: str) -> None:
        # the composed config gets its own copy of `tree`, so --options never edit the schema
        for dotted, value in walk(tree, prefix):
            self.schema[dotted] = (value, source)
            self.sources[dotted] = source
            if value is None or (isinstance(value, dict) and not value):
                self.open.add(dotted)

    def record(self, dotted: str, value: Any, source: str) -> None:
        for key, _ in walk(value, dotted):
            self.sources[key] = source

    def merge(self, base: Dict[Any, Any], over: Dict[Any, Any], dotted: str, source: str) -> Dict[Any, Any]:
        """``base`` updated by ``over``; ``base`` is the schema, so each key of ``over`` must be in it."""
        self.sources[dotted] = source
        out = dict(base)
        for key, value in over.items():
            sub = join(dotted, key)
            if key not in base:
                raise self.unknown_key(sub, base, dotted, source)
            out[key] = self.merge_value(base[key], value, sub, source)
        return out

    def merge_value(self, base: Any, value: Any, dotted: str, source: str) -> Any:
        if isinstance(base, dict) and base and isinstance(value, dict):
            return self.merge(base, value, dotted, source)
        value = self.coerce(base, value, dotted, source)
        self.record(dotted, value, source)
        return copy.deepcopy(value)

    def coerce(self, base: Any, value: Any, dotted: str, source: str, resolved_from: str = "") -> Any:
        """``value`` checked against the default ``base`` (and converted where that is safe)."""
        if value is None or base is None or (isinstance(base, str) and base == MISSING):
            return value
        if is_interpolation(value) and not resolved_from:
            self.deferred[dotted] = source
            return value
        if isinstance(base, bool):
            ok, expected = isinstance(value, bool), "a bool (true/false)"
        elif isinstance(base, int):
            ok, expected = is_number(value) and isinstance(value, int), "an int"
        elif isinstance(base, float):
            expected = "a float"
            if is_number(value):
                return float(value)
            ok = False
            if isinstance(value, str):
                # PyYAML reads `1e-4` (no dot) as a string; where a float is expected, accept it
                try:
                    return float(value.strip())
                except ValueError:
                    ok = False
        elif isinstance(base, str):
            ok, expected = isinstance(value, str), "a str"
        elif isinstance(base, (list, tuple)):
            ok, expected = isinstance(value, (list, tuple)), "a list"
        elif isinstance(base, dict):
            ok, expected = isinstance(value, dict), "a mapping"
        else:
            return value
        if not ok:
            schema_file = self.schema.get(dotted, (None, "the defaults"))[1]
            got = f"{type_name(value)} {value!r}"
            if resolved_from:
                got += f" (resolved from {resolved_from!r})"
            raise ConfigError(
                f"{source}: {dotted} must be {expected} (its default in {schema_file} is {base!r}), got {got}"
            )
        return value

    def unknown_key(self, dotted: str, siblings: Dict[Any, Any], parent: str, source: str) -> ConfigError:
        leaf = dotted.rpartition(".")[2]
        names = sorted(str(key) for key in siblings)
        close = [join(parent, name) for name in difflib.get_close_matches(leaf, names, n=3, cutoff=0.6)]
        if not close:
            # maybe the key sits at the wrong depth (`model.r` for `model.lora.r`): compare the last
            # name with the last names of every key in the section; whole dotted keys would match
            # on their long shared prefix instead
            section = dotted.partition(".")[0]
            by_leaf: Dict[str, List[str]] = {}
            for key in self.schema:
                if key.partition(".")[0] == section and key != section:
                    by_leaf.setdefault(key.rpartition(".")[2], []).append(key)
            for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.8):
                close.extend(by_leaf[name])
            close = close[:3]
        if close:
            hint = f" — did you mean {quoted_list(close)}?"
        else:
            hint = f" — valid keys under '{parent}' are: {', '.join(names)}."
        schema_file = self.schema.get(parent, (None, "the defaults"))[1]
        return ConfigError(f"{source}: unknown key '{dotted}'{hint} (keys come from the defaults in {schema_file})")

    def under_open(self, dotted: str) -> bool:
        key = dotted
        while key:
            if key in self.open:
                return True
            key = key.rpartition(".")[0]
        return False

    def check_missing(self, composed: Dict[Any, Any]) -> None:
        for dotted, value in walk(composed, ""):
            if isinstance(value, str) and value == MISSING:
                raise ConfigError(
                    f"{dotted} is required but {self.sources.get(dotted, 'its defaults file')} leaves it as "
                    f"??? — set it in {self.cfg_path} or with --options {dotted}=<value>"
                )

    def value_at(self, composed: Dict[Any, Any], dotted: str) -> Any:
        node: Any = composed
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return ABSENT
            node = node[part]
        return node

    def resolve(self, composed: Dict[Any, Any]) -> DictConfig:
        try:
            config = OmegaConf.create(composed)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            src = self.sources.get(str(key), self.cfg_path)
            raise ConfigError(f"{src}: {key}: a config cannot hold this value: {one_line(exc.msg)}") from exc
        try:
            OmegaConf.resolve(config)
        except OmegaConfBaseException as exc:
            key = str(getattr(exc, "full_key", None) or "?")
            src = self.sources.get(key, self.cfg_path)
            raw = self.value_at(composed, key)
            shown = f" {raw!r}" if raw is not ABSENT else ""
            reason = one_line(str(exc.msg).split("\n")[0])
            raise ConfigError(f"{src}: {key}: cannot resolve interpolation{shown}: {reason}") from exc
        return config

    def check_deferred(self, config: DictConfig) -> None:
        for dotted, source in self.deferred.items():
            if dotted not in self.schema:
                continue
            value = OmegaConf.select(config, dotted, default=ABSENT)
            if value is ABSENT:  # an option replaced the block that held it
                continue
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
            fixed = self.coerce(self.schema[dotted][0], value, dotted, source, resolved_from="an interpolation")
            if fixed is not value:
                OmegaConf.update(config, dotted, fixed, merge=False)
