"""The dataset builder base: a ``datasets.<name>`` config block in, ``{split: Dataset}`` out.

A builder's default YAML (``DATASET_CONFIG_DICT``) is both its defaults and its schema: the
user's block is merged over it, and a key the YAML does not hold is rejected by name. Every path
in a block is relative to the run's data root (``run.data_root``). Every block also holds
``read_limits`` (file size and pixel caps, the image-root rule), whose defaults are in
``configs/datasets/read_limits.yaml`` for all datasets at once, and ``features_dir`` (read stored
features instead of pixels), whose default is in ``configs/datasets/media_features.yaml``.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from minigpt.common.config.sections import DATASET_COMMON_DEFAULTS
from minigpt.common.feature_store import FeatureStore
from minigpt.common.io import ReadLimits, default_read_limits_config, resolve_path
from minigpt.common.registry import registry
from minigpt.datasets.datasets.base_dataset import PACKAGE_DIR, Processor, load_prompts

MEDIA_FEATURES_YAML = os.path.join(PACKAGE_DIR, "configs", "datasets", "media_features.yaml")

# build_info keys whose value maps a split name to something. A user who gives one replaces the
# default mapping instead of merging into it, so listing only `train` does not keep the
# default `test` file alive.
SPLIT_MAPPINGS = ("annotations", "shards", "splits")


def _to_config(cfg: Any, what: str) -> DictConfig:
    if cfg is None:
        return OmegaConf.create({})
    if isinstance(cfg, DictConfig):
        # resolved now: a block cut from a run config may interpolate keys outside itself
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if isinstance(cfg, Mapping):
        return OmegaConf.create(dict(cfg))
    raise TypeError(f"{what} must be a mapping, got {type(cfg).__name__}: {cfg!r}")


def _reject_unknown(user: DictConfig, defaults: DictConfig, where: str) -> None:
    for key in user.keys():
        if key not in defaults and key != "type":  # `type` picks the default YAML itself
            close = difflib.get_close_matches(str(key), [str(k) for k in defaults.keys()], n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"{where}: unknown key {key!r}{hint} (known keys: {', '.join(map(str, defaults.keys()))})"
            )


class BaseDatasetBuilder:
    """Builds one dataset's splits from its config block; subclasses register under a dataset name.

    ``DATASET_CONFIG_DICT`` maps a config type to the default YAML (relative to the ``minigpt``
    package). ``build_datasets()`` returns ``{split: Dataset}`` for the splits the config lists;
    the ``train`` split gets ``vis_processor.train`` / ``text_processor.train``, every other
    split the ``eval`` processors. Subclasses implement ``splits()`` and ``build_split(split)``.
    """

    DATASET_CONFIG_DICT: Dict[str, str] = {}
    SPLITS_KEY = "annotations"  # the build_info mapping whose keys are the splits

    # -- defaults ---------------------------------------------------------------------------
    @classmethod
    def name(cls) -> str:
        return registry.name_of(cls) or cls.__name__

    @classmethod
    def default_config_path(cls, type: str = "default") -> str:  # `type`: LAVIS's argument name
        """The absolute path of the default YAML for config ``type``."""
        try:
            rel = cls.DATASET_CONFIG_DICT[type]
        except KeyError:
            raise KeyError(
                f"builder {cls.name()!r} has no config type {type!r}; types: {', '.join(cls.DATASET_CONFIG_DICT)}"
            ) from None
        return os.path.join(PACKAGE_DIR, rel)

    @classmethod
    def default_config(cls, type: str = "default") -> DictConfig:
        """The ``datasets.<name>`` block of the default YAML."""
        path = cls.default_config_path(type)
        loaded = OmegaConf.load(path)
        blocks = loaded.get("datasets") if isinstance(loaded, DictConfig) else None
        if not blocks or len(blocks) != 1:
            raise ValueError(f"{path} must hold exactly one block under 'datasets:'")
        (block,) = blocks.values()
        # the shared read limits and features option under the dataset's own (a dataset YAML may set them),
        # and the keys every block accepts (the mixing weights), whether its YAML lists them or not
        common = {k: v for k, v in DATASET_COMMON_DEFAULTS.items() if k != "type"}
        return OmegaConf.merge(
            {"read_limits": default_read_limits_config(), **common}, OmegaConf.load(MEDIA_FEATURES_YAML), block
        )

    # -- construction -----------------------------------------------------------------------
    def __init__(self, cfg: Any = None, data_root: Optional[str] = None) -> None:
        self.config = self.merge_config(cfg)
        if data_root is None:
            data_root = registry.get_path("data_root")
        if data_root is None:
            raise ValueError(f"builder {self.name()!r} needs a data root (run.data_root)")
        self.data_root = str(data_root)

    @classmethod
    def merge_config(cls, cfg: Any) -> DictConfig:
        """The user's block merged over the defaults; unknown keys are an error naming them.

        ``type`` (which the config system adds to every dataset block) picks the default YAML.
        """
        where = f"datasets.{cls.name()}"
        user = _to_config(cfg, where)
        config_type = str(user.get("type") or "default")
        if "type" in user:
            user = OmegaConf.create({k: v for k, v in user.items() if k != "type"})
        defaults = cls.default_config(config_type)
        _reject_unknown(user, defaults, where)
        for nested in ("build_info", "read_limits"):
            if nested in user:
                _reject_unknown(user[nested], defaults[nested], f"{where}.{nested}")
        merged = OmegaConf.merge(defaults, user)
        merged.type = config_type
        for key in SPLIT_MAPPINGS:
            if "build_info" in user and key in user.build_info:
                merged.build_info[key] = user.build_info[key]
        for proc in ("vis_processor", "text_processor"):
            for split, block in (user.get(proc) or {}).items():
                default_block = defaults.get(proc, {}).get(split)
                if block is None or default_block is None:
                    continue
                # a different processor does not inherit the options of the default one
                if block.get("name") not in (None, default_block.get("name")):
                    merged[proc][split] = block
        return merged

    # -- pieces the subclasses use ------------------------------------------------------------
    @property
    def build_info(self) -> DictConfig:
        return self.config.build_info

    @property
    def read_images(self) -> bool:
        """False for ``data_type: text``: readers then neither open nor return images."""
        data_type = self.config.get("data_type", "images")
        if data_type not in ("images", "text"):
            raise ValueError(
                f"datasets.{self.name()}.data_type must be 'images' or 'text', got {data_type!r}"
            )
        return data_type == "images"

    @property
    def sample_ratio(self) -> float:
        return float(self.config.get("sample_ratio", 1))

    @property
    def read_limits(self) -> ReadLimits:
        """The block's ``read_limits``: what a reader may open (see ``configs/datasets/read_limits.yaml``)."""
        return ReadLimits.from_config(self.config.read_limits)

    def feature_store(self) -> Optional[FeatureStore]:
        """The stored features ``features_dir`` names (None when it is null)."""
        folder = self.config.get("features_dir")
        return FeatureStore(self.path(str(folder))) if folder else None

    def path(self, rel: str) -> str:
        """``rel`` resolved against the data root."""
        return resolve_path(self.data_root, rel)

    def images_root(self) -> str:
        return self.path(self.build_info.images)

    def prompts(self, slot: bool = False) -> List[str]:
        return load_prompts(self.config.get("prompt_file"), slot=slot)

    def build_processors(self, split: str) -> Tuple[Optional[Processor], Optional[Processor]]:
        """(vis, text) processors for ``split``: the ``train`` blocks for train, ``eval`` otherwise."""
        which = "train" if split == "train" else "eval"
        procs: List[Optional[Processor]] = []
        for kind in ("vis_processor", "text_processor"):
            block = (self.config.get(kind) or {}).get(which)
            if kind == "vis_processor" and not self.read_images:
                block = None
            if block is None:
                procs.append(None)
                continue
            if "name" not in block:
                raise KeyError(
                    f"datasets.{self.name()}.{kind}.{which} needs a 'name' (a registered processor)"
                )
            procs.append(registry.get_processor_class(block.name).from_config(block))
        return procs[0], procs[1]

    def annotation_dataset(self, dataset_cls: type, split: str, *sources: Any, **extra: Any) -> Dataset:
        """``dataset_cls`` over ``sources``, with the arguments every annotation reader takes.

        ``sources`` are the reader's arguments between the dataset name and the processors; by
        default this split's annotation files (``build_info.annotations.<split>``).
        """
        vis, text = self.build_processors(split)
        return dataset_cls(
            self.name(),
            *(sources or (self.split_paths("annotations", split),)),
            vis,
            text,
            self.images_root(),
            task_tag=self.config.get("task_tag"),
            read_images=self.read_images,
            **extra,
        )

    def split_paths(self, key: str, split: str) -> List[str]:
        """``build_info.<key>.<split>`` as a list of resolved paths."""
        value = self.build_info[key][split]
        values = [value] if isinstance(value, str) else list(value)
        return [self.path(v) for v in values]

    # -- the API ------------------------------------------------------------------------------
    def splits(self) -> List[str]:
        """The splits this config can build: the keys of ``build_info.<SPLITS_KEY>``."""
        return [str(s) for s in (self.build_info.get(self.SPLITS_KEY) or {}).keys()]

    def build_split(self, split: str) -> Dataset:
        raise NotImplementedError

    def build_datasets(self, splits: Optional[Iterable[str]] = None) -> Dict[str, Dataset]:
        """``{split: Dataset}`` for every split the config lists, or for those of ``splits`` it lists.

        Asking for a split a dataset does not have (``test`` of a train-only dataset) skips it, so
        a run can pass its ``train_splits + test_splits`` to every builder.
        """
        available = self.splits()
        wanted = available if splits is None else [s for s in available if s in set(splits)]
        datasets: Dict[str, Dataset] = {}
        for split in wanted:
            dataset = self.build_split(split)
            dataset.sample_ratio = self.sample_ratio
            dataset.split = split
            dataset.read_limits = self.read_limits
            store = self.feature_store()
            if store is not None:
                if not hasattr(dataset, "feature_store"):
                    raise ValueError(
                        f"datasets.{self.name()}.features_dir: {type(dataset).__name__} reads no image or video "
                        "files, so it cannot read stored features"
                    )
                dataset.feature_store = store
            datasets[split] = dataset
        return datasets

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name()!r}, data_root={self.data_root!r}, splits={self.splits()})"


def default_yaml(name: str) -> Dict[str, str]:
    """The ``DATASET_CONFIG_DICT`` of a builder registered as ``name``: ``configs/datasets/<name>/defaults.yaml``."""
    return {"default": f"configs/datasets/{name}/defaults.yaml"}


def declare_builder(module: str, class_name: str, base: type, name: str, summary: str, **attrs: Any) -> type:
    """A builder that is ``base`` with other class attributes, listed in the registry as ``name``; one line a dataset.

    Its docstring is ``summary`` plus the registered name, its default YAML :func:`default_yaml`,
    and ``attrs`` (``TASK``, ``FORMAT``, ``APPROX_SIZE``, ``dataset_cls``, ...) override ``base``'s.
    ``module`` and ``class_name`` are where the class is imported from (``__name__`` and the name it
    is assigned to), which the registry's built-in table names.
    """
    namespace = {
        "__module__": module,
        "__qualname__": class_name,
        "__doc__": f"{summary}, registered as ``{name}``.",
        "DATASET_CONFIG_DICT": default_yaml(name),
        "_registry_name": name,
        **attrs,
    }
    return type(class_name, (base,), namespace)
