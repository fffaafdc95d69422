"""The rules a composed config must satisfy beyond its keys' types: registry names and cross-key rules.

They run on the resolved config, after composition, so every message can show each value with the
file it came from (``run.min_lr = 0.5 (from --options)``).
"""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig

from minigpt.common.config.errors import ConfigError, did_you_mean, is_number, type_name
from minigpt.common.registry import RegistryError, registry

PRECISIONS = ("fp32", "bf16", "fp16")

# run.vision_feature_cache choices (minigpt/runners/vision_cache.py) and the image processors it refuses
VISION_CACHE_STORAGES = ("memory", "disk")
VISION_CACHE_DTYPES = (None, "float32", "float16", "bfloat16")
RANDOM_IMAGE_PROCESSORS = ("image_train",)

# run key -> registry kind; the named component must exist before we start any work.
_RUN_REGISTRY_KEYS = (("task", "task"), ("runner", "runner"), ("lr_sched", "lr_scheduler"))


class RuleChecker:
    """Checks one composed config; ``source_of`` maps a dotted key to the file that set it."""

    def __init__(self, cfg_path: str, source_of: Callable[[str], str]) -> None:
        self.cfg_path = cfg_path
        self._source_of = source_of

    def check_registry_names(self, config: DictConfig) -> None:
        """``run.task``, ``run.runner`` and ``run.lr_sched`` name registered components."""
        run = config.run
        for key, kind in _RUN_REGISTRY_KEYS:
            dotted = f"run.{key}"
            name = run.get(key)
            src = self._source_of(dotted) if key in run else self.cfg_path
            if not isinstance(name, str):
                raise ConfigError(
                    f"{src}: {dotted} must name a registered {kind} ({', '.join(registry.list(kind))}), "
                    f"got {type_name(name)} {name!r}"
                )
            if name in registry.list(kind):
                continue
            try:
                registry.get_class(kind, name)
            except RegistryError as exc:
                raise ConfigError(f"{src}: {dotted}: {exc}") from exc

    def _number(self, block: DictConfig, prefix: str, key: str) -> float:
        value = block.get(key)
        if not is_number(value):
            src = self._source_of(f"{prefix}.{key}") if key in block else self.cfg_path
            raise ConfigError(f"{src}: {prefix}.{key} must be a number, got {type_name(value)} {value!r}")
        return value

    def _shown(self, dotted: str, value: Any) -> str:
        return f"{dotted} = {value!r} (from {self._source_of(dotted)})"

    def check_rules(self, config: DictConfig) -> None:
        """The rules that relate keys to each other or bound their values."""
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
                f"{did_you_mean(str(precision), PRECISIONS)}"
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
        self.check_vision_cache(config)

    def check_vision_cache(self, config: DictConfig) -> None:
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
