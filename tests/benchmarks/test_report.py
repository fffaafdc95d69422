"""benchmarks/report.py: tables between markers, everything else in the document left as it was."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import report  # noqa: E402
from benchmarks.bench_common import machine_info, results, row, write_results  # noqa: E402

DOC = """# Benchmarks

Intro text that must survive.

## Demo

Another engineer's section, untouched.

<!-- BEGIN generated: alpha -->
stale table
<!-- END generated: alpha -->

Text after the block.
"""


def _write(tmp_path: Path, name: str, value: float, note: str = "n") -> Path:
    data = results(name, machine_info(), [row("speed", value, "tokens/s", note)], {"runs": [value]})
    return Path(write_results(data, str(tmp_path / "results" / f"{name}.json")))


def test_replaces_between_markers_and_appends_missing_ones(tmp_path):
    _write(tmp_path, "alpha", 12.5, note="a | pipe")
    _write(tmp_path, "beta", 3.0)
    doc, names = report.regenerate(DOC, str(tmp_path / "results"), root=str(tmp_path))
    assert names == ["alpha", "beta"]
    assert "stale table" not in doc
    before, _, rest = doc.partition(report.begin_marker("alpha"))
    assert before == DOC.partition(report.begin_marker("alpha"))[0]  # everything before is untouched
    alpha, _, after = rest.partition(report.end_marker("alpha"))
    assert after.startswith("\n\nText after the block.\n")
    assert "| speed | 12.5 | tokens/s | a \\| pipe |" in alpha  # a pipe in a cell does not break the table
    assert "results/alpha.json" in alpha
    cpu = machine_info()["cpu"]
    assert cpu in alpha  # the machine each figure came from
    assert doc.rstrip().endswith(report.end_marker("beta"))  # beta had no markers: appended
    assert doc.count(report.begin_marker("beta")) == 1


def test_regenerating_twice_changes_nothing(tmp_path):
    _write(tmp_path, "alpha", 1.0)
    once, _ = report.regenerate(DOC, str(tmp_path / "results"))
    twice, _ = report.regenerate(once, str(tmp_path / "results"))
    assert once == twice


def test_main_writes_the_doc_and_check_detects_staleness(tmp_path, capsys):
    _write(tmp_path, "alpha", 2.0)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    args = ["--results-dir", str(tmp_path / "results"), "--doc", str(doc)]
    assert report.main(args + ["--check"]) == 1
    assert doc.read_text() == DOC  # --check changes nothing
    assert report.main(args) == 0
    assert "| speed | 2 |" in doc.read_text()
    assert report.main(args + ["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_bad_inputs_are_errors_naming_the_culprit(tmp_path):
    bad = tmp_path / "results" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"benchmark": "broken", "machine": {}, "rows": []}))
    with pytest.raises(ValueError, match=r"broken\.json: missing key\(s\) \['date'\]"):
        report.regenerate(DOC, str(bad.parent))
    bad.write_text(json.dumps({"benchmark": "broken", "machine": {}, "date": "d", "rows": [{"metric": "x"}]}))
    with pytest.raises(ValueError, match=r"broken\.json: row 0 lacks \['value', 'unit', 'note'\]"):
        report.regenerate(DOC, str(bad.parent))
    twice = DOC + report.begin_marker("alpha") + "\n"
    with pytest.raises(ValueError, match="markers of 'alpha' must appear once each"):
        report.replace_block(twice, "alpha", "x")
    swapped = f"{report.end_marker('alpha')}\n{report.begin_marker('alpha')}\n"
    with pytest.raises(ValueError, match="END marker of 'alpha' comes before"):
        report.replace_block(swapped, "alpha", "x")


def test_the_shipped_results_files_render(tmp_path):
    # every file in benchmarks/results/ follows the schema and regenerates the real document
    real_doc = Path(report.DEFAULT_DOC).read_text()
    doc, names = report.regenerate(real_doc, report.DEFAULT_RESULTS)
    for name in names:
        assert doc.count(report.begin_marker(name)) == 1
