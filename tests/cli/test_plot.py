"""``minigpt plot``: a run folder (a pipeline's or a stage's) drawn to one PNG; bad folders named."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from minigpt.cli.main import main
from minigpt.cli.plot import RunDirError, _eval_series, load_run

pytest.importorskip("matplotlib")


def _train_row(step, loss, tps=3000.0):
    # the fields a stage's metrics.jsonl training row carries (minigpt.runners.step_loop)
    return {"time": 1.0, "step": step, "loss": loss, "loss_ema": loss * 1.1, "lr": 1e-3 / step, "samples_per_s": 150.0,
            "tokens_per_s": tps, "dataset": "synthetic_vqa", "grad_norm": 1.0, "skipped_samples": 0, "memory_mb": 900.0}


def _write_stage(folder, n_steps, evals=()):
    folder.mkdir(parents=True)
    rows = [_train_row(s, 2.0 / s) for s in range(10, n_steps + 1, 10)]
    rows += [{"event": "eval", "step": s, "synthetic_vqa/test/vqa_accuracy": a, "synthetic_vqa/test/samples": 50,
              "best_metric": "vqa_accuracy", "best_value": a} for s, a in evals]  # fmt: skip
    rows.append({"event": "train_end", "stage": folder.name, "steps": n_steps})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def pipeline_dir(tmp_path):
    run = tmp_path / "quick"
    _write_stage(run / "stage1", 50)
    _write_stage(run / "stage2", 30, evals=[(10, 0.4), (30, 0.6)])
    (run / "pipeline.json").write_text(json.dumps({"pipeline": "quick", "stages": [
        {"name": "stage1", "dir": "stage1"}, {"name": "stage2", "dir": "stage2"}]}))  # fmt: skip
    (run / "metrics.json").write_text(json.dumps({"vqa_accuracy": 0.6, "wall_time_s": 12.0, "stages": []}))
    return run


def test_load_run_reads_stages_in_order(pipeline_dir):
    run = load_run(str(pipeline_dir))
    assert [s.name for s in run.stages] == ["stage1", "stage2"]
    assert [len(s.train) for s in run.stages] == [5, 3] and len(run.stages[1].evals) == 2
    assert run.summary == {"vqa_accuracy": 0.6}  # wall time and stage lists are not metrics
    # eval steps run on after stage 1's 50 steps; counts and best_* are left out
    assert _eval_series(run.stages, [0, 50]) == {"synthetic_vqa/test/vqa_accuracy": [(60, 0.4), (80, 0.6)]}


def test_plot_writes_a_png(pipeline_dir, tmp_path, capsys):
    assert main(["plot", str(pipeline_dir)]) == 0
    out = pipeline_dir / "training.png"
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500
    assert out.stat().st_size < 100_000
    # one stage's folder, to a chosen file
    assert main(["plot", str(pipeline_dir / "stage1"), "--out", str(tmp_path / "s1.png")]) == 0
    assert (tmp_path / "s1.png").is_file()


def test_bad_folders_are_named(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "absent")]) == 2
    assert "absent: no such folder" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "neither pipeline.json" in capsys.readouterr().err
    stage = tmp_path / "stage"
    stage.mkdir()
    good = json.dumps(_train_row(10, 1.0))
    (stage / "metrics.jsonl").write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(RunDirError, match=r"metrics.jsonl:2: not a JSON line"):
        load_run(str(stage))
    # a run killed mid-write leaves a cut last line: read up to it
    (stage / "metrics.jsonl").write_text(good + "\n" + good[:20])
    assert len(load_run(str(stage)).stages[0].train) == 1
    (stage / "metrics.jsonl").write_text(json.dumps({"event": "resumed", "step": 0}) + "\n")
    with pytest.raises(RunDirError, match="no training rows yet"):
        load_run(str(stage))
