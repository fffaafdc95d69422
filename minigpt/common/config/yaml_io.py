"""Strict YAML reading for configs: duplicate keys and bad syntax are errors that name the file and line.

:func:`load_yaml` reads any config file; :func:`load_user` reads a user's run config (its top level
must be the known sections); :func:`load_defaults` reads the ``model:`` or ``datasets: {name:}``
block of a defaults file. Nothing here knows how the blocks are combined.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml

from minigpt.common.config.errors import ABSENT, ConfigError, did_you_mean, one_line, type_name

PathLike = Union[str, "os.PathLike[str]"]

SECTIONS = ("model", "datasets", "run", "pipeline")


class StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys (the later one silently winning hides typos)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            # merge keys (`<<: *anchor`) are allowed to be overridden; that is their point
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


# Dates stay strings: OmegaConf cannot hold datetime objects, and a stage named 2024-01-01 is a name.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error, with its line and column when known."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = "; ".join(part for part in (exc.context, exc.problem) if part)
        return f"YAML syntax error{where}: {one_line(problem)}"
    return f"YAML error: {one_line(str(exc))}"


def parse_yaml_value(text: str) -> Any:
    """One YAML value (as written after ``=`` in ``--options``); raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=StrictLoader)


def load_yaml(path: PathLike) -> Any:
    """Read a YAML file into plain Python containers; a missing file or bad syntax is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what} (looked for {p.resolve()}).")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {yaml_error_text(exc)}") from exc


def load_user(path: PathLike) -> Dict[Any, Any]:
    """A user's config file: a mapping whose top-level keys are among :data:`SECTIONS`."""
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping with model:, datasets: and run: sections, "
            f"got {type_name(data)}"
        )
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown top-level key '{key}'{did_you_mean(str(key), SECTIONS)} "
                f"(top-level sections are {', '.join(SECTIONS)})"
            )
    return data


def load_defaults(path: PathLike, section: str, name: Optional[str] = None) -> Dict[Any, Any]:
    """The ``section:`` block (or ``section: {name: ...}``) of a defaults YAML."""
    data = load_yaml(path)
    block = data.get(section, ABSENT) if isinstance(data, dict) else ABSENT
    wanted = section
    if name is not None:
        block = block.get(name, ABSENT) if isinstance(block, dict) else ABSENT
        wanted = f"{section}.{name}"
        if block is None:  # `name:` with nothing under it: a dataset with no defaults of its own
            block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"defaults file {path} has no '{wanted}:' mapping at its top level")
    return copy.deepcopy(block)
