"""The dataset catalogue CLI: `list` (metadata, presence under the data root) and `check` (a local copy)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from minigpt.common.registry import registry
from minigpt.datasets import catalog
from minigpt.datasets.builders.caption_builders import COCOCaptionBuilder
from minigpt.datasets.synthetic import generate_synthetic_dataset


def _run(*argv: str):
    out = io.StringIO()
    code = catalog.main(list(argv), out=out)
    return code, out.getvalue()


def _row(text: str, name: str) -> list:
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, f"no single row for {name} in:\n{text}"
    return rows[0]


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    generate_synthetic_dataset(tmp_path / "synthetic", n_train=12, n_test=4, seed=0, shard_size=4, progress=False)
    return tmp_path


def test_list_shows_generated_synthetic_data_as_present(tmp_path):
    code, before = _run("--data-root", str(tmp_path), "list")
    assert code == 0 and f"data root: {tmp_path}" in before
    assert _row(before, "synthetic_coco_caption")[2] == "no"

    generate_synthetic_dataset(tmp_path / "synthetic", n_train=8, n_test=2, seed=0, shard_size=4, progress=False)
    code, after = _run("--data-root", str(tmp_path), "list")
    for name in ("synthetic_coco_caption", "synthetic_caption_wds", "synthetic_refcoco", "synthetic_llava"):
        assert _row(after, name)[2] == "yes", name
    assert _row(after, "coco_caption")[2] == "no" and _row(after, "cc_sbu")[2] == "no"
    # every registered dataset is listed, with its task and the first line of its docstring
    for name in registry.list_datasets():
        _row(after, name)
    assert _row(after, "synthetic_coco_caption")[1] == "caption"
    assert "Synthetic captions in the COCO Karpathy JSON" in after


def test_list_counts_partly_present_shards_and_names_what_is_missing(tmp_path):
    generate_synthetic_dataset(tmp_path / "cc_sbu_src", n_train=8, n_test=2, seed=0, shard_size=4, progress=False)
    (tmp_path / "cc_sbu").mkdir()
    for i in range(2):
        (tmp_path / "cc_sbu_src" / "cc_sbu" / f"train-{i:05d}.tar").rename(tmp_path / "cc_sbu" / f"train-{i:05d}.tar")
    code, text = _run("--data-root", str(tmp_path), "list", "-v")
    assert "partial (2/1256)" in text  # cc_sbu's default brace range is train-{00000..01255}.tar
    assert str(tmp_path / "cc_sbu" / "train-00002.tar") in text


def test_missing_metadata_shows_a_question_mark(tmp_path):
    @registry.register_builder("catalog_test_bare")
    class Bare(COCOCaptionBuilder):
        pass

    try:
        (entry,) = catalog.catalog(str(tmp_path), names=["catalog_test_bare"])
    finally:
        registry.unregister("builder", "catalog_test_bare")
    assert entry.description == "?"  # no docstring of its own
    assert entry.present == "no"
    assert entry.task == getattr(COCOCaptionBuilder, "TASK", "?")

    (entry,) = catalog.catalog(str(tmp_path), names=["no_such_dataset"])
    assert entry.task == entry.format == entry.approx_size == entry.present == "?"
    assert "no_such_dataset" in entry.error


def test_check_reports_a_corrupt_image_by_path(synthetic_root, capsys):
    bad = synthetic_root / "synthetic" / "images" / "train" / "000004.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    code, text = _run("--data-root", str(synthetic_root), "check", "synthetic_coco_caption", "--n", "2", "--no-progress")
    assert code == 1
    assert "synthetic_coco_caption/train: 12 samples; 11 of 12 reads ok" in text
    assert "unreadable: 1" in text and str(bad) in text
    # two samples rendered as text: instruction with the task tag, answer, image shape
    assert text.count("instruction_input: <Img><ImageHere></Img> [caption]") == 2
    assert "image: tensor float32 [3, 64, 64]" in text

    bad.unlink()
    code, text = _run("--data-root", str(synthetic_root), "check", "synthetic_coco_caption", "--no-progress")
    assert code == 1 and "image file not found" in text and str(bad) in text


def test_check_reads_every_sample_of_a_shard_stream(synthetic_root):
    shard = synthetic_root / "synthetic" / "cc_sbu" / "train-00001.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            data = b"junk" if m.name.endswith(".jpg") and m.name.startswith("000000005") else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    code, text = _run("--data-root", str(synthetic_root), "check", "synthetic_caption_wds", "--n", "1", "--no-progress")
    assert code == 1
    assert "synthetic_caption_wds/train: 11 samples; 11 of 12 reads ok" in text
    assert f"{shard}:000000005.jpg" in text

    code, text = _run("--data-root", str(synthetic_root), "check", "synthetic_caption_wds", "--split", "test")
    assert code == 0 and "test: 4 samples" in text and "unreadable: none" in text


def test_check_errors_name_the_split_or_the_missing_file(synthetic_root, tmp_path, capsys):
    code, _ = _run("--data-root", str(synthetic_root), "check", "synthetic_cc_sbu_align", "--split", "test")
    assert code == 1 and "has no split 'test'; its splits: train" in capsys.readouterr().err
    code, _ = _run("--data-root", str(tmp_path / "empty"), "check", "coco_caption")
    err = capsys.readouterr().err
    assert code == 1 and "coco_karpathy_train.json" in err


def test_default_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_DATA_ROOT", str(tmp_path))
    assert catalog.default_data_root() == str(tmp_path)
    monkeypatch.delenv("MINIGPT_DATA_ROOT")
    assert catalog.default_data_root() == "data"


def test_python_dash_m_entry_point(synthetic_root, run_cli):
    proc = run_cli(["-m", "minigpt.datasets", "--data-root", synthetic_root, "list"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _row(proc.stdout, "synthetic_vqa")[2] == "yes"


def test_check_of_an_unknown_name_suggests_close_ones(capsys):
    code, _ = _run("check", "coco_captoin")
    err = capsys.readouterr().err
    assert code == 1 and "unknown builder name 'coco_captoin'" in err and "coco_caption" in err
