"""The dataset catalogue: every registered builder, what it reads, and whether its files are on disk.

Command line (``python -m minigpt.datasets``)::

    python -m minigpt.datasets list [--data-root DIR] [-v]
    python -m minigpt.datasets check NAME [--split train] [--n 3] [--data-root DIR]

``list`` prints each builder's ``TASK``, ``FORMAT`` and ``APPROX_SIZE`` class attributes and the
first line of its docstring (``?`` where a builder lacks one), and whether the files its default
config names exist under the data root. ``check`` builds one split, counts its samples, reads
every image (every sample of a stream) and names each unreadable file, then prints a few samples
as text. The data root defaults to ``run.data_root``'s default: ``$MINIGPT_DATA_ROOT``, else ``data``.

Which paths a builder needs is read from its ``build_info``: the per-split ``annotations`` and
``shards``, ``images``/``videos`` folders, ``*_dir``/``*_root`` folders and ``*_file`` files (next
to ``annotation_dir`` when there is one). A builder whose layout this misses can define
``catalog_paths(self) -> list[str]`` (absolute paths or shard patterns) instead.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, TextIO, Tuple

import torch
from torch.utils.data import IterableDataset

from minigpt.common.registry import registry

UNKNOWN = "?"
DEFAULT_RUN_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default_run.yaml")


def default_data_root() -> str:
    """``run.data_root``'s default, resolved (``$MINIGPT_DATA_ROOT`` when set, else ``data``)."""
    from omegaconf import OmegaConf

    return str(OmegaConf.load(DEFAULT_RUN_YAML).run.data_root)


# -- which files a builder needs --------------------------------------------------------------------
def _as_list(value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def builder_paths(builder: Any) -> List[Tuple[str, str]]:
    """``(kind, path)`` of every file or folder ``builder``'s config names; kind is file, dir or shards."""
    custom = getattr(builder, "catalog_paths", None)
    if callable(custom):
        return [("shards" if glob.has_magic(p) or "{" in p else "file", str(p)) for p in custom()]
    info = builder.config.get("build_info") or {}
    reads_images = getattr(builder, "read_images", True)
    out: List[Tuple[str, str]] = []
    for key, value in info.items():
        key = str(key)
        if key in ("annotations", "shards"):
            kind = "file" if key == "annotations" else "shards"
            for split_value in (value or {}).values():
                out.extend((kind, builder.path(p)) for p in _as_list(split_value))
        elif key in ("images", "videos") or key.endswith(("_dir", "_root")):
            if key == "images" and not reads_images:
                continue  # a data_type: text dataset reads no image
            if isinstance(value, str):
                out.append(("dir", builder.path(value)))
        elif key.endswith("_file") and isinstance(value, str):
            base = info.get("annotation_dir")
            out.append(("file", builder.path(os.path.join(str(base), value) if base else value)))
    return out


def _expand(kind: str, path: str) -> List[Tuple[str, bool]]:
    """(what, exists) for each thing ``path`` stands for; a glob counts as one that exists if it matches."""
    if kind != "shards":
        ok = os.path.isdir(path) if kind == "dir" else os.path.exists(path)
        return [(path, ok)]
    import braceexpand

    out = []
    for name in braceexpand.braceexpand(path):
        if "://" in name:
            out.append((name, True))  # remote: not listed here
        elif glob.has_magic(name):
            out.append((name, bool(glob.glob(name))))
        else:
            out.append((name, os.path.exists(name)))
    return out


@dataclass
class Presence:
    found: int
    total: int
    missing: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.total == 0:
            return UNKNOWN
        if self.found == self.total:
            return "yes"
        if self.found == 0:
            return "no"
        return f"partial ({self.found}/{self.total})"


def presence(builder: Any) -> Presence:
    found, total, missing = 0, 0, []
    for kind, path in builder_paths(builder):
        for what, ok in _expand(kind, path):
            total += 1
            if ok:
                found += 1
            else:
                missing.append(what)
    return Presence(found, total, missing)


# -- the list --------------------------------------------------------------------------------------
@dataclass
class CatalogEntry:
    """One registered dataset builder as the catalogue shows it."""

    name: str
    task: str
    format: str
    approx_size: str
    description: str
    present: str
    missing: List[str] = field(default_factory=list)
    error: Optional[str] = None


def _first_doc_line(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    lines = [line.strip() for line in doc.strip().splitlines()]
    return lines[0] if lines and lines[0] else UNKNOWN


def catalog(data_root: Optional[str] = None, names: Optional[Sequence[str]] = None) -> List[CatalogEntry]:
    """A :class:`CatalogEntry` for every registered builder (or for ``names``), checked against ``data_root``."""
    root = str(data_root or default_data_root())
    entries = []
    for name in names or registry.list_datasets():
        try:
            cls = registry.get_builder_class(name)
        except Exception as exc:  # a builder module that fails to import is shown, not fatal to the list
            entries.append(CatalogEntry(name, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, error=str(exc)))
            continue
        entry = CatalogEntry(
            name=name,
            task=str(getattr(cls, "TASK", None) or UNKNOWN),
            format=str(getattr(cls, "FORMAT", None) or UNKNOWN),
            approx_size=str(getattr(cls, "APPROX_SIZE", None) or UNKNOWN),
            description=_first_doc_line(cls),
            present=UNKNOWN,
        )
        try:
            found = presence(cls(None, data_root=root))
            entry.present, entry.missing = str(found), found.missing
        except Exception as exc:  # a default config that does not build: say so in the row
            entry.error = f"{type(exc).__name__}: {exc}"
        entries.append(entry)
    return entries


def format_catalog(entries: Sequence[CatalogEntry], data_root: str, verbose: bool = False) -> str:
    """A table of NAME, TASK, PRESENT, APPROX_SIZE; each row followed by its description and format."""
    header = ("NAME", "TASK", "PRESENT", "APPROX_SIZE")
    rows = [(e.name, e.task, e.present, e.approx_size) for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [f"data root: {data_root}", ""]

    def row_text(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1]

    lines.append(row_text(header))
    for entry, row in zip(entries, rows):
        lines.append(row_text(row))
        lines.append(f"    {entry.description}")
        lines.append(f"    format: {entry.format}")
        if entry.error:
            lines.append(f"    error: {entry.error}")
        elif verbose and entry.missing:
            shown = entry.missing[:5] + ([f"... and {len(entry.missing) - 5} more"] if len(entry.missing) > 5 else [])
            lines.append("    missing: " + ", ".join(shown))
    present = sum(e.present == "yes" for e in entries)
    lines += ["", f"{len(entries)} datasets, {present} present under {data_root}"]
    return "\n".join(lines)


# -- check -----------------------------------------------------------------------------------------
@dataclass
class CheckReport:
    """What ``check`` found in one split: sample count, unreadable files, malformed records, samples shown."""

    name: str
    split: str
    samples: int = 0
    checked: int = 0  # files (or, where a reader's image paths are not known, samples) read
    readable: int = 0
    unreadable: List[str] = field(default_factory=list)
    malformed: List[str] = field(default_factory=list)
    rendered: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.malformed


def _render_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {str(value.dtype).replace('torch.', '')} {list(value.shape)}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return "\n" + "\n".join(f"      [{i}] {v}" for i, v in enumerate(value))
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 300 else text[:300] + " ..."


def render_sample(sample: Dict[str, Any]) -> str:
    """A schema sample as indented text: image as dtype and shape, conversations turn by turn."""
    lines = [f"  {sample.get('sample_id', '?')}"]
    for key, value in sample.items():
        if key == "sample_id" or key.startswith("_"):
            continue
        lines.append(f"    {key}: {_render_value(value)}")
    return "\n".join(lines)


def _image_paths(ds: Any) -> Optional[List[Tuple[str, str]]]:
    """(annotated path, sample id) of each distinct image of a map-style reader, or None when it cannot tell."""
    from minigpt.common.io import resolve_path

    records = getattr(ds, "records", None)
    root = getattr(ds, "images_root", None)
    if not records or root is None or not getattr(ds, "read_images", False):
        return None
    seen: Set[str] = set()  # resolved paths already listed
    pairs: List[Tuple[str, str]] = []
    for i, record in enumerate(records):
        rel = record.get("image") if isinstance(record, dict) else None
        if rel is None:
            continue  # a text-only sample (LLaVA entries without an image)
        if not isinstance(rel, str):
            return None
        if resolve_path(root, rel) not in seen:
            seen.add(resolve_path(root, rel))
            pairs.append((rel, ds.sample_id(record.get("key", i)) if hasattr(ds, "sample_id") else str(i)))
    return pairs


def check_dataset(
    name: str, data_root: Optional[str] = None, split: str = "train", n: int = 3, progress: bool = True
) -> CheckReport:
    """Build ``split`` of dataset ``name`` from its default config and read all of it (see the module notes).

    Raises what building raises (:class:`MissingDataError` for absent files) and ``KeyError`` for
    a split the dataset does not have.
    """
    from tqdm import tqdm

    from minigpt.common.io import DatasetError, open_image, resolve_path

    root = str(data_root or default_data_root())
    builder = registry.get_builder_class(name)(None, data_root=root)
    if split not in builder.splits():
        raise KeyError(f"dataset {name!r} has no split {split!r}; its splits: {', '.join(builder.splits())}")
    ds = builder.build_datasets([split])[split]
    report = CheckReport(name, split)
    report.malformed = [str(m.get("error")) for m in getattr(ds, "malformed_records", [])]

    if isinstance(ds, IterableDataset):
        stream = ds.with_skipping(name) if hasattr(ds, "with_skipping") else ds
        stream = copy.copy(stream)
        stream.repeat = False  # one pass, in order
        stream.skip_log = []
        for sample in tqdm(stream, desc=f"reading {name}/{split}", unit=" samples", disable=not progress):
            report.samples += 1
            report.checked += 1
            report.readable += 1
            if len(report.rendered) < n:
                report.rendered.append(render_sample(sample))
        report.unreadable = [r["error"] for r in stream.skip_log]
        report.checked += len(report.unreadable)
        return report

    report.samples = len(ds)
    images = _image_paths(ds)
    if images is not None:
        for rel, sample_id in tqdm(images, desc=f"reading {name}/{split} images", disable=not progress):
            report.checked += 1
            try:  # a BaseDataset applies its own rules: its image root and read limits
                if hasattr(ds, "image_path"):
                    ds.open_image(ds.image_path(rel, sample_id), sample_id)
                else:
                    open_image(resolve_path(ds.images_root, rel), name, sample_id)
                report.readable += 1
            except DatasetError as exc:
                report.unreadable.append(str(exc))
    else:
        for i in tqdm(range(len(ds)), desc=f"reading {name}/{split}", disable=not progress):
            report.checked += 1
            try:
                ds[i]
                report.readable += 1
            except DatasetError as exc:
                report.unreadable.append(str(exc))
    for i in range(len(ds)):
        if len(report.rendered) >= n:
            break
        try:
            report.rendered.append(render_sample(ds[i]))
        except DatasetError:
            continue  # already reported above
    return report


def format_check(report: CheckReport) -> str:
    lines = [f"{report.name}/{report.split}: {report.samples} samples; {report.readable} of {report.checked} reads ok"]
    if report.malformed:
        lines.append(f"malformed annotation records: {len(report.malformed)} (left out of the samples)")
        lines.extend(f"  {m}" for m in report.malformed)
    if report.unreadable:
        lines.append(f"unreadable: {len(report.unreadable)}")
        lines.extend(f"  {u}" for u in report.unreadable)
    else:
        lines.append("unreadable: none")
    if report.rendered:
        lines.append(f"first {len(report.rendered)} sample(s):")
        lines.extend(report.rendered)
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minigpt.datasets", description="List the registered datasets, or check a local copy of one."
    )
    p.add_argument(
        "--data-root", default=None, help="folder the dataset paths hang off (default: $MINIGPT_DATA_ROOT, else ./data)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="every registered dataset: task, format, size, description, present or not")
    ls.add_argument("--data-root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ls.add_argument("-v", "--verbose", action="store_true", help="also list the missing paths")
    ck = sub.add_parser("check", help="validate a local copy: count samples, read every image, show samples")
    ck.add_argument("name", help="a registered dataset name (see `list`)")
    ck.add_argument("--data-root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ck.add_argument("--split", default="train", help="split to check (default train)")
    ck.add_argument("--n", type=int, default=3, help="samples to print (default 3)")
    ck.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[List[str]] = None, out: Optional[TextIO] = None) -> int:
    """Run the catalogue CLI; returns the exit status (check: 1 when something is unreadable or missing)."""
    from minigpt.common.io import DatasetError

    out = out if out is not None else sys.stdout  # read now: a default bound at import outlives a redirect

    args = _parser().parse_args(argv)
    root = str(args.data_root or default_data_root())
    if args.command == "list":
        print(format_catalog(catalog(root), root, verbose=args.verbose), file=out)
        return 0
    try:
        report = check_dataset(args.name, root, split=args.split, n=args.n, progress=not args.no_progress)
    except (DatasetError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(format_check(report), file=out)
    return 0 if report.ok else 1
