"""The shared ``from_config`` logic of all processors."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from minigpt.common.registry import registry


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """A plain dict from ``None``, a mapping or an omegaconf ``DictConfig`` (resolved)."""
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # omegaconf is a dependency, but plain dicts must work without it
        DictConfig = ()  # noqa: N806
    if DictConfig and isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"a processor config must be a mapping or None, got {type(cfg).__name__}: {cfg!r}")


class BaseProcessor:
    """Base of the registered processors: a callable built from a YAML block.

    Subclasses list the keys their YAML block may hold in ``CONFIG_KEYS`` (name -> default);
    ``from_config`` rejects any other key, naming it, so a typo never silently falls back to a
    default.
    """

    CONFIG_KEYS: Dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: Optional[Any] = None) -> "BaseProcessor":
        options = config_to_dict(cfg)
        options.pop("name", None)  # the registry name that selected this class
        unknown = sorted(set(options) - set(cls.CONFIG_KEYS))
        if unknown:
            registered = registry.name_of(cls) or cls.__name__
            raise ValueError(
                f"processor {registered!r} got unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"allowed keys: name, {', '.join(cls.CONFIG_KEYS)}"
            )
        kwargs = {key: options.get(key, default) for key, default in cls.CONFIG_KEYS.items()}
        return cls(**kwargs)

    def __call__(self, item: Any) -> Any:
        raise NotImplementedError
