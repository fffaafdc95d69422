"""The typed run schema (minigpt/common/config/run_schema.py): every key of default_run.yaml has an entry,
and a value outside a key's choices or range is refused when the config is composed, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import pytest
import yaml

from minigpt.common.config import DEFAULT_RUN_PATH, Config, ConfigError, load_yaml
from minigpt.common.config.errors import walk
from minigpt.common.config.run_schema import choices_of, range_of, schema_fields

STAGE = str(Path(__file__).resolve().parents[2] / "train_configs" / "quickstart_stage1.yaml")
SCHEMA = dict(schema_fields())


def compose_error(*options: str) -> str:
    with pytest.raises(ConfigError) as info:
        Config(STAGE, list(options))
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_every_key_of_default_run_yaml_has_a_schema_entry_and_no_other():
    yaml_keys = {key for key, _ in walk(load_yaml(DEFAULT_RUN_PATH)["run"], "run") if key != "run"}
    assert yaml_keys - set(SCHEMA) == set(), "keys of default_run.yaml without an entry in RunSchema"
    assert set(SCHEMA) - yaml_keys == set(), "RunSchema entries that default_run.yaml does not list"


def test_the_defaults_and_the_shipped_stage_satisfy_the_schema():
    Config(STAGE)  # every default value (and the quickstart's own) passes its check


def _bad_values(hint: Any) -> List[Any]:
    """Values just outside a key's choices or range."""
    bad: List[Any] = []
    if choices_of(hint):
        bad.append("not_a_choice")
    rng = range_of(hint)
    if rng is not None:
        step = 1 if "int" in str(hint) else 0.5
        for op, bound in rng.bounds():
            bad.append({">=": bound - step, ">": bound, "<=": bound + step, "<": bound}[op])
    return bad


LIMITED: List[Tuple[str, Any]] = [(key, value) for key, hint in SCHEMA.items() for value in _bad_values(hint)]


def test_the_table_covers_every_choice_and_range_key():
    limited = {key for key, hint in SCHEMA.items() if choices_of(hint) or range_of(hint)}
    assert {key for key, _ in LIMITED} == limited
    assert len(limited) >= 35  # the table is not silently empty


@pytest.mark.parametrize("key, value", LIMITED, ids=[f"{k}={v}" for k, v in LIMITED])
def test_a_value_outside_choices_or_range_is_refused_naming_the_key(key, value):
    message = compose_error(f"{key}={value}")
    assert f"{key} = " in message and "(from --options)" in message and "must be" in message, message


@pytest.mark.parametrize(
    "option, fragments",
    [
        ("run.distributed=fdsp", ["run.distributed = 'fdsp' (from --options)", "ddp, fsdp", "did you mean 'fsdp'"]),
        ("run.device=gpu", ["run.device = 'gpu' (from --options)", "one of auto, cpu, cuda"]),
        ("run.keep_last=three", ["--options: run.keep_last must be a number (an int >= 1) or null", "'three'"]),
        ("run.best_mode=maximum", ["run.best_mode = 'maximum'", "one of max, min", "did you mean 'max'"]),
        ("run.num_threads=two", ["--options: run.num_threads must be a number", "str 'two'"]),
        ("run.grad_clip=-1.0", ["run.grad_clip = -1.0 (from --options)", "must be >= 0"]),
        ("run.min_lr=-1e-3", ["run.min_lr = -0.001 (from --options)", "must be >= 0"]),
        ("run.log_freq=0", ["run.log_freq = 0 (from --options)", "must be >= 1"]),
        ("run.batch_size_train=0", ["run.batch_size_train = 0 (from --options)", "must be >= 1"]),
        ("run.batch_size_train=-4", ["run.batch_size_train = -4 (from --options)", "must be >= 1"]),
        ("run.num_workers=-3", ["run.num_workers = -3 (from --options)", "must be >= 0"]),
        ("run.max_skip_rate=1.5", ["run.max_skip_rate = 1.5 (from --options)", ">= 0 and <= 1"]),
        ("run.keep_last=0", ["run.keep_last = 0 (from --options)", "must be >= 1"]),
        ("run.projector_lr_scale=-1", ["run.projector_lr_scale = -1.0 (from --options)", "must be > 0"]),
        ("run.decay_rate=50", ["run.decay_rate = 50.0 (from --options)", "> 0 and <= 1"]),
        ("run.max_consecutive_nonfinite=0", ["run.max_consecutive_nonfinite = 0 (from --options)", ">= 1"]),
        ("run.vision_feature_cache.dtype=half", ["run.vision_feature_cache.dtype = 'half'", "null, float32"]),
        ("run.train_splits=[train, 3]", ["run.train_splits[1] must be a str", "int 3"]),
        ("run.seed=null", ["--options: run.seed must be a number (an int), got null"]),
    ],
)
def test_bad_run_values_name_key_value_and_source(option, fragments):
    message = compose_error(option)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_bad_value_in_the_yaml_names_the_file(tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text(open(STAGE, encoding="utf-8").read().replace("run:\n", "run:\n  distributed: fdsp\n", 1))
    with pytest.raises(ConfigError, match=rf"run\.distributed = 'fdsp' \(from {path}\)"):
        Config(str(path))


@pytest.mark.parametrize(
    "option",
    ["run.grad_clip=0", "run.grad_clip=null", "run.keep_last=null", "run.max_consecutive_nonfinite=null",
     "run.decay_rate=1.0", "run.max_skip_rate=1.0", "run.max_skip_rate=null", "run.num_threads=2",
     "run.vision_feature_cache.dtype=bfloat16", "run.device=cuda", "run.distributed=fsdp", "run.save_freq=0"],
)
def test_the_documented_edge_values_are_accepted(option):
    Config(STAGE, [option])


@pytest.mark.parametrize(
    "option, fragment",
    [("run.distributed=fdsp", "did you mean 'fsdp'"), ("run.keep_last=0", "run.keep_last = 0")],
)
def test_print_config_refuses_a_bad_value_before_any_work(run_cli, option, fragment):
    proc = run_cli(["train.py", "--cfg-path", STAGE, "--print-config", "--options", option], timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert fragment in proc.stderr and option.partition("=")[0] in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def _stage_without_init_lr(tmp_path) -> str:
    cfg = load_yaml(STAGE)
    del cfg["run"]["init_lr"]
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_blr_rule_derives_the_lr_and_refuses_inconsistent_keys(tmp_path):
    stage = _stage_without_init_lr(tmp_path)
    cfg = Config(stage, ["run.lr_rule=blr_per_256", "run.blr=9.0e-3", "run.min_lr=0"])
    assert cfg.run_cfg.lr_rule == "blr_per_256" and cfg.run_cfg.blr == 9e-3
    with pytest.raises(ConfigError, match=r"run.lr_rule = 'blr_per_256'.*run.blr, which is not set"):
        Config(stage, ["run.lr_rule=blr_per_256"])
    with pytest.raises(ConfigError, match=r"run.blr = 0.009 \(from --options\) is set but run.lr_rule = 'absolute'"):
        Config(stage, ["run.blr=9.0e-3"])
    # min_lr above the smallest lr the rule can give (one process)
    with pytest.raises(ConfigError, match=r"run.min_lr = 0.5 .* must be <= the peak lr"):
        Config(stage, ["run.lr_rule=blr_per_256", "run.blr=9.0e-3", "run.min_lr=0.5"])
    # init_lr set by hand while the rule derives it: both keys named
    message = compose_error("run.lr_rule=blr_per_256", "run.blr=9.0e-3", "run.min_lr=0")
    assert "run.init_lr = 0.001 (from" in message and "run.blr = 0.009 (from --options)" in message
    with pytest.raises(ConfigError, match="must be one of absolute, blr_per_256"):
        Config(stage, ["run.lr_rule=blr_per256"])
