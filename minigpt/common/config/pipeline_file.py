"""Pipeline files: a top-level ``pipeline:`` chains stage configs, each composed on its own.

:func:`load_pipeline` reads such a file as is and checks its stages (unique names, existing stage
files, relative paths made relative to the pipeline file); :func:`is_pipeline_file` tells the two
kinds of config apart. The runner that executes a pipeline lives in ``minigpt/runners/pipeline.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt.common.config.errors import ConfigError, did_you_mean, one_line, quoted_list, type_name
from minigpt.common.config.yaml_io import PathLike, load_user, load_yaml

# keys of a pipeline block (see minigpt/runners/pipeline.py)
PIPELINE_KEYS = ("name", "output_dir", "data", "options", "stages", "eval")


def _check_module_stage(path: PathLike, where: str, stage: dict, first_index: Dict[str, int], index: int) -> None:
    name, module, args = stage.get("name"), stage.get("module"), stage.get("args", [])
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: {where}.name must be a non-empty string, got {name!r}")
    if name in first_index:
        raise ConfigError(f"{path}: {where}.name: duplicate stage name {name!r} (also pipeline[{first_index[name]}])")
    first_index[name] = index
    if not isinstance(module, str) or not module.replace(".", "").replace("_", "").isalnum():
        raise ConfigError(f"{path}: {where}.module must be a module name (run as python -m <module>), got {module!r}")
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise ConfigError(f"{path}: {where}.args must be a list of strings, got {type_name(args)} {args!r}")
    unknown = sorted(str(k) for k in stage if k not in ("name", "module", "args"))
    if unknown:
        raise ConfigError(f"{path}: {where}: unknown key {unknown[0]!r}; a module stage takes 'name', 'module' and 'args'")


def is_pipeline_file(path: PathLike) -> bool:
    """Whether the YAML at ``path`` chains stages (has a top-level ``pipeline:``)."""
    data = load_yaml(path)
    return isinstance(data, dict) and "pipeline" in data


def load_pipeline(path: PathLike) -> DictConfig:
    """Read a pipeline YAML as is, checking its stages.

    Every stage entry needs a unique ``name`` and a ``cfg`` path; relative ``cfg`` paths are
    made relative to the pipeline file's folder, and the file must exist.
    """
    data = load_user(path)
    block = data.get("pipeline")
    if isinstance(block, list):  # the short form: just the list of stages
        block = {"stages": block}
    if isinstance(block, dict):
        unknown = sorted(str(k) for k in block if k not in PIPELINE_KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key 'pipeline.{unknown[0]}'{did_you_mean(unknown[0], PIPELINE_KEYS)}; "
                f"a pipeline takes {quoted_list(PIPELINE_KEYS)}"
            )
        data["pipeline"] = block
        ev = block.get("eval")
        if ev is not None:
            if not isinstance(ev, dict) or not isinstance(ev.get("cfg"), str):
                raise ConfigError(f"{path}: pipeline.eval must be a mapping with a 'cfg' path, got {ev!r}")
            ev_path = Path(os.path.expanduser(ev["cfg"]))
            if not ev_path.is_absolute():
                ev_path = Path(path).parent / ev_path
            if not ev_path.is_file():
                raise ConfigError(f"{path}: pipeline.eval.cfg: {ev['cfg']!r} does not exist (looked for {ev_path})")
            ev["cfg"] = str(ev_path)
    stages = block.get("stages") if isinstance(block, dict) else block
    if not isinstance(stages, list) or not stages:
        raise ConfigError(
            f"{path}: pipeline must be a non-empty list of stages, each a mapping with 'name' and "
            f"'cfg' (e.g. '- {{name: stage1, cfg: stage1.yaml}}'), got {type_name(stages)} {stages!r}"
        )
    folder = Path(path).parent
    first_index: Dict[str, int] = {}
    for index, stage in enumerate(stages):
        where = f"pipeline[{index}]"
        if not isinstance(stage, dict):
            raise ConfigError(
                f"{path}: {where} must be a mapping with 'name' and 'cfg', got {type_name(stage)} {stage!r}"
            )
        if stage.get("module") is not None:  # a command stage: python -m <module> <args> (runners/pipeline.py)
            _check_module_stage(path, where, stage, first_index, index)
            continue
        lacking = [key for key in ("name", "cfg") if stage.get(key) in (None, "")]
        if lacking:
            raise ConfigError(
                f"{path}: {where} lacks {' and '.join(repr(k) for k in lacking)}; every stage needs a "
                f"'name' (unique) and a 'cfg' (its config file); got keys {sorted(map(str, stage))}"
            )
        name, cfg = stage["name"], stage["cfg"]
        if not isinstance(name, str):
            raise ConfigError(f"{path}: {where}.name must be a string, got {type_name(name)} {name!r}")
        if not isinstance(cfg, str):
            raise ConfigError(f"{path}: {where}.cfg must be a path string, got {type_name(cfg)} {cfg!r}")
        if name in first_index:
            raise ConfigError(
                f"{path}: {where}.name: duplicate stage name {name!r} (also pipeline[{first_index[name]}]); "
                "stage names must be unique because later stages find earlier checkpoints by name"
            )
        first_index[name] = index
        stage_path = Path(os.path.expanduser(cfg))
        if not stage_path.is_absolute():
            stage_path = folder / stage_path
        if not stage_path.is_file():
            raise ConfigError(
                f"{path}: {where}.cfg: stage {name!r} names config {cfg!r}, which does not exist "
                f"(looked for {stage_path}; relative paths are relative to the pipeline file's folder)"
            )
        stage["cfg"] = str(stage_path)
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: cannot hold this YAML in a config: {one_line(exc)}") from exc
