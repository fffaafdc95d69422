"""Tests for minigpt.common.config: composition, --options, interpolation and every error class.

The real model classes and dataset builders are written elsewhere, so these tests register a fake
model and a fake builder under test-only names, with preset YAMLs written into tmp_path.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Callable, Dict

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from minigpt.common.config import DEFAULT_RUN_PATH, Config, ConfigError
from minigpt.common.registry import registry

MODEL = "test_config_fake_model"
DATASET = "test_config_fake_caption"


class FakeModel:
    """Stands in for a registered model family; presets point into the test's tmp_path."""

    DEFAULT_MODEL_TYPE = "tiny"
    PRETRAINED_MODEL_CONFIG_DICT: Dict[str, str] = {}

    @classmethod
    def default_config_path(cls, model_type: str) -> str:
        return cls.PRETRAINED_MODEL_CONFIG_DICT[model_type]


class FakeBuilder:
    """Stands in for a registered dataset builder with one default YAML per dataset type."""

    DATASET_CONFIG_DICT: Dict[str, str] = {}

    @classmethod
    def default_config_path(cls, type: str = "default") -> str:
        return cls.DATASET_CONFIG_DICT[type]


TINY_PRESET = """
model:
  arch: test_config_fake_model
  image_size: 32
  freeze_vit: true
  max_txt_len: 64
  prompt_template: "[INST] {} [/INST]"
  lora:
    r: 8
    alpha: 16.0
  extra: {}
  ckpt: null
"""

BASE_PRESET = """
model:
  image_size: 224
  freeze_vit: true
  max_txt_len: 160
  prompt_template: ""
  lora: {r: 64, alpha: 16.0}
  extra: {}
  ckpt: null
"""

NEEDS_PATH_PRESET = """
model:
  image_size: 32
  llm_path: ???
"""

DATASET_DEFAULT = """
datasets:
  test_config_fake_caption:
    data_type: images
    build_info:
      storage: ${run.data_root}/captions
    vis_processor:
      train: {name: image_train, image_size: 32}
    text_processor: {}
    batch_size: 4
"""

DATASET_EVAL = """
datasets:
  test_config_fake_caption:
    data_type: images
    build_info:
      storage: ${run.data_root}/captions_eval
    batch_size: 16
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    presets = tmp_path / "presets"
    monkeypatch.setattr(
        FakeModel,
        "PRETRAINED_MODEL_CONFIG_DICT",
        {
            "tiny": str(write(presets / "tiny.yaml", TINY_PRESET)),
            "base": str(write(presets / "base.yaml", BASE_PRESET)),
            "needs_path": str(write(presets / "needs_path.yaml", NEEDS_PATH_PRESET)),
        },
    )
    monkeypatch.setattr(
        FakeBuilder,
        "DATASET_CONFIG_DICT",
        {
            "default": str(write(presets / "caption_default.yaml", DATASET_DEFAULT)),
            "eval": str(write(presets / "caption_eval.yaml", DATASET_EVAL)),
        },
    )
    monkeypatch.delenv("MINIGPT_DATA_ROOT", raising=False)
    registry.register_model(MODEL)(FakeModel)
    registry.register_builder(DATASET)(FakeBuilder)
    yield
    # keep the global registry's listings clean for the other test modules in this session
    registry.unregister("model", MODEL)
    registry.unregister("builder", DATASET)


@pytest.fixture
def user_yaml(tmp_path: Path, fakes) -> Callable[[str], str]:
    def make(text: str, name: str = "train.yaml") -> str:
        return str(write(tmp_path / name, text))

    return make


MINIMAL = f"""
model:
  arch: {MODEL}
datasets:
  {DATASET}:
run:
  stage_name: s1
"""


def config_error(cfg_path: str, options=None) -> str:
    """Compose, expect a ConfigError, and return its message (which must be one paragraph)."""
    with pytest.raises(ConfigError) as info:
        Config(cfg_path, options)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- a valid composition ---------------------------------------------------------------------------


def test_composes_preset_dataset_and_run_defaults_with_options(user_yaml):
    path = user_yaml(
        f"""
        model:
          arch: {MODEL}
          lora:
            r: 4
        datasets:
          {DATASET}:
            sample_ratio: 3
            batch_size: 2
        run:
          stage_name: stage1
          init_lr: 1e-4
          min_lr: 1e-5
          max_iters: 100
        """
    )
    cfg = Config(path, ["run.max_iters=20", "run.train_splits=[train, val]", "model.ckpt=null",
                        f"datasets.{DATASET}.batch_size=8", "run.warmup_lr=0"])

    model = cfg.model_cfg
    assert model.arch == MODEL and model.model_type == "tiny"
    assert model.image_size == 32 and model.max_txt_len == 64  # from the preset
    assert model.lora.r == 4 and model.lora.alpha == 16.0  # user's r merged into the preset block
    assert model.ckpt is None

    data = cfg.datasets_cfg[DATASET]
    assert data.type == "default"
    assert data.sample_ratio == 3.0 and isinstance(data.sample_ratio, float)
    assert data.batch_size == 8 and data.vis_processor.train.name == "image_train"
    assert data.build_info.storage == "data/captions"  # ${run.data_root} and its oc.env default

    run = cfg.run_cfg
    assert run.max_iters == 20 and isinstance(run.max_iters, int)
    assert list(run.train_splits) == ["train", "val"]
    assert run.init_lr == pytest.approx(1e-4) and isinstance(run.init_lr, float)
    assert run.min_lr == pytest.approx(1e-5) and isinstance(run.min_lr, float)
    assert run.warmup_lr == 0.0 and isinstance(run.warmup_lr, float)  # int accepted where float expected
    assert run.weight_decay == 0.05 and run.precision == "fp32"  # run defaults
    assert run.output_dir == "output/stage1"  # ${run.stage_name}
    assert set(cfg.config.keys()) == {"model", "datasets", "run"}

    assert cfg.source_of("run.max_iters") == "--options"
    assert cfg.source_of("run.init_lr") == path
    assert cfg.source_of("run.weight_decay") == str(DEFAULT_RUN_PATH)
    assert cfg.source_of("model.image_size") == FakeModel.PRETRAINED_MODEL_CONFIG_DICT["tiny"]
    assert cfg.source_of("model.lora.r") == path
    assert cfg.source_of("model.model_type") == "FakeModel.DEFAULT_MODEL_TYPE"
    assert cfg.source_of(f"datasets.{DATASET}.sample_ratio") == path
    assert cfg.source_of(f"datasets.{DATASET}.data_type") == FakeBuilder.DATASET_CONFIG_DICT["default"]


def test_model_type_and_dataset_type_pick_their_defaults(user_yaml):
    path = user_yaml(
        f"""
        model:
          arch: {MODEL}
          model_type: base
        datasets:
          {DATASET}:
            type: eval
        """
    )
    cfg = Config(path)
    assert cfg.model_cfg.model_type == "base" and cfg.model_cfg.image_size == 224
    assert cfg.datasets_cfg[DATASET].batch_size == 16
    assert cfg.datasets_cfg[DATASET].build_info.storage == "data/captions_eval"
    assert "vis_processor" not in cfg.datasets_cfg[DATASET]
    assert cfg.source_of("model.image_size") == FakeModel.PRETRAINED_MODEL_CONFIG_DICT["base"]


def test_options_can_switch_the_model_preset(user_yaml):
    cfg = Config(user_yaml(MINIMAL), ["model.model_type=base"])
    assert cfg.model_cfg.model_type == "base" and cfg.model_cfg.max_txt_len == 160
    assert cfg.source_of("model.model_type") == "--options"


def test_from_args_reads_cfg_path_and_options(user_yaml):
    args = argparse.Namespace(cfg_path=user_yaml(MINIMAL), options=["run.max_iters=7"])
    assert Config.from_args(args).run_cfg.max_iters == 7
    assert Config.from_args(argparse.Namespace(cfg_path=args.cfg_path, options=None)).run_cfg.max_iters == 1000


# -- reading the user's file -----------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    message = config_error(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in message and "does not exist" in message


def test_yaml_syntax_error_names_file_line_and_column(user_yaml):
    path = user_yaml("model:\n  arch: [unclosed\nrun:\n  max_iters: 3\n", name="broken.yaml")
    message = config_error(path)
    assert "broken.yaml" in message and "line " in message and "column " in message


def test_duplicate_keys_are_an_error(user_yaml):
    path = user_yaml(f"model:\n  arch: {MODEL}\nrun:\n  max_iters: 3\n  max_iters: 4\n")
    message = config_error(path)
    assert "train.yaml" in message and "duplicate key 'max_iters'" in message and "line 4" in message


def test_unknown_top_level_key_is_suggested(user_yaml):
    message = config_error(user_yaml(MINIMAL + "runn:\n  max_iters: 3\n"))
    assert "train.yaml" in message and "'runn'" in message and "did you mean 'run'" in message


def test_missing_model_section_is_an_error(user_yaml):
    message = config_error(user_yaml("run:\n  max_iters: 3\n"))
    assert "train.yaml" in message and "model.arch is required" in message and MODEL in message


# -- unknown keys ---------------------------------------------------------------------------------


def test_unknown_run_key_suggests_the_close_one(user_yaml):
    message = config_error(user_yaml(MINIMAL + "  max_iter: 20\n"))
    assert "train.yaml: unknown key 'run.max_iter'" in message
    assert "did you mean 'run.max_iters'" in message
    assert "default_run.yaml" in message


def test_unknown_nested_model_key_is_reported_with_its_dotted_path(user_yaml):
    path = user_yaml(f"model:\n  arch: {MODEL}\n  lora:\n    rank: 4\n")
    message = config_error(path)
    assert "unknown key 'model.lora.rank'" in message and "tiny.yaml" in message
    assert "valid keys under 'model.lora' are: alpha, r." in message  # nothing close enough to suggest
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\n  lora:\n    rr: 4\n"))
    assert "unknown key 'model.lora.rr' — did you mean 'model.lora.r'?" in message


def test_unknown_dataset_key_lists_the_valid_ones_when_nothing_is_close(user_yaml):
    path = user_yaml(f"model:\n  arch: {MODEL}\ndatasets:\n  {DATASET}:\n    zzz: 1\n")
    message = config_error(path)
    assert f"unknown key 'datasets.{DATASET}.zzz'" in message
    assert "batch_size" in message and "sample_ratio" in message and "caption_default.yaml" in message


def test_open_blocks_accept_any_sub_keys(user_yaml):
    path = user_yaml(
        f"""
        model:
          arch: {MODEL}
          extra: {{anything: {{deep: 1}}}}
          ckpt: {{path: stage1/ckpt, strict: false}}
        datasets:
          {DATASET}:
            text_processor: {{name: caption_text, prompt: "a photo of"}}
        """
    )
    cfg = Config(path, ["model.extra.more=2", "model.extra.anything.deeper=[1, 2]"])
    assert cfg.model_cfg.extra.anything.deep == 1 and cfg.model_cfg.extra.more == 2
    assert list(cfg.model_cfg.extra.anything.deeper) == [1, 2]
    assert cfg.model_cfg.ckpt.strict is False
    assert cfg.datasets_cfg[DATASET].text_processor.prompt == "a photo of"
    # a closed block stays closed even next to open ones
    closed = user_yaml(f"model:\n  arch: {MODEL}\ndatasets:\n  {DATASET}:\n    vis_processor:\n      train:\n        sise: 3\n")
    message = config_error(closed)
    assert f"datasets.{DATASET}.vis_processor.train.sise" in message and "'size'" not in message
    assert f"did you mean 'datasets.{DATASET}.vis_processor.train.name'" not in message


# -- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_block, key, expected, got",
    [
        ("max_iters: many", "run.max_iters", "an int", "str 'many'"),
        ("max_iters: 2.5", "run.max_iters", "an int", "float 2.5"),
        ("progress: 1", "run.progress", "a bool", "int 1"),
        ("init_lr: fast", "run.init_lr", "a float", "str 'fast'"),
        ("init_lr: true", "run.init_lr", "a float", "bool True"),
        ("train_splits: train", "run.train_splits", "a list", "str 'train'"),
        ("device: 0", "run.device", "a str", "int 0"),
    ],
)
def test_type_mismatch_names_file_key_expected_and_got(user_yaml, run_block, key, expected, got):
    path = user_yaml(MINIMAL + f"  {run_block}\n")
    message = config_error(path)
    assert message.startswith(f"{path}: {key} must be")
    assert expected in message and got in message


def test_mapping_expected_where_preset_has_a_block(user_yaml):
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\n  lora: 8\n"))
    assert "model.lora must be a mapping" in message and "int 8" in message


def test_float_strings_are_converted_where_a_float_is_expected(user_yaml):
    cfg = Config(user_yaml(MINIMAL + "  init_lr: 3e-4\n  min_lr: '1E-6'\n  grad_clip: 2\n"),
                 ["run.warmup_lr=1e-7"])
    for key, value in (("init_lr", 3e-4), ("min_lr", 1e-6), ("grad_clip", 2.0), ("warmup_lr", 1e-7)):
        assert isinstance(cfg.run_cfg[key], float) and cfg.run_cfg[key] == pytest.approx(value), key


def test_null_is_allowed_anywhere_and_null_defaults_take_any_type(user_yaml):
    cfg = Config(user_yaml(MINIMAL + "  grad_clip: null\n  num_threads: 4\n"), ["model.ckpt=all"])
    assert cfg.run_cfg.grad_clip is None and cfg.run_cfg.num_threads == 4
    assert cfg.model_cfg.ckpt == "all"
    # run: keys are typed by the run schema even where their default is null (int('all') would crash later)
    message = config_error(user_yaml(MINIMAL + "  max_eval_samples: all\n"))
    assert "run.max_eval_samples must be a number" in message and "str 'all'" in message


# -- required values -------------------------------------------------------------------------------


def test_missing_required_value_names_the_key_and_its_defaults_file(user_yaml):
    path = user_yaml(f"model:\n  arch: {MODEL}\n  model_type: needs_path\n")
    message = config_error(path)
    assert "model.llm_path is required" in message and "needs_path.yaml" in message
    assert "--options model.llm_path=" in message
    assert Config(path, ["model.llm_path=/weights/llm"]).model_cfg.llm_path == "/weights/llm"


# -- cross-key rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_block, fragments",
    [
        ("min_lr: 0.01\n  init_lr: 0.001", ["run.min_lr = 0.01", "run.init_lr = 0.001", "<="]),
        ("warmup_lr: -1.0", ["run.warmup_lr = -1.0", ">= 0"]),
        ("max_iters: 0", ["run.max_iters = 0", "> 0"]),
        ("accum_grad_iters: 0", ["run.accum_grad_iters = 0", ">= 1"]),
        ("precision: bf61", ["run.precision = 'bf61'", "fp32, bf16, fp16", "did you mean 'bf16'"]),
        ("max_iters: null", ["run.max_iters must be a number", "null"]),
    ],
)
def test_cross_key_rules_name_keys_and_values(user_yaml, run_block, fragments):
    message = config_error(user_yaml(MINIMAL + f"  {run_block}\n"))
    assert "train.yaml" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_min_lr_rule_names_both_sources(user_yaml):
    message = config_error(user_yaml(MINIMAL), ["run.min_lr=0.5"])
    assert "run.min_lr = 0.5 (from --options)" in message
    assert f"run.init_lr = 0.0001 (from {DEFAULT_RUN_PATH})" in message


def test_the_epoch_cosine_lets_min_lr_exceed_init_lr_and_needs_iters_per_epoch(user_yaml):
    # the originals' per-epoch cosine with TinyGPT-V stage 4's values: the stairs climb, as they did there
    climbing = ["run.lr_sched=linear_warmup_cosine_epoch_lr", "run.init_lr=1e-5", "run.min_lr=8e-5"]
    run = Config(user_yaml(MINIMAL), [*climbing, "run.iters_per_epoch=1000"]).run_cfg
    assert run.min_lr > run.init_lr
    message = config_error(user_yaml(MINIMAL), climbing)
    assert f"run.iters_per_epoch = None (from {DEFAULT_RUN_PATH}) must be set" in message
    assert "run.lr_sched = 'linear_warmup_cosine_epoch_lr' (from --options)" in message
    # runner_epoch derives the epoch length itself
    assert Config(user_yaml(MINIMAL), [*climbing, "run.runner=runner_epoch"]).run_cfg.iters_per_epoch is None
    # every other schedule decays, so the rule stays for them
    message = config_error(user_yaml(MINIMAL), ["run.lr_sched=constant_lr", "run.min_lr=0.5"])
    assert "run.min_lr = 0.5 (from --options) must be <= run.init_lr" in message


def test_warmup_restart_every_must_exceed_warmup_steps(user_yaml):
    assert Config(user_yaml(MINIMAL), ["run.warmup_steps=10", "run.warmup_restart_every=50"]).run_cfg \
        .warmup_restart_every == 50
    message = config_error(user_yaml(MINIMAL), ["run.warmup_steps=10", "run.warmup_restart_every=10"])
    assert "run.warmup_restart_every = 10 (from --options) must exceed run.warmup_steps = 10 (from --options)" in message
    assert "run.warmup_restart_every" in config_error(user_yaml(MINIMAL), ["run.warmup_restart_every=0"])


def test_a_dataset_batch_size_must_be_a_positive_int(user_yaml):
    dotted = f"datasets.{DATASET}.batch_size"
    message = config_error(user_yaml(MINIMAL), [f"{dotted}=0"])
    assert f"{dotted} = 0 (from --options) must be a positive int" in message
    # every shipped dataset declares it, null by default (run.batch_size_train)
    real = user_yaml("model: {arch: tinygptv, model_type: tiny}\ndatasets:\n  refcoco: {data_type: text, batch_size: 3}\n",
                     "real.yaml")
    assert Config(real).datasets_cfg.refcoco.batch_size == 3
    assert Config(real, ["datasets.refcoco.batch_size=null"]).datasets_cfg.refcoco.batch_size is None
    for bad in ("two", "true", "1.5", "-1"):
        message = config_error(real, [f"datasets.refcoco.batch_size={bad}"])
        assert "datasets.refcoco.batch_size = " in message and "(from --options) must be a positive int" in message


def test_sample_ratio_must_be_positive(user_yaml):
    path = user_yaml(f"model:\n  arch: {MODEL}\ndatasets:\n  {DATASET}:\n    sample_ratio: 0\n")
    message = config_error(path)
    assert f"datasets.{DATASET}.sample_ratio = 0.0" in message and "> 0" in message and "train.yaml" in message


# -- registry names ---------------------------------------------------------------------------------


def test_unknown_arch_names_file_key_and_close_match(user_yaml):
    message = config_error(user_yaml("model:\n  arch: test_config_fake_modle\n"))
    assert "train.yaml: model.arch: unknown model name 'test_config_fake_modle'" in message
    assert f"Did you mean: {MODEL}" in message


def test_unknown_model_type_lists_the_available_ones(user_yaml):
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\n  model_type: tinyy\n"))
    assert "train.yaml: model.model_type:" in message and "'tinyy'" in message
    assert "did you mean 'tiny'" in message and "base, needs_path, tiny" in message


def test_unknown_dataset_name_and_type(user_yaml):
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\ndatasets:\n  test_config_fake_captoin:\n"))
    assert "train.yaml: datasets.test_config_fake_captoin:" in message and DATASET in message
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\ndatasets:\n  {DATASET}:\n    type: evl\n"))
    assert f"datasets.{DATASET}.type" in message and "did you mean 'eval'" in message and "default, eval" in message


def test_unknown_run_registry_names(user_yaml):
    message = config_error(user_yaml(MINIMAL + "  lr_sched: linear_warmup_cosine\n"))
    assert "train.yaml: run.lr_sched: unknown lr_scheduler name 'linear_warmup_cosine'" in message
    assert "linear_warmup_cosine_lr" in message
    message = config_error(user_yaml(MINIMAL), ["run.runner=runner_iterr"])
    assert message.startswith("--options: run.runner: unknown runner name") and "runner_iter" in message


# -- --options -------------------------------------------------------------------------------------


def test_malformed_option_is_an_error(user_yaml):
    message = config_error(user_yaml(MINIMAL), ["run.max_iters"])
    assert "'run.max_iters'" in message and "dotted.key=value" in message
    message = config_error(user_yaml(MINIMAL), ["run..max_iters=3"])
    assert "dotted key" in message


def test_unknown_option_key_suggests_close_keys(user_yaml):
    message = config_error(user_yaml(MINIMAL), ["run.max_iter=3"])
    # the closest key comes first (run.max_skip_rate is a further, weaker match)
    assert "--options 'run.max_iter=3'" in message and "did you mean 'run.max_iters'" in message
    message = config_error(user_yaml(MINIMAL), ["runn.max_iters=3"])
    assert "did you mean 'run.max_iters'?" in message
    message = config_error(user_yaml(MINIMAL), ["run.max_iters.x=3"])
    assert "'run.max_iters.x' is not a key" in message


def test_option_values_are_type_checked_and_yaml_parsed(user_yaml):
    message = config_error(user_yaml(MINIMAL), ["run.max_iters=lots"])
    assert message.startswith("--options: run.max_iters must be an int") and "str 'lots'" in message
    message = config_error(user_yaml(MINIMAL), ["run.train_splits=[train"])
    assert "--options 'run.train_splits=[train'" in message and "not valid YAML" in message


# -- interpolation ----------------------------------------------------------------------------------


def test_interpolations_resolve_after_merging(user_yaml, monkeypatch):
    monkeypatch.setenv("MINIGPT_DATA_ROOT", "/datasets")
    cfg = Config(user_yaml(MINIMAL.replace("stage_name: s1", "stage_name: ${model.arch}_s1")))
    assert cfg.run_cfg.stage_name == f"{MODEL}_s1" and cfg.run_cfg.output_dir == f"output/{MODEL}_s1"
    cfg = Config(user_yaml(MINIMAL), ["run.stage_name=renamed"])
    assert cfg.run_cfg.output_dir == "output/renamed"  # the option lands before resolution
    assert cfg.run_cfg.data_root == "/datasets"
    assert cfg.datasets_cfg[DATASET].build_info.storage == "/datasets/captions"


def test_interpolation_to_an_unknown_key_names_key_and_file(user_yaml):
    message = config_error(user_yaml(MINIMAL + "  output_dir: out/${run.stage}\n"))
    assert "train.yaml: run.output_dir: cannot resolve interpolation 'out/${run.stage}'" in message
    assert "run.stage" in message


def test_interpolated_values_are_type_checked_once_resolved(user_yaml):
    message = config_error(user_yaml(MINIMAL + "  max_iters: ${run.stage_name}\n"))
    assert "train.yaml: run.max_iters must be an int" in message and "str 's1'" in message
    cfg = Config(user_yaml(MINIMAL + "  batch_size_eval: ${run.batch_size_train}\n  init_lr: ${run.grad_clip}\n"))
    assert cfg.run_cfg.batch_size_eval == 8 and cfg.run_cfg.init_lr == 1.0


# -- printing and saving ---------------------------------------------------------------------------


def test_to_yaml_round_trips(user_yaml, tmp_path):
    cfg = Config(user_yaml(MINIMAL + "  init_lr: 2e-4\n"), ["run.train_splits=[train, val]"])
    printed = cfg.to_yaml()
    assert OmegaConf.create(yaml.safe_load(printed)) == cfg.config
    saved = cfg.save(tmp_path / "out" / "config.yaml")
    assert saved.read_text(encoding="utf-8") == printed
    # the composed file is itself a valid run config that composes to the same thing
    assert Config(str(saved)).config == cfg.config


def test_source_of_unknown_key_suggests(user_yaml):
    cfg = Config(user_yaml(MINIMAL))
    with pytest.raises(ConfigError, match="did you mean 'run.max_iters'"):
        cfg.source_of("run.max_iter")


# -- pipelines -------------------------------------------------------------------------------------


def test_pipeline_is_loaded_raw_with_stage_paths_resolved(tmp_path, fakes):
    write(tmp_path / "stages" / "s1.yaml", MINIMAL)
    write(tmp_path / "stages" / "s2.yaml", MINIMAL)
    path = write(
        tmp_path / "pipe.yaml",
        """
        pipeline:
          - {name: s1, cfg: stages/s1.yaml}
          - {name: s2, cfg: stages/s2.yaml, options: [run.max_iters=5]}
        """,
    )
    pipe = Config.load_pipeline(path)
    assert isinstance(pipe, DictConfig)
    assert [stage.name for stage in pipe.pipeline.stages] == ["s1", "s2"]
    assert pipe.pipeline.stages[0].cfg == str(tmp_path / "stages" / "s1.yaml")
    assert list(pipe.pipeline.stages[1].options) == ["run.max_iters=5"]
    assert Config.is_pipeline_file(path) and not Config.is_pipeline_file(tmp_path / "stages" / "s1.yaml")

    cfg = Config(str(path))
    assert cfg.is_pipeline and cfg.config == pipe
    with pytest.raises(ConfigError, match="pipeline config"):
        _ = cfg.model_cfg


def test_pipeline_mapping_form_resolves_eval_and_rejects_unknown_keys(tmp_path, fakes):
    write(tmp_path / "s1.yaml", MINIMAL)
    write(tmp_path / "ev" / "e.yaml", MINIMAL)
    path = write(
        tmp_path / "pipe.yaml",
        """
        pipeline:
          name: demo
          output_dir: out/demo
          stages:
            - {name: s1, cfg: s1.yaml}
          eval: {cfg: ev/e.yaml}
        """,
    )
    pipe = Config.load_pipeline(path).pipeline
    assert pipe.name == "demo" and pipe.eval.cfg == str(tmp_path / "ev" / "e.yaml")
    bad = write(tmp_path / "bad.yaml", "pipeline:\n  stagez: []\n")
    with pytest.raises(ConfigError, match="pipeline.stagez.*did you mean 'stages'"):
        Config.load_pipeline(bad)


@pytest.mark.parametrize(
    "stages, fragments",
    [
        ("- {name: s1}", ["pipeline[0]", "lacks 'cfg'"]),
        ("- {cfg: s.yaml}", ["pipeline[0]", "lacks 'name'"]),
        ("- {name: s1, cfg: s.yaml}\n  - {name: s1, cfg: s.yaml}", ["pipeline[1].name", "duplicate stage name 's1'"]),
        ("- {name: s1, cfg: gone.yaml}", ["pipeline[0].cfg", "'gone.yaml'", "does not exist"]),
        ("[]", ["non-empty list"]),
    ],
)
def test_pipeline_errors_name_the_stage(tmp_path, stages, fragments):
    write(tmp_path / "s.yaml", MINIMAL)
    path = write(tmp_path / "pipe.yaml", f"pipeline:\n  {stages}\n")
    with pytest.raises(ConfigError) as info:
        Config.load_pipeline(path)
    message = str(info.value)
    assert "pipe.yaml" in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_unknown_key_at_the_wrong_depth_suggests_where_it_lives(user_yaml):
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\n  alpha: 8.0\n"))
    assert "unknown key 'model.alpha'" in message and "did you mean 'model.lora.alpha'" in message


def test_mapping_options_merge_into_a_block_and_are_checked(user_yaml):
    cfg = Config(user_yaml(MINIMAL), ["model.lora={r: 2}"])
    assert cfg.model_cfg.lora.r == 2 and cfg.model_cfg.lora.alpha == 16.0
    assert cfg.source_of("model.lora.r") == "--options"
    assert cfg.source_of("model.lora.alpha") == FakeModel.PRETRAINED_MODEL_CONFIG_DICT["tiny"]
    message = config_error(user_yaml(MINIMAL), ["model.lora={rr: 2}"])
    assert message.startswith("--options: unknown key 'model.lora.rr' — did you mean 'model.lora.r'?")


def test_dates_and_yaml_1_1_oddities_stay_strings(user_yaml):
    cfg = Config(user_yaml(MINIMAL.replace("stage_name: s1", "stage_name: 2024-01-01")))
    assert cfg.run_cfg.stage_name == "2024-01-01" and cfg.run_cfg.output_dir == "output/2024-01-01"


def test_a_preset_without_a_model_block_names_the_preset_file(user_yaml, tmp_path, monkeypatch):
    broken = write(tmp_path / "presets" / "broken.yaml", "modle:\n  image_size: 32\n")
    monkeypatch.setitem(FakeModel.PRETRAINED_MODEL_CONFIG_DICT, "broken", str(broken))
    message = config_error(user_yaml(f"model:\n  arch: {MODEL}\n  model_type: broken\n"))
    assert f"defaults file {broken} has no 'model:' mapping" in message


# -- a processor block naming another processor ---------------------------------------------------

STAGE1 = Path(__file__).resolve().parents[2] / "train_configs" / "tinygptv_stage1.yaml"


def test_an_option_naming_another_processor_replaces_the_default_block():
    # image_train's min_scale/max_scale would be refused by image_eval: the block is image_eval's own
    cfg = Config(STAGE1, ["datasets.laion.vis_processor.train.name=image_eval"])
    block = OmegaConf.to_container(cfg.datasets_cfg.laion.vis_processor.train)
    assert block == {"name": "image_eval", "image_size": 224, "mean": None, "std": None}
    assert cfg.source_of("datasets.laion.vis_processor.train.name") == "--options"
    processor = registry.get_class("processor", "image_eval").from_config(block)
    assert processor.image_size == 224
    # the other dataset and the eval block keep their defaults
    assert cfg.datasets_cfg.cc_sbu.vis_processor.train.name == "image_train"
    assert cfg.datasets_cfg.cc_sbu.vis_processor.train.min_scale == 0.5


def test_a_yaml_block_naming_another_processor_replaces_the_default_block(tmp_path):
    path = tmp_path / "plain_resize.yaml"
    path.write_text(STAGE1.read_text().replace(
        "  cc_sbu:\n", "  cc_sbu:\n    vis_processor: {train: {name: image_eval, image_size: 224}}\n"))
    block = Config(path).datasets_cfg.cc_sbu.vis_processor.train
    assert block.name == "image_eval" and "min_scale" not in block and block.image_size == 224


def test_a_key_the_new_processor_does_not_take_is_an_unknown_key():
    message = config_error(str(STAGE1), ["datasets.laion.vis_processor.train.name=image_eval",
                                         "datasets.laion.vis_processor.train.min_scale=0.5"])
    assert "'datasets.laion.vis_processor.train.min_scale' is not a key of the composed config" in message


def test_blip_caption_text_is_two_options_of_caption_text():
    cfg = Config(STAGE1, ["datasets.laion.text_processor.train.lowercase=true",
                          "datasets.laion.text_processor.train.drop_punctuation=true"])
    block = cfg.datasets_cfg.laion.text_processor.train
    proc = registry.get_class("processor", block.name).from_config(block)
    assert proc('A Dog (Brown): "Running"!') == "a dog brown running"
    assert cfg.datasets_cfg.cc_sbu.text_processor.train.drop_punctuation is False
