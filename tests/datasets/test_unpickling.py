"""The one restricted unpickler (``minigpt.common.io.load_pickle``) behind every pickle the library reads.

A refs pickle whose unpickling would run code is refused, naming the file and the global, by all three
readers of RefCOCO's ``refs(unc).p`` -- the training reader, ``python -m minigpt.datasets check`` and the
evaluation reader -- and nothing it names runs. A Python 2 pickle of plain data (byte strings decoded as
latin1) loads.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from minigpt.common.io import DatasetError, UnsafePickleError, load_pickle
from minigpt.datasets import catalog
from minigpt.datasets.synthetic import generate_synthetic_dataset
from minigpt.evaluation.benchmarks import get_benchmark
from minigpt.evaluation.benchmarks.base import BenchmarkDataError


class _WritesMarker:
    """Unpickling this opens (creates) the marker file: what a hostile refs file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunsShell:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _py2_pickle(obj: Any) -> bytes:
    """``obj`` (dicts, lists, ints, str) as Python 2's ``pickle.dump(obj, f, 2)`` writes it: str as byte strings."""
    out = io.BytesIO()

    def put(x: Any) -> None:
        if isinstance(x, dict):
            out.write(b"}(")
            for k, v in x.items():
                put(k)
                put(v)
            out.write(b"u")
        elif isinstance(x, list):
            out.write(b"](")
            for v in x:
                put(v)
            out.write(b"e")
        elif isinstance(x, bool) or not isinstance(x, (int, str)):
            raise TypeError(f"not supported here: {x!r}")
        elif isinstance(x, int):
            out.write(b"J" + struct.pack("<i", x))
        else:
            data = x.encode("latin1")  # a Python 2 str: bytes, here latin1 text
            out.write((b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data)

    out.write(b"\x80\x02")
    put(obj)
    out.write(b".")
    return out.getvalue()


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    generate_synthetic_dataset(tmp_path / "synthetic", n_train=4, n_test=4, seed=0, shard_size=4, progress=False)
    return tmp_path


def _refs_path(root: Path) -> Path:
    return root / "synthetic" / "refcoco" / "refs(unc).p"


def _read_refs(root: Path) -> list:
    with open(_refs_path(root), "rb") as fh:
        return pickle.load(fh)  # the generator's own file: trusted


@pytest.mark.parametrize("payload", [_WritesMarker, _RunsShell])
def test_a_refs_pickle_that_would_run_code_is_refused_by_every_reader(synthetic_root, tmp_path, payload, capsys):
    marker = tmp_path / "marker"
    refs = _read_refs(synthetic_root)
    refs[0]["sentences"][0]["sent"] = payload(marker)  # deep inside otherwise plain refs
    path = _refs_path(synthetic_root)
    path.write_bytes(pickle.dumps(refs, protocol=2))
    global_name = "io.open" if payload is _WritesMarker else f"{os.name}.system"

    # 1. the training reader
    with pytest.raises(UnsafePickleError, match=rf"{re.escape(str(path))}.*{global_name}"):
        load_pickle(str(path), "synthetic_refcoco")
    # 2. the dataset catalogue's check
    code = catalog.main(["--data-root", str(synthetic_root), "check", "synthetic_refcoco", "--split", "test",
                         "--no-progress"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 1 and str(path) in err and global_name in err
    # 3. the evaluation reader
    bench = get_benchmark("synthetic_refcoco")
    with pytest.raises(BenchmarkDataError, match=global_name) as info:
        bench.read(bench.resolve_paths(str(synthetic_root)), "val")
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_a_python2_refs_pickle_with_latin1_text_loads_everywhere(synthetic_root):
    refs = _read_refs(synthetic_root)
    for ref in refs:
        for sent in ref["sentences"]:
            sent["sent"] = sent["raw"] = "the café circle"  # "é" is one latin1 byte in a Python 2 str
    path = _refs_path(synthetic_root)
    data = _py2_pickle(refs)
    assert b"caf\xe9" in data and b"X" not in data[:3]  # byte strings, not unicode opcodes
    path.write_bytes(data)

    assert load_pickle(str(path), "synthetic_refcoco") == refs
    code = catalog.main(["--data-root", str(synthetic_root), "check", "synthetic_refcoco", "--split", "test",
                         "--no-progress"], out=io.StringIO())
    assert code == 0
    bench = get_benchmark("synthetic_refcoco")
    records = bench.read(bench.resolve_paths(str(synthetic_root)), "val")
    assert records and all(r.prompt.endswith("the café circle") for r in records)


def test_plain_containers_and_scalars_load_and_a_broken_file_is_named(tmp_path):
    plain = [{"a": (1, 2.5, None, True), "b": {1, 2}, "c": frozenset({3}), "d": b"\x00\xff", "e": 2**70, "f": 1j}]
    path = tmp_path / "plain.p"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path.write_bytes(pickle.dumps(plain, protocol=protocol))
        assert load_pickle(str(path), "x") == plain
    path.write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(DatasetError, match=r"cannot unpickle annotation file .*plain\.p"):
        load_pickle(str(path), "x")
