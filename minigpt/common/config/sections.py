"""Which defaults each section is laid over: the model preset, each dataset's defaults, the run defaults.

``model:`` is laid over the preset YAML picked by ``model.arch`` and ``model.model_type`` (the
family's ``PRETRAINED_MODEL_CONFIG_DICT``; a preset may inherit from a sibling, see :mod:`.presets`);
each ``datasets.<name>:`` over its builder's default YAML for the dataset's ``type`` (a processor
block naming another processor replaces the default one); ``run:`` over
``minigpt/configs/default_run.yaml``. The names are looked up in the registry, so a misspelt family,
preset, dataset or type is an error with the close ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Tuple

from minigpt.common.config.composer import Composer
from minigpt.common.config.errors import (
    ABSENT,
    MISSING,
    OPTIONS_SOURCE,
    ConfigError,
    did_you_mean,
    one_line,
    type_name,
    walk,
)
from minigpt.common.config.presets import load_model_preset_with_sources
from minigpt.common.config.toy import SCALE_KEY, TOY_SOURCE, check_scale, toy_twin
from minigpt.common.config.yaml_io import load_defaults, load_yaml
from minigpt.common.registry import RegistryError, registry

DEFAULT_RUN_PATH = Path(__file__).resolve().parents[2] / "configs" / "default_run.yaml"
# the option every dataset has (features_dir), merged under each dataset block as the builders do
MEDIA_FEATURES_PATH = DEFAULT_RUN_PATH.parent / "datasets" / "media_features.yaml"

# Keys every dataset block accepts even when its builder's default YAML does not list them:
# `type` picks that default YAML, and the mixer needs a weight for every dataset: `sample_ratio`, or
# `samples_per_epoch` as a size ("5k", "20M"; minigpt/common/mixing.py).
DATASET_COMMON_DEFAULTS: Dict[str, Any] = {"type": "default", "sample_ratio": 1.0, "samples_per_epoch": None}
DATASET_COMMON_SOURCE = "minigpt.common.config.DATASET_COMMON_DEFAULTS"


def section_block(composer: Composer, user: Any, name: str) -> Dict[Any, Any]:
    """The user's ``name:`` block (``{}`` when absent); anything but a mapping is an error."""
    if user is None:
        return {}
    if not isinstance(user, dict):
        raise ConfigError(f"{composer.cfg_path}: {name} must be a mapping, got {type_name(user)} {user!r}")
    return user


# blocks of a model naming a registered part; a user block that names another part replaces the preset's
PART_BLOCKS = ("vision_encoder", "projector", "llm")


def swap_parts(preset: Dict[Any, Any], user: Mapping) -> None:
    """Where the user's part block names a different registered part, its keys replace the preset's.

    The preset documents the keys of the part it names; another part has other keys, which its
    constructor checks (``strict_part_kwargs``), so the user's block is taken whole. A subclass of
    the preset's part takes the preset's keys, so its block is merged over the preset's as usual.
    """
    for part in PART_BLOCKS:
        mine = user.get(part) if isinstance(user, Mapping) else None
        theirs = preset.get(part)
        if not (isinstance(mine, Mapping) and isinstance(theirs, Mapping) and "name" in mine):
            continue
        if mine["name"] == theirs.get("name"):
            continue
        try:
            new, old = registry.get_class(part, str(mine["name"])), registry.get_class(part, str(theirs["name"]))
        except RegistryError:
            new = old = None  # an unknown name is reported by the registry-name check with close matches
        if not (isinstance(new, type) and isinstance(old, type) and issubclass(new, old)):
            preset[part] = copy.deepcopy(dict(mine))


# a dataset's processor blocks; one naming another processor replaces the default block
PROCESSOR_BLOCKS = ("vis_processor", "text_processor")


def swap_processors(defaults: Dict[Any, Any], user: Mapping, options: Dict[str, Any], dotted: str) -> None:
    """Where a dataset's processor block (its YAML or ``--options``) names another processor, replace the default.

    The default block documents the keys of the processor it names (``image_train``'s
    ``min_scale``/``max_scale``), which another processor refuses, so the new block keeps only the
    default's values of the keys the new processor also takes (``image_size``, ``mean``, ``std``:
    ``datasets.laion.vis_processor.train.name=image_eval`` still resizes to the dataset's size);
    any other key the user gives is then an unknown key, named. A subclass of the default's
    processor takes its keys, so its block is merged over the default's as usual.
    """
    for proc in PROCESSOR_BLOCKS:
        for split, theirs in (defaults.get(proc) or {}).items():
            if not isinstance(theirs, Mapping) or "name" not in theirs:
                continue
            mine = (user.get(proc) or {}).get(split) if isinstance(user.get(proc), Mapping) else None
            name = mine.get("name") if isinstance(mine, Mapping) else None
            name = options.get(f"{dotted}.{proc}.{split}.name", name)
            if not isinstance(name, str) or name == theirs["name"]:
                continue
            try:
                new, old = registry.get_class("processor", name), registry.get_class("processor", str(theirs["name"]))
            except RegistryError:
                continue  # an unknown name is reported when the processor is built, with close matches
            if isinstance(new, type) and isinstance(old, type) and issubclass(new, old):
                continue
            accepted = getattr(new, "CONFIG_KEYS", {})
            defaults[proc][split] = {"name": name, **{k: v for k, v in theirs.items() if k in accepted}}


def compose_model(composer: Composer, user_model: Any, options: Dict[str, Any]) -> Dict[Any, Any]:
    """``model:``: the user's block over the preset of its arch and model_type (``options``: parsed --options)."""
    if user_model is ABSENT and "model.arch" not in options:
        raise ConfigError(
            f"{composer.cfg_path}: no model: section; model.arch is required and names a registered "
            f"model ({', '.join(registry.list_models())})"
        )
    block = section_block(composer, None if user_model is ABSENT else user_model, "model")

    arch, arch_src = block.get("arch"), composer.cfg_path
    if "model.arch" in options:
        arch, arch_src = options["model.arch"], OPTIONS_SOURCE
    if arch is None or arch == MISSING:
        raise ConfigError(
            f"{composer.cfg_path}: model.arch is required and names a registered model "
            f"({', '.join(registry.list_models())})"
        )
    if not isinstance(arch, str):
        raise ConfigError(f"{arch_src}: model.arch must be a model name (str), got {type_name(arch)} {arch!r}")
    try:
        model_cls = registry.get_model_class(arch)
    except RegistryError as exc:
        raise ConfigError(f"{arch_src}: model.arch: {exc}") from exc

    model_type, type_src = block.get("model_type"), composer.cfg_path
    if "model.model_type" in options:
        model_type, type_src = options["model.model_type"], OPTIONS_SOURCE
    if model_type is None:
        model_type = getattr(model_cls, "DEFAULT_MODEL_TYPE", None)
        type_src = f"{model_cls.__name__}.DEFAULT_MODEL_TYPE"
        if model_type is None:
            raise ConfigError(
                f"{composer.cfg_path}: model.model_type is not set and model {arch!r} "
                f"({model_cls.__name__}) has no DEFAULT_MODEL_TYPE; set model.model_type"
            )
    if not isinstance(model_type, str):
        raise ConfigError(
            f"{type_src}: model.model_type must be a preset name (str), got {type_name(model_type)} {model_type!r}"
        )
    preset_path = _default_yaml_of(
        model_cls, "PRETRAINED_MODEL_CONFIG_DICT", model_type, f"{type_src}: model.model_type: model {arch!r}",
        ("model_type", "model types", "preset for"),
    )

    preset, preset_sources = load_model_preset_with_sources(preset_path)
    preset.pop("arch", None)
    preset.pop("model_type", None)
    swap_parts(preset, block)
    scale, scale_src = preset.get(SCALE_KEY, "real"), preset_path
    if SCALE_KEY in block:
        scale, scale_src = block[SCALE_KEY], composer.cfg_path
    if f"model.{SCALE_KEY}" in options:
        scale, scale_src = options[f"model.{SCALE_KEY}"], OPTIONS_SOURCE
    if check_scale(scale, scale_src) == "toy":  # the twin replaces the preset; the user's block still wins
        real = dict(walk(preset, "model"))
        preset = toy_twin(preset)
        preset_sources.update(
            {
                dotted: TOY_SOURCE
                for dotted, value in walk(preset, "model")
                if not isinstance(value, dict) and real.get(dotted, ABSENT) != value
            }
        )
    defaults = {"arch": arch, "model_type": model_type, **preset}
    composer.register_defaults("model", defaults, preset_path)
    for dotted, source in preset_sources.items():  # a key inherited through `base:` names the file that set it
        if dotted in composer.schema:
            composer.schema[dotted] = (composer.schema[dotted][0], source)
            composer.sources[dotted] = source
    composer.sources["model.arch"] = arch_src
    composer.sources["model.model_type"] = type_src
    return composer.merge(copy.deepcopy(defaults), block, "model", composer.cfg_path)


def _default_yaml_of(cls: Any, table: str, chosen: str, where: str, words: Tuple[str, str, str]) -> str:
    """The default YAML ``cls`` keeps for config type ``chosen``, its choices named by attribute ``table``.

    ``where`` starts each error (the source and dotted key, then the owner); ``words`` are what
    a choice is called, in the singular and the plural, and what lacking its file is called.
    """
    noun, nouns, no_file = words
    known = getattr(cls, table, None)
    if isinstance(known, Mapping) and chosen not in known:
        available = sorted(map(str, known))
        raise ConfigError(
            f"{where} has no {noun} {chosen!r}"
            f"{did_you_mean(chosen, available) or '.'} Available {nouns}: {', '.join(available) or '(none)'}"
        )
    try:
        return str(cls.default_config_path(chosen))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"{where} has no {no_file} {chosen!r}: {one_line(exc)}") from exc


def compose_datasets(composer: Composer, user_datasets: Any, options: Dict[str, Any]) -> Dict[Any, Any]:
    """``datasets:``: each named block over its builder's defaults for the block's ``type``."""
    block = section_block(composer, user_datasets, "datasets")
    composer.sources["datasets"] = composer.cfg_path
    composed: Dict[Any, Any] = {}
    for name, user_block in block.items():
        dotted = f"datasets.{name}"
        if user_block is None:  # `cc_sbu:` with nothing under it means "all defaults"
            user_block = {}
        if not isinstance(user_block, dict):
            raise ConfigError(
                f"{composer.cfg_path}: {dotted} must be a mapping of build options, "
                f"got {type_name(user_block)} {user_block!r}"
            )
        try:
            builder_cls = registry.get_builder_class(name)
        except RegistryError as exc:
            raise ConfigError(f"{composer.cfg_path}: {dotted}: {exc}") from exc

        dtype, type_src = user_block.get("type", DATASET_COMMON_DEFAULTS["type"]), composer.cfg_path
        if "type" not in user_block:
            type_src = DATASET_COMMON_SOURCE
        if f"{dotted}.type" in options:
            dtype, type_src = options[f"{dotted}.type"], OPTIONS_SOURCE
        if not isinstance(dtype, str):
            raise ConfigError(f"{type_src}: {dotted}.type must be a str, got {type_name(dtype)} {dtype!r}")
        defaults_path = _default_yaml_of(
            builder_cls, "DATASET_CONFIG_DICT", dtype, f"{type_src}: {dotted}.type: dataset {name!r}",
            ("type", "types", "defaults for type"),
        )

        defaults = load_defaults(defaults_path, "datasets", str(name))
        swap_processors(defaults, user_block, options, dotted)
        common = [key for key in DATASET_COMMON_DEFAULTS if key not in defaults]
        for key in common:
            defaults[key] = DATASET_COMMON_DEFAULTS[key]
        media = load_yaml(MEDIA_FEATURES_PATH)
        shared = [key for key in media if key not in defaults]
        for key in shared:
            defaults[key] = media[key]
        defaults["type"] = dtype
        composer.register_defaults(dotted, defaults, defaults_path)
        for key in common:
            composer.register_defaults(f"{dotted}.{key}", defaults[key], DATASET_COMMON_SOURCE)
        for key in shared:
            composer.register_defaults(f"{dotted}.{key}", defaults[key], str(MEDIA_FEATURES_PATH))
        composer.sources[f"{dotted}.type"] = type_src
        composed[name] = composer.merge(copy.deepcopy(defaults), user_block, dotted, composer.cfg_path)
    return composed


def compose_run(composer: Composer, user_run: Any) -> Dict[Any, Any]:
    """``run:``: the user's block over ``default_run.yaml``."""
    block = section_block(composer, user_run, "run")
    defaults = load_defaults(DEFAULT_RUN_PATH, "run")
    composer.register_defaults("run", defaults, str(DEFAULT_RUN_PATH))
    return composer.merge(copy.deepcopy(defaults), block, "run", composer.cfg_path)
