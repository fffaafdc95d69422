"""Reading weight files written by the original projects, and reporting how their keys fit a part.

The parts that load third-party releases (EVA-CLIP's ViT-g, BLIP-2's Q-Former) share three
steps: read a ``.pth``/``.bin``/``.safetensors`` file safely (``torch.load(weights_only=True)``),
rename its keys through the part's explicit mapping, and load the result while telling the user
which keys were missing, which were unexpected, and which were known and deliberately left out.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]

# Top-level keys under which training scripts nest the weights (LAVIS and MiniGPT-4 use "model").
_WRAPPER_KEYS = ("model", "state_dict", "module")


def _local_path(path: str) -> str:
    if "://" in path:  # a remote store registered with iopath
        from iopath.common.file_io import PathManager

        return PathManager().get_local_path(path)
    return os.path.expanduser(path)


def read_state_dict(path: str, part: str) -> StateDict:
    """The tensors stored in the weight file at ``path``, unwrapped from a ``{"model": ...}`` dict.

    ``part`` names the component in error messages. A missing file raises ``FileNotFoundError``
    and an unreadable one ``RuntimeError``, both naming the path.
    """
    path = str(path)
    local = _local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{part}: weight file not found: {path}")
    try:
        if local.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(local)
        else:
            obj = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors differ; all mean "not a weight file"
        hint = "expected a PyTorch state dict (.pth/.bin) or a .safetensors file"
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            hint = (
                "it pickles Python objects besides tensors, which torch.load(weights_only=True) refuses; "
                "re-save just the state dict (torch.save(sd, path)) from a trusted copy"
            )
        raise RuntimeError(
            f"{part}: cannot read weight file {path} ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    for _ in range(2):  # e.g. {"model": {...}} or {"state_dict": {"module": {...}}}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, Mapping):
        raise RuntimeError(f"{part}: {path} holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise RuntimeError(f"{part}: {path} holds no tensors (top-level keys: {sorted(obj)[:10]})")
    return tensors


@dataclass
class KeyMapping:
    """An explicit rename table from an original checkpoint's key names to a part's own names.

    ``rules`` are ``(pattern, replacement)`` pairs tried in order with ``re.fullmatch``; a
    replacement may be a template (``r"blocks.\\1.attn"``) or a function of the match that
    returns ``None`` to mean "known, deliberately not loaded". ``ignore`` patterns name keys
    that are expected in the file but have no place in the part (text heads, a dropped block).
    """

    rules: Sequence[Tuple[str, object]]
    ignore: Sequence[str] = ()
    _compiled: List[Tuple[re.Pattern, object]] = field(init=False, repr=False)
    _ignored: List[re.Pattern] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled = [(re.compile(p), r) for p, r in self.rules]
        self._ignored = [re.compile(p) for p in self.ignore]

    def map_key(self, key: str) -> Tuple[Optional[str], bool]:
        """``(new_name, known)``: the part's name for ``key`` (None: not loaded) and whether it is known."""
        for pattern, repl in self._compiled:
            m = pattern.fullmatch(key)
            if m is None:
                continue
            new = repl(m) if callable(repl) else m.expand(repl)
            return new, True
        if any(p.fullmatch(key) for p in self._ignored):
            return None, True
        return None, False

    def convert(self, state: Mapping[str, torch.Tensor]) -> "ConvertedState":
        out = ConvertedState()
        for key, value in state.items():
            new, known = self.map_key(key)
            if new is not None:
                if new in out.tensors:
                    raise ValueError(f"checkpoint keys {out.sources[new]!r} and {key!r} both map to {new!r}")
                out.tensors[new] = value
                out.sources[new] = key
            elif known:
                out.ignored.append(key)
            else:
                out.unexpected.append(key)
        return out


@dataclass
class ConvertedState:
    """A checkpoint after renaming: tensors under the part's names, plus the keys left out."""

    tensors: StateDict = field(default_factory=dict)
    sources: Dict[str, str] = field(default_factory=dict)  # part name -> original key
    ignored: List[str] = field(default_factory=list)  # known and deliberately unused: not warned
    unexpected: List[str] = field(default_factory=list)  # unknown to the mapping: warned


@dataclass
class LoadReport:
    """What loading a weight file into a part did. ``missing``/``unexpected`` are also logged as warnings."""

    path: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def _preview(keys: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_converted(
    module: nn.Module,
    converted: ConvertedState,
    path: str,
    part: str,
    expected_missing: Callable[[str], bool] = lambda name: False,
) -> LoadReport:
    """Copy ``converted.tensors`` into ``module`` and log a report of missing and unexpected keys.

    A tensor whose shape differs from the module's is an error naming both keys and shapes:
    loading it partially would give silently wrong features. ``expected_missing(name)`` marks
    module entries the file is not meant to provide (e.g. layers trained later), which are not warned.
    """
    own = module.state_dict()
    for name, tensor in converted.tensors.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{part}: {path}: key {converted.sources.get(name, name)!r} has shape {tuple(tensor.shape)} "
                f"but {name!r} in this model has shape {tuple(own[name].shape)}; check the part's shape keys"
            )
    unexpected = list(converted.unexpected) + [
        converted.sources.get(n, n) for n in converted.tensors if n not in own
    ]
    result = module.load_state_dict({n: t for n, t in converted.tensors.items() if n in own}, strict=False)
    missing = [k for k in result.missing_keys if not expected_missing(k)]
    report = LoadReport(
        path=path,
        loaded=sorted(n for n in converted.tensors if n in own),
        missing=missing,
        unexpected=unexpected,
        ignored=list(converted.ignored),
    )
    if missing:
        logger.warning(
            "%s: %s lacks %d weights of this model: %s", part, path, len(missing), _preview(missing)
        )
    if unexpected:
        logger.warning(
            "%s: %s has %d keys this model does not use: %s",
            part,
            path,
            len(unexpected),
            _preview(unexpected),
        )
    logger.info(
        "%s: loaded %d tensors from %s (%d known keys left out on purpose)",
        part,
        len(report.loaded),
        path,
        len(report.ignored),
    )
    return report


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> Tuple[StateDict, List[str]]:
    """If the keys of ``state`` sit under one of ``prefixes`` (a bigger model's file), keep that subtree.

    Returns the subtree with the prefix removed and the keys outside it (for the report). A state
    whose keys use none of the prefixes is returned unchanged.
    """
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            outside = [k for k in state if not k.startswith(prefix)]
            return inside, outside
    return dict(state), []
