"""The typed schema of the ``run:`` section: every key's type, choices and range, written once.

``minigpt/configs/default_run.yaml`` holds the defaults (and says what each key does); this module
holds what a value may be. :class:`RunSchema` is a dataclass table: each field is a key of
``run:``, annotated with its type — ``Literal`` for choices, ``Optional`` where null is allowed
(and what null means is said in the YAML), ``Annotated[..., Range(...)]`` for a numeric range and
``Annotated[str, Registered(kind)]`` for a registered component's name. :func:`check_run` checks a
composed ``run:`` block against it when the config is composed, so ``train.py --print-config``
refuses a bad value before any work; each message names the dotted key, the value and the file (or
``--options``) that set it, and a misspelt choice gets the close matches.

Ranges come from how the runners use each key: a value the code would silently treat as "off"
(``keep_last: 0``, ``max_consecutive_nonfinite: 0``) or that turns a quantity around (a negative
``grad_clip`` or learning rate, a ``decay_rate`` above 1) is refused; "off" has one spelling, null,
except where 0 is documented as "off" (``save_freq``, ``sample_every``, ``eval_every``, and
``grad_clip``, whose 0 the runner has always read as "no clipping").
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Dict, Iterator, List, Literal, Optional, Tuple, Union

from minigpt.common.config.errors import ConfigError, did_you_mean, is_number, join, shown, type_name
from minigpt.common.precision import PRECISIONS as DTYPES_OF_PRECISIONS


@dataclass(frozen=True)
class Range:
    """Bounds on a number (each optional); ``why`` says what the number is, for the message."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    why: str = ""

    def bounds(self) -> List[Tuple[str, float]]:
        """``[(operator, bound), ...]`` in the order they read: lower bounds first."""
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return [(op, bound) for op, bound in pairs if bound is not None]

    def holds(self, value: float) -> bool:
        tests = {">=": value.__ge__, ">": value.__gt__, "<=": value.__le__, "<": value.__lt__}
        return all(tests[op](bound) for op, bound in self.bounds())

    def describe(self) -> str:
        """``>= 1``, ``> 0 and <= 1`` …"""
        return " and ".join(f"{op} {bound:g}" for op, bound in self.bounds())


@dataclass(frozen=True)
class Registered:
    """The value names a component registered under ``kind`` (``registry.list(kind)``)."""

    kind: str


# Choices that other modules import: each is defined here once.
Precision = Literal[tuple(DTYPES_OF_PRECISIONS)]  # the names minigpt.common.precision defines
CacheStorage = Literal["memory", "disk"]
CacheDtype = Literal["float32", "float16", "bfloat16"]
PRECISIONS: Tuple[str, ...] = tuple(DTYPES_OF_PRECISIONS)
VISION_CACHE_STORAGES: Tuple[str, ...] = typing.get_args(CacheStorage)
VISION_CACHE_DTYPES: Tuple[Optional[str], ...] = (None, *typing.get_args(CacheDtype))

PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]  # where 0 means "off" or "none"
LearningRate = Annotated[float, Range(ge=0)]


@dataclass(frozen=True)
class VisionFeatureCacheSchema:
    """``run.vision_feature_cache`` (minigpt/runners/vision_cache.py)."""

    enabled: bool
    storage: CacheStorage
    dir: Optional[str]
    dtype: Optional[CacheDtype]
    shard_size: Annotated[int, Range(ge=1, why="features per disk shard")]


@dataclass(frozen=True)
class RunSchema:
    """Every key of ``run:`` (``minigpt/configs/default_run.yaml``) with its type; not a registered component."""

    task: Annotated[str, Registered("task")]
    runner: Annotated[str, Registered("runner")]
    stage_name: str

    lr_sched: Annotated[str, Registered("lr_scheduler")]
    init_lr: Annotated[float, Range(gt=0, why="the peak learning rate")]
    lr_rule: Literal["absolute", "blr_per_256"]
    blr: Optional[Annotated[float, Range(gt=0, why="the base learning rate per 256 samples")]]
    min_lr: LearningRate
    warmup_lr: LearningRate
    warmup_steps: Count
    # null: one warm-up; N: the warm-up starts again every N steps (must exceed warmup_steps, a rule)
    warmup_restart_every: Optional[Annotated[int, Range(ge=1, why="steps between warm-up restarts")]]
    # linear_warmup_step_lr multiplies the lr by this every lr_step_every steps: above 1 it grows
    decay_rate: Annotated[float, Range(gt=0, le=1, why="the lr's multiplier every lr_step_every steps")]
    lr_step_every: Annotated[int, Range(ge=1, why="optimizer steps between decays")]
    # 0 would silently stop a "trainable" projector; freeze it in the model section instead
    projector_lr_scale: Annotated[float, Range(gt=0, why="the projector's lr = init_lr * this")]
    weight_decay: Annotated[float, Range(ge=0)]
    beta1: Annotated[float, Range(ge=0, lt=1, why="AdamW's first-moment decay")]
    beta2: Annotated[float, Range(ge=0, lt=1, why="AdamW's second-moment decay")]
    # a negative max norm would flip the gradient; 0 (like null) has always meant no clipping
    grad_clip: Optional[Annotated[float, Range(ge=0, why="max global grad norm; 0 or null: no clipping")]]
    max_iters: Annotated[int, Range(gt=0, why="optimizer steps to run")]
    max_epoch: Annotated[int, Range(ge=1, why="passes over the training data")]
    iters_per_epoch: Optional[PositiveInt]
    batch_size_train: Annotated[int, Range(ge=1, why="samples per process per micro-batch")]
    batch_size_eval: PositiveInt
    accum_grad_iters: Annotated[int, Range(ge=1, why="micro-batches per optimizer step")]
    # 0 would be read as "never stop"; that is spelt null
    max_consecutive_nonfinite: Optional[Annotated[int, Range(ge=1, why="skipped steps in a row that stop the run")]]

    data_root: str
    num_workers: Annotated[int, Range(ge=0, why="dataloader worker processes")]
    train_splits: List[str]
    test_splits: List[str]
    max_eval_samples: Optional[PositiveInt]  # 0 would be read as "all"; that is spelt null
    max_skip_rate: Optional[Annotated[float, Range(ge=0, le=1, why="a share of a dataset's reads")]]
    skip_rate_min_reads: PositiveInt
    group_by_length: bool
    batch_mixing: Literal["one_dataset", "every_dataset"]
    length_group_batches: Annotated[int, Range(ge=1, why="batches sorted by length together")]
    vision_feature_cache: Optional[VisionFeatureCacheSchema]

    device: Literal["auto", "cpu", "cuda"]
    precision: Precision
    grad_checkpointing: bool
    distributed: Literal["ddp", "fsdp"]
    deterministic: bool
    dist_backend: Literal["auto", "gloo", "nccl"]
    seed: int
    num_threads: Optional[PositiveInt]  # 0 would be read as torch's default; that is spelt null

    output_dir: str
    save_freq: Count
    log_freq: Annotated[int, Range(ge=1, why="steps between metrics rows")]
    progress: bool
    progress_label: Optional[str]
    keep_last: Optional[Annotated[int, Range(ge=1, why="checkpoints kept; null keeps all")]]
    tensorboard: bool
    wandb_project: Optional[str]
    sample_every: Count
    sample_count: PositiveInt
    resume_ckpt_path: Optional[str]
    resume_allow_changes: bool
    overwrite_output: bool

    evaluate_only: bool
    eval_every: Count
    best_metric: Optional[str]
    best_mode: Literal["max", "min"]
    eval_max_new_tokens: PositiveInt
    eval_num_beams: PositiveInt
    eval_token_accuracy: bool
    image_last_tasks: List[str]


# -- reading the annotations ------------------------------------------------------------------------


def _hints(schema: type) -> Dict[str, Any]:
    return typing.get_type_hints(schema, include_extras=True)


def _unwrap(hint: Any) -> Tuple[Any, bool, List[Any]]:
    """``(bare type, null allowed, Annotated metadata)`` of an annotation."""
    optional, meta = False, []
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            meta.extend(hint.__metadata__)
            hint = typing.get_args(hint)[0]
        elif origin is Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(hint))
            hint = args[0] if len(args) == 1 else Union[tuple(args)]
        else:
            return hint, optional, meta


def schema_fields(schema: type = RunSchema, prefix: str = "run") -> Iterator[Tuple[str, Any]]:
    """``(dotted key, annotation)`` for every key of the schema, nested blocks and their keys included."""
    for name, hint in _hints(schema).items():
        dotted = join(prefix, name)
        yield dotted, hint
        bare, _, _ = _unwrap(hint)
        if dataclasses.is_dataclass(bare):
            yield from schema_fields(bare, dotted)


def choices_of(hint: Any) -> Tuple[Any, ...]:
    """The allowed values of a ``Literal`` key (``None`` first when null is allowed), else ``()``."""
    bare, optional, _ = _unwrap(hint)
    if typing.get_origin(bare) is not Literal:
        return ()
    return ((None,) if optional else ()) + typing.get_args(bare)


def range_of(hint: Any) -> Optional[Range]:
    """The :class:`Range` of a numeric key, if it has one."""
    return next((m for m in _unwrap(hint)[2] if isinstance(m, Range)), None)


def registered_keys(schema: type = RunSchema, prefix: str = "run") -> List[Tuple[str, str]]:
    """``(dotted key, registry kind)`` for each key that names a registered component."""
    out = []
    for dotted, hint in schema_fields(schema, prefix):
        out.extend((dotted, m.kind) for m in _unwrap(hint)[2] if isinstance(m, Registered))
    return out


def _describe(hint: Any) -> str:
    bare, optional, meta = _unwrap(hint)
    rng = next((m for m in meta if isinstance(m, Range)), None)
    if typing.get_origin(bare) is Literal:
        text = "one of " + ", ".join(str(c) for c in typing.get_args(bare))
    elif typing.get_origin(bare) in (list, List):
        text = f"a list of {_describe(typing.get_args(bare)[0])}"
    elif dataclasses.is_dataclass(bare):
        text = "a mapping"
    elif bare is bool:
        text = "a bool (true/false)"
    elif bare in (int, float):
        text = f"a number (an {bare.__name__}{' ' + rng.describe() if rng else ''})"
    else:
        text = f"a {getattr(bare, '__name__', bare)}"
    return text + (" or null" if optional else "")


# -- checking a value ---------------------------------------------------------------------------------


def _is_type(value: Any, bare: Any) -> bool:
    if bare is bool:
        return isinstance(value, bool)
    if bare is int:
        return is_number(value) and isinstance(value, int)
    if bare is float:
        return is_number(value)
    if bare is str:
        return isinstance(value, str)
    return True


def _check(value: Any, hint: Any, dotted: str, source_of: Callable[[str], str]) -> None:
    bare, optional, meta = _unwrap(hint)
    if value is None and optional:
        return
    origin = typing.get_origin(bare)

    def wrong_type() -> ConfigError:
        return ConfigError(
            f"{source_of(dotted)}: {dotted} must be {_describe(hint)}, got {type_name(value)}"
            + ("" if value is None else f" {value!r}")
        )

    if origin is Literal:
        allowed = typing.get_args(bare)
        if value not in allowed:
            listed = ", ".join(("null",) * optional + tuple(str(c) for c in allowed))
            hint_text = did_you_mean(value, [str(c) for c in allowed]) if isinstance(value, str) else ""
            raise ConfigError(f"{shown(dotted, value, source_of(dotted))} must be one of {listed}{hint_text}")
        return
    if dataclasses.is_dataclass(bare):
        if not isinstance(value, dict):
            raise wrong_type()
        for name, sub_hint in _hints(bare).items():
            if name in value:
                _check(value[name], sub_hint, join(dotted, name), source_of)
        return
    if origin in (list, List):
        if not isinstance(value, list):
            raise wrong_type()
        for index, item in enumerate(value):
            if not _is_type(item, typing.get_args(bare)[0]):
                raise ConfigError(
                    f"{source_of(dotted)}: {dotted}[{index}] must be {_describe(typing.get_args(bare)[0])}, "
                    f"got {type_name(item)} {item!r}"
                )
        return
    if value is None or not _is_type(value, bare):
        raise wrong_type()
    for rng in (m for m in meta if isinstance(m, Range)):
        if not rng.holds(value):
            why = f" ({rng.why})" if rng.why else ""
            raise ConfigError(f"{shown(dotted, value, source_of(dotted))} must be {rng.describe()}{why}")


def check_run(run: Dict[str, Any], source_of: Callable[[str], str]) -> None:
    """Check a composed, resolved ``run:`` block (plain containers) against :class:`RunSchema`.

    Keys that name registered components are checked for being strings here and for naming a
    registered component by :mod:`minigpt.common.config.rules`.
    """
    for name, hint in _hints(RunSchema).items():
        if name in run:
            _check(run[name], hint, f"run.{name}", source_of)
