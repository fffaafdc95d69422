"""Compose a run's configuration from YAML files and validate it.

A run config has three sections, ``model:``, ``datasets:`` and ``run:``, and each is laid over
defaults: the model's preset YAML (picked by ``model.arch`` and ``model.model_type``), each dataset
builder's default YAML (picked by the dataset's ``type``), and ``minigpt/configs/default_run.yaml``.
The defaults double as the schema: a user key they do not contain is a typo, and a user value whose
type differs from the default is a mistake; both are reported with the file, the dotted key and the
close matches. ``--options`` overrides come last, then interpolations resolve, then the ``run:``
section is checked against its typed schema (:mod:`.run_schema`) and the cross-key rules run. Everything is checked before any model or data is touched, and every problem is a
:class:`ConfigError` whose message is one paragraph that can be shown to the user as is.

A config with a top-level ``pipeline:`` chains stage configs instead; :meth:`Config.load_pipeline`
reads it, and the training entry point composes each stage's own config.

The modules, one concern each: :mod:`.yaml_io` (strict YAML reading), :mod:`.errors` (the error
and its wording), :mod:`.composer` (merging over defaults with type checks), :mod:`.sections` (which
defaults each section uses), :mod:`.presets` (model presets and their ``base:``), :mod:`.options`
(``--options``), :mod:`.pipeline_file` (pipeline files), :mod:`.run_schema` (the ``run:`` keys'
types, choices and ranges), :mod:`.rules` (registry names and cross-key rules), :mod:`.composed`
(:class:`Config`).
"""

from minigpt.common.config.composed import Config
from minigpt.common.config.errors import MISSING, OPTIONS_SOURCE, ConfigError
from minigpt.common.config.pipeline_file import PIPELINE_KEYS
from minigpt.common.config.presets import load_model_preset
from minigpt.common.config.rules import RANDOM_IMAGE_PROCESSORS
from minigpt.common.config.run_schema import PRECISIONS, VISION_CACHE_DTYPES, VISION_CACHE_STORAGES, RunSchema
from minigpt.common.config.sections import DATASET_COMMON_DEFAULTS, DATASET_COMMON_SOURCE, DEFAULT_RUN_PATH
from minigpt.common.config.yaml_io import SECTIONS, PathLike, load_yaml

__all__ = [
    "Config",
    "ConfigError",
    "DATASET_COMMON_DEFAULTS",
    "DATASET_COMMON_SOURCE",
    "DEFAULT_RUN_PATH",
    "MISSING",
    "OPTIONS_SOURCE",
    "PIPELINE_KEYS",
    "PRECISIONS",
    "PathLike",
    "RANDOM_IMAGE_PROCESSORS",
    "RunSchema",
    "SECTIONS",
    "VISION_CACHE_DTYPES",
    "VISION_CACHE_STORAGES",
    "load_model_preset",
    "load_yaml",
]
