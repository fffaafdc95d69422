"""The rules a composed config must satisfy beyond each key's own type and range.

Each key's type, choices and range are the run schema's (:mod:`.run_schema`); what is here relates
keys to each other or to the registry: ``run.task``/``runner``/``lr_sched`` name registered
components, the lr schedule's own rules (``min_lr <= init_lr`` where it decays, defined by the
schedule), every dataset's ``sample_ratio > 0``, its ``samples_per_epoch`` size (when given) and ``batch_size`` (null or a positive int), and the feature cache's
needs from the model and the datasets, and every dataset's image processors resizing to the vision encoder's
``image_size``. They run on the resolved config, after composition, so every
message can show each value with the file it came from (``run.min_lr = 0.5 (from --options)``).
"""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from minigpt.common.config.errors import ConfigError, is_number, shown, type_name
from minigpt.common.config.run_schema import check_run, registered_keys
from minigpt.common.config.sections import DEFAULT_RUN_PATH
from minigpt.common.mixing import epoch_sizes
from minigpt.common.optims import BLR_BATCH, peak_lr
from minigpt.common.registry import RegistryError, registry

# image processors whose output differs each epoch, which run.vision_feature_cache refuses
RANDOM_IMAGE_PROCESSORS = ("image_train",)
# runners that work out run.iters_per_epoch from the datasets when it is null
RUNNERS_DERIVING_ITERS_PER_EPOCH = ("runner_epoch",)


class RuleChecker:
    """Checks one composed config; ``source_of`` maps a dotted key to the file that set it."""

    def __init__(self, cfg_path: str, source_of: Callable[[str], str]) -> None:
        self.cfg_path = cfg_path
        self._source_of = source_of

    def check_registry_names(self, config: DictConfig) -> None:
        """``run.task``, ``run.runner`` and ``run.lr_sched`` name registered components."""
        run = config.run
        for dotted, kind in registered_keys():
            key = dotted.partition(".")[2]
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
        return shown(dotted, value, self._source_of(dotted))

    def check_run_schema(self, config: DictConfig) -> None:
        """Every ``run:`` key against its type, choices and range (:class:`.run_schema.RunSchema`)."""
        check_run(OmegaConf.to_container(config.run, resolve=True), self._source_of)

    def check_rules(self, config: DictConfig) -> None:
        """The rules that relate keys to each other (run after :meth:`check_run_schema`)."""
        self.check_lr_rule(config.run)
        self.check_lr_schedule(config.run)
        for name, block in config.datasets.items():
            ratio = self._number(block, f"datasets.{name}", "sample_ratio")
            if ratio <= 0:
                raise ConfigError(
                    f"{self._shown(f'datasets.{name}.sample_ratio', ratio)} must be > 0 "
                    "(it weighs how often the mixer draws from this dataset)"
                )
            if block.get("samples_per_epoch") is not None:
                try:  # the form of the size and "one weight, not two"; all-or-nothing is the runner's (it knows which train)
                    epoch_sizes({name: block})
                except ValueError as exc:
                    raise ConfigError(f"{self._source_of(f'datasets.{name}.samples_per_epoch')}: {exc}") from exc
            size = block.get("batch_size")
            if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
                raise ConfigError(
                    f"{self._shown(f'datasets.{name}.batch_size', size)} must be a positive int: the training "
                    "samples per process in one of this dataset's micro-batches (null: run.batch_size_train)"
                )
        self.check_image_sizes(config)
        self.check_vision_cache(config)

    def check_lr_rule(self, run: DictConfig) -> None:
        """``run.lr_rule: blr_per_256`` needs ``run.blr`` and derives ``init_lr``; ``absolute`` takes no ``blr``."""
        rule = self._shown("run.lr_rule", run.lr_rule)
        if run.lr_rule == "absolute":
            if run.blr is not None:
                raise ConfigError(
                    f"{self._shown('run.blr', run.blr)} is set but {rule} ignores it: set run.lr_rule=blr_per_256 "
                    "to derive the lr from it, or remove run.blr"
                )
            return
        if run.blr is None:
            raise ConfigError(f"{rule} derives the lr from run.blr, which is not set: set run.blr (e.g. 9.0e-3)")
        if self._source_of("run.init_lr") != str(DEFAULT_RUN_PATH):
            raise ConfigError(
                f"{self._shown('run.init_lr', run.init_lr)} and {self._shown('run.blr', run.blr)} are both set but "
                f"{rule} derives init_lr from blr: remove run.init_lr, or set run.lr_rule=absolute and remove run.blr"
            )

    def check_lr_schedule(self, run: DictConfig) -> None:
        """The run's values the chosen lr schedule cannot work with (its ``problems()``, e.g. ``min_lr <= init_lr``).

        A runner that derives ``iters_per_epoch`` itself (``runner_epoch``) supplies it to the schedule.
        """
        sched = registry.get_lr_scheduler_class(str(run.lr_sched))
        problems = getattr(sched, "problems", None)
        if problems is None:  # a plugin schedule with rules of its own
            return
        values = OmegaConf.to_container(run, resolve=True)
        derived = values.get("lr_rule") == "blr_per_256"
        if derived:  # init_lr is derived at start; the least it can be is the rule's lr on one process
            values["init_lr"], _ = peak_lr(values, world_size=1)

        def show(key: str) -> str:
            if derived and key == "init_lr":
                return (f"the peak lr {values['init_lr']:.3g} that run.lr_rule = blr_per_256 gives on one process "
                        f"(run.blr x batch_size_train x accum_grad_iters / {BLR_BATCH})")
            return self._shown(f"run.{key}", values.get(key))

        for problem in problems(values):
            if problem.keys == ("iters_per_epoch",) and run.runner in RUNNERS_DERIVING_ITERS_PER_EPOCH:
                continue
            raise ConfigError(problem.text(show) + f" ({self._shown('run.lr_sched', run.lr_sched)})")

    def check_image_sizes(self, config: DictConfig) -> None:
        """Each dataset's image processors the run uses resize to ``model.vision_encoder.image_size``.

        ``train`` processors for the ``train`` split, ``eval`` ones for any other split of
        ``run.train_splits`` and ``run.test_splits`` (the builders' choice).

        A mismatch would otherwise surface at the first step, deep in the encoder's patch embedding
        (timm: "Input height ... doesn't match model"), after the data and the model were loaded.
        """
        venc = config.model.get("vision_encoder") or {}
        size = venc.get("image_size") if hasattr(venc, "get") else None
        if size is None:
            return
        model_key = "model.vision_encoder.image_size"
        splits = [*(config.run.get("train_splits") or []), *(config.run.get("test_splits") or [])]
        used = sorted({"train" if split == "train" else "eval" for split in splits})  # as the builders pick them
        for name, dblock in config.datasets.items():
            if dblock.get("data_type", "images") == "text":
                continue
            for which in used:
                got = (((dblock.get("vis_processor") or {}).get(which)) or {}).get("image_size")
                if got is None or got == size:
                    continue
                dotted = f"datasets.{name}.vis_processor.{which}.image_size"
                raise ConfigError(
                    f"dataset {name!r} resizes images to {got} px but the vision encoder takes {size} px: "
                    f"{self._shown(dotted, got)}, {self._shown(model_key, size)}; set "
                    f"datasets.{name}.vis_processor.{which}.image_size={size} (or ${{{model_key}}})"
                )

    def check_vision_cache(self, config: DictConfig) -> None:
        """``run.vision_feature_cache`` on needs a frozen vision encoder and deterministic image processors."""
        block = config.run.get("vision_feature_cache")
        if not block or not block.get("enabled"):
            return
        prefix = "run.vision_feature_cache"
        on = self._shown(f"{prefix}.enabled", True)
        venc = config.model.get("vision_encoder") or {}
        if not venc.get("freeze", False):
            setting = self._shown("model.vision_encoder.freeze", venc.get("freeze")) if "freeze" in venc else (
                "model.vision_encoder.freeze is not set")
            raise ConfigError(
                f"{on} needs a frozen vision encoder, but {setting}: the features of an encoder that trains change "
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
