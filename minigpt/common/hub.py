"""Hugging Face Hub ids wherever a config names pretrained weights, resolved to local paths.

Every ``pretrained`` key (``llm.pretrained``, ``llm.tokenizer``, ``vision_encoder.pretrained``,
``projector.pretrained``) takes a local path or a Hub id:

* ``org/name`` (or ``hf://org/name``): the repository's files, for a part that reads a directory
  (a transformers LLM, a tokenizer, a CLIP tower);
* ``org/name/sub/dir`` for a directory inside a repository, ``org/name/file.pth`` for one weight
  file (EVA ViT-g, BLIP-2's Q-Former);
* ``...@revision`` pins a branch, tag or commit (default ``main``).

A path that exists on disk always wins, so a local folder that happens to look like an id is
read as a folder. Files come from the local Hugging Face cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read when the path is resolved, not when
this module is imported); with ``HF_HUB_OFFLINE=1`` only the cache is read, otherwise missing
files are downloaded into it. Anything neither on disk nor obtainable is a ``FileNotFoundError``
naming the config key, the value and the cache that was searched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

HUB_SCHEME = "hf://"
_TRUE = ("1", "on", "yes", "true")
# org/name[/path/in/repo][@revision]; names as the Hub allows them
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<sub>(/[^@\s]+)*)(@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class HubRef:
    """A parsed Hub reference: repository, optional path inside it, optional revision."""

    repo_id: str
    subpath: str = ""
    revision: Optional[str] = None


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read now, so a test or a shell may set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir() -> str:
    """The Hugging Face cache directory the environment names now (see the module docs)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def parse_hub_id(value: str) -> Optional[HubRef]:
    """``value`` as a :class:`HubRef`, or None when it cannot be a Hub id (absolute path, other scheme)."""
    text = str(value)
    if text.startswith(HUB_SCHEME):
        text = text[len(HUB_SCHEME) :]
    elif "://" in text or text.startswith(("/", "~", ".")) or "\\" in text:
        return None
    m = _HUB_ID.match(text)
    if m is None:
        return None
    return HubRef(m.group("repo"), (m.group("sub") or "").strip("/"), m.group("rev"))


def _not_found(key: str, value: str, why: str) -> FileNotFoundError:
    mode = "HF_HUB_OFFLINE is set, so only the cache was searched" if hub_offline() else "download failed"
    return FileNotFoundError(
        f"{key}: {value!r} is not a local path, and as a Hugging Face Hub id it is not available "
        f"({mode}; cache {hub_cache_dir()}): {why}"
    )


def resolve_pretrained(
    value: Optional[str], key: str, kind: str = "dir", required: bool = True
) -> Optional[str]:
    """The local path ``value`` stands for: itself when it exists on disk, else the Hub files it names.

    ``kind`` is ``"dir"`` (a folder of a repository) or ``"file"`` (one file in it). A value that is
    neither an existing path nor a Hub id comes back unchanged, for the caller's own "not found"
    error; a Hub id that cannot be had raises ``FileNotFoundError`` naming ``key``, or with
    ``required=False`` (a meta build, which needs shapes only) comes back unchanged.
    """
    if value is None or value == "":
        return value
    value = str(value)
    if "://" in value and not value.startswith(HUB_SCHEME):
        return value  # another remote store (iopath), read by its own handler
    if not value.startswith(HUB_SCHEME) and os.path.exists(os.path.expanduser(value)):
        return os.path.expanduser(value)
    ref = parse_hub_id(value)
    if ref is None:
        return value
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    if kind == "file" and not ref.subpath:
        raise FileNotFoundError(
            f"{key}: {value!r} names a repository, but a weight file is needed here: "
            "write org/name/<file in the repository>"
        )
    from huggingface_hub import hf_hub_download, snapshot_download

    common = dict(
        revision=ref.revision, cache_dir=hub_cache_dir(), local_files_only=hub_offline() or not required
    )
    try:
        if kind == "file":
            return hf_hub_download(ref.repo_id, ref.subpath, **common)
        root = snapshot_download(ref.repo_id, **common)
    except Exception as exc:  # cache misses, HTTP, network and validation errors differ by backend
        if not required:
            return value
        raise _not_found(key, value, f"{type(exc).__name__}: {exc}") from exc
    path = os.path.join(root, ref.subpath) if ref.subpath else root
    if not os.path.isdir(path):
        raise _not_found(key, value, f"the snapshot {root} has no folder {ref.subpath!r}")
    return path
