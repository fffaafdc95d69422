"""The composed run config: :class:`Config` puts the loaders, the composer, the options and the rules together.

A run config has three sections, ``model:``, ``datasets:`` and ``run:``, each laid over its defaults
(:mod:`.sections`), with the defaults as the schema (:mod:`.composer`). ``--options`` overrides come
last (:mod:`.options`), then interpolations resolve, then the rules run (:mod:`.rules`). Everything is
checked before any model or data is touched. A config with a top-level ``pipeline:`` chains stage
configs instead (:mod:`.pipeline_file`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from minigpt.common.config import pipeline_file
from minigpt.common.config.composer import Composer
from minigpt.common.config.errors import ABSENT, ConfigError, suggest_key, walk
from minigpt.common.config.options import apply_option, parse_options
from minigpt.common.config.rules import RuleChecker
from minigpt.common.config.sections import compose_datasets, compose_model, compose_run
from minigpt.common.config.yaml_io import PathLike, load_user


class Config:
    """A run's composed, validated configuration (not a registered component).

    ``Config(cfg_path, options)`` lays the user's YAML over the model preset, the dataset builders'
    defaults and the run defaults, applies ``--options`` overrides (``"run.max_iters=20"``),
    resolves interpolations and checks everything; any problem raises :class:`ConfigError`.
    ``config`` is the resulting omegaconf ``DictConfig``; ``source_of(key)`` says which file (or
    ``--options``) each value came from. A YAML with a top-level ``pipeline:`` is not composed:
    ``is_pipeline`` is true and ``config`` holds :meth:`load_pipeline`'s result.
    """

    is_pipeline_file = staticmethod(pipeline_file.is_pipeline_file)
    load_pipeline = staticmethod(pipeline_file.load_pipeline)

    def __init__(self, cfg_path: PathLike, options: Optional[Sequence[str]] = None) -> None:
        self.cfg_path = str(cfg_path)
        if isinstance(options, str):  # a lone string would otherwise be split into characters
            options = [options]
        self.options: List[str] = list(options or [])
        self.is_pipeline = False
        composer = Composer(self.cfg_path)
        self._sources = composer.sources

        user = load_user(self.cfg_path)
        if "pipeline" in user:
            self.is_pipeline = True
            self.config: DictConfig = pipeline_file.load_pipeline(self.cfg_path)
            composer.record("", OmegaConf.to_container(self.config), self.cfg_path)
            return

        parsed = parse_options(self.options)
        selected = {key: value for key, value, _ in parsed}
        composed = {
            "model": compose_model(composer, user.get("model", ABSENT), selected),
            "datasets": compose_datasets(composer, user.get("datasets"), selected),
            "run": compose_run(composer, user.get("run")),
        }
        for key, value, text in parsed:
            apply_option(composer, composed, key, value, text)
        composer.check_missing(composed)
        # assigned before the last checks so that their messages can use source_of()
        self.config = composer.resolve(composed)
        composer.check_deferred(self.config)
        rules = RuleChecker(self.cfg_path, self.source_of)
        rules.check_registry_names(self.config)
        rules.check_run_schema(self.config)
        rules.check_rules(self.config)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """Build from parsed command-line arguments with ``cfg_path`` and (optionally) ``options``."""
        cfg_path = getattr(args, "cfg_path", None)
        if not cfg_path:
            raise ConfigError("no config file given: pass --cfg-path path/to/config.yaml")
        return cls(cfg_path, getattr(args, "options", None))

    # -- public views --------------------------------------------------------------------------------
    def _section(self, name: str) -> DictConfig:
        if self.is_pipeline:
            raise ConfigError(
                f"{self.cfg_path} is a pipeline config: it has no {name}: section of its own; "
                "each stage's cfg file is composed separately (see Config.load_pipeline)."
            )
        return self.config[name]

    @property
    def model_cfg(self) -> DictConfig:
        return self._section("model")

    @property
    def datasets_cfg(self) -> DictConfig:
        return self._section("datasets")

    @property
    def run_cfg(self) -> DictConfig:
        return self._section("run")

    def to_yaml(self) -> str:
        """The composed, resolved config as YAML (what ``train.py --print-config`` prints)."""
        return OmegaConf.to_yaml(self.config)

    def save(self, path: PathLike) -> Path:
        """Write the composed config as YAML; the file appears whole or not at all."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.to_yaml())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def source_of(self, dotted_key: str) -> str:
        """The file (or ``--options``) that set the value at ``dotted_key``."""
        if OmegaConf.select(self.config, dotted_key, default=ABSENT) is ABSENT:
            keys = [key for key, _ in walk(OmegaConf.to_container(self.config), "") if key]
            raise ConfigError(
                f"{self.cfg_path}: no key '{dotted_key}' in the composed config"
                f"{suggest_key(dotted_key, keys)}"
            )
        key = dotted_key
        while key:
            if key in self._sources:
                return self._sources[key]
            key = key.rpartition(".")[0]
        return self.cfg_path

    def __repr__(self) -> str:
        return f"Config({self.cfg_path!r}, options={self.options!r})"
