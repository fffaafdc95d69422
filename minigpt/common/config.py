"""Compose a run's configuration from YAML files and validate it.

A run config has three sections, ``model:``, ``datasets:`` and ``run:``, and each is laid over
defaults: the model's preset YAML (picked by ``model.arch`` and ``model.model_type``), each dataset
builder's default YAML (picked by the dataset's ``type``), and ``minigpt/configs/default_run.yaml``.
The defaults double as the schema: a user key they do not contain is a typo, and a user value whose
type differs from the default is a mistake; both are reported with the file, the dotted key and the
close matches. ``--options`` overrides come last, then interpolations resolve, then the cross-key
rules run. Everything is checked before any model or data is touched, and every problem is a
:class:`ConfigError` whose message is one paragraph that can be shown to the user as is.

A config with a top-level ``pipeline:`` chains stage configs instead; :meth:`Config.load_pipeline`
reads it, and the training entry point composes each stage's own config.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt.common.registry import RegistryError, registry

PathLike = Union[str, "os.PathLike[str]"]

MISSING = "???"  # OmegaConf's marker for a value the user must supply
SECTIONS = ("model", "datasets", "run", "pipeline")
DEFAULT_RUN_PATH = Path(__file__).resolve().parent.parent / "configs" / "default_run.yaml"
OPTIONS_SOURCE = "--options"
PRECISIONS = ("fp32", "bf16", "fp16")
# keys of a pipeline block (see minigpt/runners/pipeline.py)
PIPELINE_KEYS = ("name", "output_dir", "data", "options", "stages", "eval")

# Keys every dataset block accepts even when its builder's default YAML does not list them:
# `type` picks that default YAML, and the mixer needs a weight for every dataset.
DATASET_COMMON_DEFAULTS: Dict[str, Any] = {"type": "default", "sample_ratio": 1.0}
DATASET_COMMON_SOURCE = "minigpt.common.config.DATASET_COMMON_DEFAULTS"

# run.vision_feature_cache choices (minigpt/runners/vision_cache.py) and the image processors it refuses
VISION_CACHE_STORAGES = ("memory", "disk")
VISION_CACHE_DTYPES = (None, "float32", "float16", "bfloat16")
RANDOM_IMAGE_PROCESSORS = ("image_train",)

# run key -> registry kind; the named component must exist before we start any work.
_RUN_REGISTRY_KEYS = (("task", "task"), ("runner", "runner"), ("lr_sched", "lr_scheduler"))
_ABSENT = object()


class ConfigError(ValueError):
    """A config that cannot be composed or is invalid; the message names the file and the dotted key."""


# -- YAML reading ---------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
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
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = "; ".join(part for part in (exc.context, exc.problem) if part)
        return f"YAML syntax error{where}: {_one_line(problem)}"
    return f"YAML error: {_one_line(str(exc))}"


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
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_error_text(exc)}") from exc


# -- small helpers --------------------------------------------------------------------------------


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _walk(tree: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    """Yield (dotted key, value) for `prefix` itself and every mapping node and leaf below it."""
    yield prefix, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, _join(prefix, key))


def _type_name(value: Any) -> str:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quoted_list(names: Sequence[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _did_you_mean(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=cutoff)
    return f" — did you mean {_quoted_list(close)}?" if close else ""


def _suggest_key(dotted: str, keys: Sequence[str]) -> str:
    """A "did you mean" for a dotted key: siblings by last name first, then whole keys."""
    parent, _, leaf = dotted.rpartition(".")
    siblings = {key.rpartition(".")[2]: key for key in keys if key.rpartition(".")[0] == parent}
    close = [siblings[name] for name in difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.6)]
    if not close:  # a misspelt parent (`runn.max_iters`): whole keys, strictly, as prefixes inflate the ratio
        close = difflib.get_close_matches(dotted, list(keys), n=3, cutoff=0.8)
    return f" — did you mean {_quoted_list(close)}?" if close else ""


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


# -- the composed config ----------------------------------------------------------------------------


class Config:
    """A run's composed, validated configuration (not a registered component).

    ``Config(cfg_path, options)`` lays the user's YAML over the model preset, the dataset builders'
    defaults and the run defaults, applies ``--options`` overrides (``"run.max_iters=20"``),
    resolves interpolations and checks everything; any problem raises :class:`ConfigError`.
    ``config`` is the resulting omegaconf ``DictConfig``; ``source_of(key)`` says which file (or
    ``--options``) each value came from. A YAML with a top-level ``pipeline:`` is not composed:
    ``is_pipeline`` is true and ``config`` holds :meth:`load_pipeline`'s result.
    """

    def __init__(self, cfg_path: PathLike, options: Optional[Sequence[str]] = None) -> None:
        self.cfg_path = str(cfg_path)
        if isinstance(options, str):  # a lone string would otherwise be split into characters
            options = [options]
        self.options: List[str] = list(options or [])
        self.is_pipeline = False
        self._sources: Dict[str, str] = {}
        self._schema: Dict[str, Tuple[Any, str]] = {}  # dotted key -> (default value, defaults file)
        self._open: Set[str] = set()  # dotted keys whose default ({} or null) accepts any sub-keys
        self._deferred: Dict[str, str] = {}  # interpolated values, type-checked once resolved

        user = self._load_user(self.cfg_path)
        if "pipeline" in user:
            self.is_pipeline = True
            self.config: DictConfig = Config.load_pipeline(self.cfg_path)
            self._record("", OmegaConf.to_container(self.config), self.cfg_path)
            return

        parsed = self._parse_options(self.options)
        selected = {key: value for key, value, _ in parsed}
        composed = {
            "model": self._compose_model(user.get("model", _ABSENT), selected),
            "datasets": self._compose_datasets(user.get("datasets"), selected),
            "run": self._compose_run(user.get("run")),
        }
        for key, value, text in parsed:
            self._apply_option(composed, key, value, text)
        self._check_missing(composed)
        # assigned before the last checks so that their messages can use source_of()
        self.config = self._resolve(composed)
        self._check_deferred(self.config)
        self._check_registry_names(self.config)
        self._check_rules(self.config)

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
        if OmegaConf.select(self.config, dotted_key, default=_ABSENT) is _ABSENT:
            keys = [key for key, _ in _walk(OmegaConf.to_container(self.config), "") if key]
            raise ConfigError(
                f"{self.cfg_path}: no key '{dotted_key}' in the composed config"
                f"{_suggest_key(dotted_key, keys)}"
            )
        key = dotted_key
        while key:
            if key in self._sources:
                return self._sources[key]
            key = key.rpartition(".")[0]
        return self.cfg_path

    def __repr__(self) -> str:
        return f"Config({self.cfg_path!r}, options={self.options!r})"

    # -- pipelines -----------------------------------------------------------------------------------
    @staticmethod
    def is_pipeline_file(path: PathLike) -> bool:
        """Whether the YAML at ``path`` chains stages (has a top-level ``pipeline:``)."""
        data = load_yaml(path)
        return isinstance(data, dict) and "pipeline" in data

    @staticmethod
    def load_pipeline(path: PathLike) -> DictConfig:
        """Read a pipeline YAML as is, checking its stages.

        Every stage entry needs a unique ``name`` and a ``cfg`` path; relative ``cfg`` paths are
        made relative to the pipeline file's folder, and the file must exist.
        """
        data = Config._load_user(str(path))
        block = data.get("pipeline")
        if isinstance(block, list):  # the short form: just the list of stages
            block = {"stages": block}
        if isinstance(block, dict):
            unknown = sorted(str(k) for k in block if k not in PIPELINE_KEYS)
            if unknown:
                raise ConfigError(
                    f"{path}: unknown key 'pipeline.{unknown[0]}'{_did_you_mean(unknown[0], PIPELINE_KEYS)}; "
                    f"a pipeline takes {_quoted_list(PIPELINE_KEYS)}"
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
                f"'cfg' (e.g. '- {{name: stage1, cfg: stage1.yaml}}'), got {_type_name(stages)} {stages!r}"
            )
        folder = Path(path).parent
        first_index: Dict[str, int] = {}
        for index, stage in enumerate(stages):
            where = f"pipeline[{index}]"
            if not isinstance(stage, dict):
                raise ConfigError(
                    f"{path}: {where} must be a mapping with 'name' and 'cfg', got {_type_name(stage)} {stage!r}"
                )
            lacking = [key for key in ("name", "cfg") if stage.get(key) in (None, "")]
            if lacking:
                raise ConfigError(
                    f"{path}: {where} lacks {' and '.join(repr(k) for k in lacking)}; every stage needs a "
                    f"'name' (unique) and a 'cfg' (its config file); got keys {sorted(map(str, stage))}"
                )
            name, cfg = stage["name"], stage["cfg"]
            if not isinstance(name, str):
                raise ConfigError(f"{path}: {where}.name must be a string, got {_type_name(name)} {name!r}")
            if not isinstance(cfg, str):
                raise ConfigError(f"{path}: {where}.cfg must be a path string, got {_type_name(cfg)} {cfg!r}")
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
            raise ConfigError(f"{path}: cannot hold this YAML in a config: {_one_line(exc)}") from exc

    # -- loading -------------------------------------------------------------------------------------
    @staticmethod
    def _load_user(path: str) -> Dict[Any, Any]:
        data = load_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping with model:, datasets: and run: sections, "
                f"got {_type_name(data)}"
            )
        for key in data:
            if key not in SECTIONS:
                raise ConfigError(
                    f"{path}: unknown top-level key '{key}'{_did_you_mean(str(key), SECTIONS)} "
                    f"(top-level sections are {', '.join(SECTIONS)})"
                )
        return data

    @staticmethod
    def _load_defaults(path: PathLike, section: str, name: Optional[str] = None) -> Dict[Any, Any]:
        """The ``section:`` block (or ``section: {name: ...}``) of a defaults YAML."""
        data = load_yaml(path)
        block = data.get(section, _ABSENT) if isinstance(data, dict) else _ABSENT
        wanted = section
        if name is not None:
            block = block.get(name, _ABSENT) if isinstance(block, dict) else _ABSENT
            wanted = f"{section}.{name}"
            if block is None:  # `name:` with nothing under it: a dataset with no defaults of its own
                block = {}
        if not isinstance(block, dict):
            raise ConfigError(f"defaults file {path} has no '{wanted}:' mapping at its top level")
        return copy.deepcopy(block)

    def _register_defaults(self, prefix: str, tree: Any, source: str) -> None:
        # the composed config gets its own copy of `tree`, so --options never edit the schema
        for dotted, value in _walk(tree, prefix):
            self._schema[dotted] = (value, source)
            self._sources[dotted] = source
            if value is None or (isinstance(value, dict) and not value):
                self._open.add(dotted)

    def _section_block(self, user: Any, name: str) -> Dict[Any, Any]:
        if user is None:
            return {}
        if not isinstance(user, dict):
            raise ConfigError(f"{self.cfg_path}: {name} must be a mapping, got {_type_name(user)} {user!r}")
        return user

    # -- model ---------------------------------------------------------------------------------------
    def _compose_model(self, user_model: Any, options: Dict[str, Any]) -> Dict[Any, Any]:
        if user_model is _ABSENT and "model.arch" not in options:
            raise ConfigError(
                f"{self.cfg_path}: no model: section; model.arch is required and names a registered "
                f"model ({', '.join(registry.list_models())})"
            )
        block = self._section_block(None if user_model is _ABSENT else user_model, "model")

        arch, arch_src = block.get("arch"), self.cfg_path
        if "model.arch" in options:
            arch, arch_src = options["model.arch"], OPTIONS_SOURCE
        if arch is None or arch == MISSING:
            raise ConfigError(
                f"{self.cfg_path}: model.arch is required and names a registered model "
                f"({', '.join(registry.list_models())})"
            )
        if not isinstance(arch, str):
            raise ConfigError(f"{arch_src}: model.arch must be a model name (str), got {_type_name(arch)} {arch!r}")
        try:
            model_cls = registry.get_model_class(arch)
        except RegistryError as exc:
            raise ConfigError(f"{arch_src}: model.arch: {exc}") from exc

        model_type, type_src = block.get("model_type"), self.cfg_path
        if "model.model_type" in options:
            model_type, type_src = options["model.model_type"], OPTIONS_SOURCE
        if model_type is None:
            model_type = getattr(model_cls, "DEFAULT_MODEL_TYPE", None)
            type_src = f"{model_cls.__name__}.DEFAULT_MODEL_TYPE"
            if model_type is None:
                raise ConfigError(
                    f"{self.cfg_path}: model.model_type is not set and model {arch!r} "
                    f"({model_cls.__name__}) has no DEFAULT_MODEL_TYPE; set model.model_type"
                )
        if not isinstance(model_type, str):
            raise ConfigError(
                f"{type_src}: model.model_type must be a preset name (str), got {_type_name(model_type)} {model_type!r}"
            )
        presets = getattr(model_cls, "PRETRAINED_MODEL_CONFIG_DICT", None)
        if isinstance(presets, Mapping) and model_type not in presets:
            available = sorted(map(str, presets))
            raise ConfigError(
                f"{type_src}: model.model_type: model {arch!r} has no model_type {model_type!r}"
                f"{_did_you_mean(model_type, available) or '.'} Available model types: {', '.join(available) or '(none)'}"
            )
        try:
            preset_path = str(model_cls.default_config_path(model_type))
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise ConfigError(
                f"{type_src}: model.model_type: model {arch!r} has no preset for {model_type!r}: {_one_line(exc)}"
            ) from exc

        preset = self._load_defaults(preset_path, "model")
        preset.pop("arch", None)
        preset.pop("model_type", None)
        defaults = {"arch": arch, "model_type": model_type, **preset}
        self._register_defaults("model", defaults, preset_path)
        self._sources["model.arch"] = arch_src
        self._sources["model.model_type"] = type_src
        return self._merge(copy.deepcopy(defaults), block, "model", self.cfg_path)

    # -- datasets ------------------------------------------------------------------------------------
    def _compose_datasets(self, user_datasets: Any, options: Dict[str, Any]) -> Dict[Any, Any]:
        block = self._section_block(user_datasets, "datasets")
        self._sources["datasets"] = self.cfg_path
        composed: Dict[Any, Any] = {}
        for name, user_block in block.items():
            dotted = f"datasets.{name}"
            if user_block is None:  # `cc_sbu:` with nothing under it means "all defaults"
                user_block = {}
            if not isinstance(user_block, dict):
                raise ConfigError(
                    f"{self.cfg_path}: {dotted} must be a mapping of build options, "
                    f"got {_type_name(user_block)} {user_block!r}"
                )
            try:
                builder_cls = registry.get_builder_class(name)
            except RegistryError as exc:
                raise ConfigError(f"{self.cfg_path}: {dotted}: {exc}") from exc

            dtype, type_src = user_block.get("type", DATASET_COMMON_DEFAULTS["type"]), self.cfg_path
            if "type" not in user_block:
                type_src = DATASET_COMMON_SOURCE
            if f"{dotted}.type" in options:
                dtype, type_src = options[f"{dotted}.type"], OPTIONS_SOURCE
            if not isinstance(dtype, str):
                raise ConfigError(f"{type_src}: {dotted}.type must be a str, got {_type_name(dtype)} {dtype!r}")
            known = getattr(builder_cls, "DATASET_CONFIG_DICT", None)
            if isinstance(known, Mapping) and dtype not in known:
                available = sorted(map(str, known))
                raise ConfigError(
                    f"{type_src}: {dotted}.type: dataset {name!r} has no type {dtype!r}"
                    f"{_did_you_mean(dtype, available) or '.'} Available types: {', '.join(available) or '(none)'}"
                )
            try:
                defaults_path = str(builder_cls.default_config_path(dtype))
            except (KeyError, ValueError, FileNotFoundError) as exc:
                raise ConfigError(
                    f"{type_src}: {dotted}.type: dataset {name!r} has no defaults for type {dtype!r}: {_one_line(exc)}"
                ) from exc

            defaults = self._load_defaults(defaults_path, "datasets", str(name))
            common = [key for key in DATASET_COMMON_DEFAULTS if key not in defaults]
            for key in common:
                defaults[key] = DATASET_COMMON_DEFAULTS[key]
            defaults["type"] = dtype
            self._register_defaults(dotted, defaults, defaults_path)
            for key in common:
                self._register_defaults(f"{dotted}.{key}", defaults[key], DATASET_COMMON_SOURCE)
            self._sources[f"{dotted}.type"] = type_src
            composed[name] = self._merge(copy.deepcopy(defaults), user_block, dotted, self.cfg_path)
        return composed

    # -- run -----------------------------------------------------------------------------------------
    def _compose_run(self, user_run: Any) -> Dict[Any, Any]:
        block = self._section_block(user_run, "run")
        defaults = self._load_defaults(DEFAULT_RUN_PATH, "run")
        self._register_defaults("run", defaults, str(DEFAULT_RUN_PATH))
        return self._merge(copy.deepcopy(defaults), block, "run", self.cfg_path)

    # -- merging and type checks ---------------------------------------------------------------------
    def _record(self, dotted: str, value: Any, source: str) -> None:
        for key, _ in _walk(value, dotted):
            self._sources[key] = source

    def _merge(self, base: Dict[Any, Any], over: Dict[Any, Any], dotted: str, source: str) -> Dict[Any, Any]:
        """``base`` updated by ``over``; ``base`` is the schema, so each key of ``over`` must be in it."""
        self._sources[dotted] = source
        out = dict(base)
        for key, value in over.items():
            sub = _join(dotted, key)
            if key not in base:
                raise self._unknown_key(sub, base, dotted, source)
            out[key] = self._merge_value(base[key], value, sub, source)
        return out

    def _merge_value(self, base: Any, value: Any, dotted: str, source: str) -> Any:
        if isinstance(base, dict) and base and isinstance(value, dict):
            return self._merge(base, value, dotted, source)
        value = self._coerce(base, value, dotted, source)
        self._record(dotted, value, source)
        return copy.deepcopy(value)

    def _coerce(self, base: Any, value: Any, dotted: str, source: str, resolved_from: str = "") -> Any:
        """``value`` checked against the default ``base`` (and converted where that is safe)."""
        if value is None or base is None or (isinstance(base, str) and base == MISSING):
            return value
        if _is_interpolation(value) and not resolved_from:
            self._deferred[dotted] = source
            return value
        if isinstance(base, bool):
            ok, expected = isinstance(value, bool), "a bool (true/false)"
        elif isinstance(base, int):
            ok, expected = _is_number(value) and isinstance(value, int), "an int"
        elif isinstance(base, float):
            expected = "a float"
            if _is_number(value):
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
            schema_file = self._schema.get(dotted, (None, "the defaults"))[1]
            got = f"{_type_name(value)} {value!r}"
            if resolved_from:
                got += f" (resolved from {resolved_from!r})"
            raise ConfigError(
                f"{source}: {dotted} must be {expected} (its default in {schema_file} is {base!r}), got {got}"
            )
        return value

    def _unknown_key(self, dotted: str, siblings: Dict[Any, Any], parent: str, source: str) -> ConfigError:
        leaf = dotted.rpartition(".")[2]
        names = sorted(str(key) for key in siblings)
        close = [_join(parent, name) for name in difflib.get_close_matches(leaf, names, n=3, cutoff=0.6)]
        if not close:
            # maybe the key sits at the wrong depth (`model.r` for `model.lora.r`): compare the last
            # name with the last names of every key in the section; whole dotted keys would match
            # on their long shared prefix instead
            section = dotted.partition(".")[0]
            by_leaf: Dict[str, List[str]] = {}
            for key in self._schema:
                if key.partition(".")[0] == section and key != section:
                    by_leaf.setdefault(key.rpartition(".")[2], []).append(key)
            for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.8):
                close.extend(by_leaf[name])
            close = close[:3]
        if close:
            hint = f" — did you mean {_quoted_list(close)}?"
        else:
            hint = f" — valid keys under '{parent}' are: {', '.join(names)}."
        schema_file = self._schema.get(parent, (None, "the defaults"))[1]
        return ConfigError(f"{source}: unknown key '{dotted}'{hint} (keys come from the defaults in {schema_file})")

    # -- --options -----------------------------------------------------------------------------------
    @staticmethod
    def _parse_options(options: Sequence[str]) -> List[Tuple[str, Any, str]]:
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
                value = yaml.load(raw, Loader=_StrictLoader)
            except yaml.YAMLError as exc:
                raise ConfigError(f"--options {text!r}: the value is not valid YAML: {_yaml_error_text(exc)}") from exc
            parsed.append((key, value, text))
        return parsed

    def _under_open(self, dotted: str) -> bool:
        key = dotted
        while key:
            if key in self._open:
                return True
            key = key.rpartition(".")[0]
        return False

    def _apply_option(self, composed: Dict[Any, Any], key: str, value: Any, text: str) -> None:
        parts = key.split(".")
        node: Any = composed
        for depth, part in enumerate(parts[:-1]):
            here = ".".join(parts[: depth + 1])
            child = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
            if isinstance(child, dict):
                node = child
                continue
            if (child is _ABSENT or child is None) and isinstance(node, dict) and self._under_open(here):
                node[part] = {}
                node = node[part]
                continue
            raise self._unknown_option(key, text, composed)
        leaf = parts[-1]
        if not isinstance(node, dict) or (leaf not in node and not self._under_open(key)):
            raise self._unknown_option(key, text, composed)

        current = node.get(leaf)
        if isinstance(current, dict) and current and isinstance(value, dict):
            node[leaf] = self._merge(current, value, key, OPTIONS_SOURCE)
            return
        base = self._schema[key][0] if key in self._schema else None
        node[leaf] = self._merge_value(base, value, key, OPTIONS_SOURCE)

    def _unknown_option(self, key: str, text: str, composed: Dict[Any, Any]) -> ConfigError:
        keys = [dotted for dotted, _ in _walk(composed, "") if dotted]
        hint = _suggest_key(key, keys)
        if not hint:
            hint = " — top-level sections are model, datasets and run; see `train.py --print-config` for every key."
        return ConfigError(f"--options {text!r}: '{key}' is not a key of the composed config{hint}")

    # -- checks --------------------------------------------------------------------------------------
    def _check_missing(self, composed: Dict[Any, Any]) -> None:
        for dotted, value in _walk(composed, ""):
            if isinstance(value, str) and value == MISSING:
                raise ConfigError(
                    f"{dotted} is required but {self._sources.get(dotted, 'its defaults file')} leaves it as "
                    f"??? — set it in {self.cfg_path} or with --options {dotted}=<value>"
                )

    def _value_at(self, composed: Dict[Any, Any], dotted: str) -> Any:
        node: Any = composed
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return _ABSENT
            node = node[part]
        return node

    def _resolve(self, composed: Dict[Any, Any]) -> DictConfig:
        try:
            config = OmegaConf.create(composed)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            src = self._sources.get(str(key), self.cfg_path)
            raise ConfigError(f"{src}: {key}: a config cannot hold this value: {_one_line(exc.msg)}") from exc
        try:
            OmegaConf.resolve(config)
        except OmegaConfBaseException as exc:
            key = str(getattr(exc, "full_key", None) or "?")
            src = self._sources.get(key, self.cfg_path)
            raw = self._value_at(composed, key)
            shown = f" {raw!r}" if raw is not _ABSENT else ""
            reason = _one_line(str(exc.msg).split("\n")[0])
            raise ConfigError(f"{src}: {key}: cannot resolve interpolation{shown}: {reason}") from exc
        return config

    def _check_deferred(self, config: DictConfig) -> None:
        for dotted, source in self._deferred.items():
            if dotted not in self._schema:
                continue
            value = OmegaConf.select(config, dotted, default=_ABSENT)
            if value is _ABSENT:  # an option replaced the block that held it
                continue
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value)
            fixed = self._coerce(self._schema[dotted][0], value, dotted, source, resolved_from="an interpolation")
            if fixed is not value:
                OmegaConf.update(config, dotted, fixed, merge=False)

    def _check_registry_names(self, config: DictConfig) -> None:
        run = config.run
        for key, kind in _RUN_REGISTRY_KEYS:
            dotted = f"run.{key}"
            name = run.get(key)
            src = self.source_of(dotted) if key in run else self.cfg_path
            if not isinstance(name, str):
                raise ConfigError(
                    f"{src}: {dotted} must name a registered {kind} ({', '.join(registry.list(kind))}), "
                    f"got {_type_name(name)} {name!r}"
                )
            if name in registry.list(kind):
                continue
            try:
                registry.get_class(kind, name)
            except RegistryError as exc:
                raise ConfigError(f"{src}: {dotted}: {exc}") from exc

    def _number(self, block: DictConfig, prefix: str, key: str) -> float:
        value = block.get(key)
        if not _is_number(value):
            src = self.source_of(f"{prefix}.{key}") if key in block else self.cfg_path
            raise ConfigError(f"{src}: {prefix}.{key} must be a number, got {_type_name(value)} {value!r}")
        return value

    def _shown(self, dotted: str, value: Any) -> str:
        return f"{dotted} = {value!r} (from {self.source_of(dotted)})"

    def _check_rules(self, config: DictConfig) -> None:
        run = config.run
        init_lr = self._number(run, "run", "init_lr")
        min_lr = self._number(run, "run", "min_lr")
        warmup_lr = self._number(run, "run", "warmup_lr")
        if min_lr > init_lr:
            raise ConfigError(
                f"{self._shown('run.min_lr', min_lr)} must be <= {self._shown('run.init_lr', init_lr)}: "
                "the schedule decays from init_lr down to min_lr"
            )
        if warmup_lr < 0:
            raise ConfigError(f"{self._shown('run.warmup_lr', warmup_lr)} must be >= 0")
        max_iters = self._number(run, "run", "max_iters")
        if max_iters <= 0:
            raise ConfigError(f"{self._shown('run.max_iters', max_iters)} must be > 0 (optimizer steps to run)")
        accum = self._number(run, "run", "accum_grad_iters")
        if accum < 1:
            raise ConfigError(
                f"{self._shown('run.accum_grad_iters', accum)} must be >= 1 (micro-batches per optimizer step)"
            )
        precision = run.get("precision")
        if precision not in PRECISIONS:
            raise ConfigError(
                f"{self._shown('run.precision', precision)} must be one of {', '.join(PRECISIONS)}"
                f"{_did_you_mean(str(precision), PRECISIONS)}"
            )
        for name, block in config.datasets.items():
            ratio = self._number(block, f"datasets.{name}", "sample_ratio")
            if ratio <= 0:
                raise ConfigError(
                    f"{self._shown(f'datasets.{name}.sample_ratio', ratio)} must be > 0 "
                    "(it weighs how often the mixer draws from this dataset)"
                )
        if "length_group_batches" in run and self._number(run, "run", "length_group_batches") < 1:
            raise ConfigError(
                f"{self._shown('run.length_group_batches', run.length_group_batches)} must be >= 1 "
                "(batches sorted by length together)"
            )
        self._check_vision_cache(config)

    def _check_vision_cache(self, config: DictConfig) -> None:
        """``run.vision_feature_cache``: valid settings, a frozen encoder, deterministic image processors."""
        block = config.run.get("vision_feature_cache")
        if not block or not block.get("enabled"):
            return
        prefix = "run.vision_feature_cache"
        on = self._shown(f"{prefix}.enabled", True)
        choices = {"storage": VISION_CACHE_STORAGES, "dtype": VISION_CACHE_DTYPES}
        for key, allowed in choices.items():
            if key in block and block.get(key) not in allowed:
                shown = ", ".join("null" if v is None else str(v) for v in allowed)
                raise ConfigError(f"{self._shown(f'{prefix}.{key}', block.get(key))} must be one of {shown}")
        if "shard_size" in block and self._number(block, prefix, "shard_size") < 1:
            raise ConfigError(f"{self._shown(f'{prefix}.shard_size', block.shard_size)} must be >= 1")
        venc = config.model.get("vision_encoder") or {}
        if not venc.get("freeze", False):
            shown = self._shown("model.vision_encoder.freeze", venc.get("freeze")) if "freeze" in venc else (
                "model.vision_encoder.freeze is not set")
            raise ConfigError(
                f"{on} needs a frozen vision encoder, but {shown}: the features of an encoder that trains change "
                "every step; set model.vision_encoder.freeze=true or turn the cache off"
            )
        splits = list(config.run.get("train_splits") or [])
        for name, dblock in config.datasets.items():
            if dblock.get("data_type", "images") == "text":
                continue
            for split in splits:
                which = "train" if split == "train" else "eval"
                proc = ((dblock.get("vis_processor") or {}).get(which) or {})
                if proc.get("name") in RANDOM_IMAGE_PROCESSORS:
                    dotted = f"datasets.{name}.vis_processor.{which}.name"
                    raise ConfigError(
                        f"{on} needs deterministic image processors, but {self._shown(dotted, proc.get('name'))} "
                        "is a random augmentation (each epoch would need other features); use image_eval for "
                        "this dataset or turn the cache off"
                    )
