"""Evaluation pictures: box overlays over referring predictions and the per-question-type chart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from minigpt.evaluation.pictures import (
    GROUND_TRUTH_COLOUR,
    PREDICTION_COLOUR,
    draw_question_types,
    draw_ref_overlays,
    spread_sample,
    type_accuracies,
)

pytest.importorskip("matplotlib")


def _has_colour(path, hex_colour: str, tol: int = 40) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    return bool((np.abs(pixels - rgb).max(axis=1) < tol).sum() > 20)


def _write_predictions(tmp_path, predictions):
    image = tmp_path / "scene.png"
    Image.new("RGB", (64, 48), (200, 200, 200)).save(image)
    rows = [{"id": str(i), "prediction": p, "iou": 0.5, "image": str(image), "prompt": f"[refer] give me the location of thing {i}",
             "target": {"box": [4, 4, 30, 30], "width": 64, "height": 48}} for i, p in enumerate(predictions)]  # fmt: skip
    path = tmp_path / "refcoco_val_predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_spread_sample():
    assert spread_sample(3, 8) == [0, 1, 2]
    assert spread_sample(100, 4) == [0, 33, 66, 99]
    assert spread_sample(10, 1) == [0]


def test_overlays_draw_ground_truth_and_prediction(tmp_path):
    preds = _write_predictions(tmp_path, ["{<50><50><90><90>}", "{<10><10><40><60>}"])
    out = draw_ref_overlays(str(preds), str(tmp_path / "boxes.png"))
    assert Image.open(out).size[0] > 200
    assert _has_colour(out, GROUND_TRUTH_COLOUR) and _has_colour(out, PREDICTION_COLOUR)
    # an answer without a box: only the ground truth is drawn
    preds = _write_predictions(tmp_path, ["a red circle"])
    out = draw_ref_overlays(str(preds), str(tmp_path / "nobox.png"))
    assert _has_colour(out, GROUND_TRUTH_COLOUR) and not _has_colour(out, PREDICTION_COLOUR)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: no predictions"):
        draw_ref_overlays(str(tmp_path / "empty.jsonl"), str(tmp_path / "x.png"))


def test_question_type_chart(tmp_path):
    metrics = {"accuracy": 0.8, "accuracy_color": 1.0, "accuracy_count": 0.5, "samples": 10}
    assert type_accuracies(metrics) == {"color": 1.0, "count": 0.5}
    out = draw_question_types(metrics, str(tmp_path / "types.png"))
    assert _has_colour(out, "#4a7ab5")
    # a longer list of types makes a taller chart
    more = draw_question_types({**metrics, **{f"accuracy_t{i}": 0.1 * i for i in range(8)}}, str(tmp_path / "more.png"))
    assert Image.open(more).size[1] > Image.open(out).size[1]
    assert draw_question_types({"accuracy": 0.5}, str(tmp_path / "none.png")) is None
    assert not (tmp_path / "none.png").exists()


def test_split_pictures_by_family_and_without_matplotlib(tmp_path, monkeypatch, caplog):
    from minigpt.evaluation import pictures
    from minigpt.tasks.evaluation.loop import SplitResult

    preds = _write_predictions(tmp_path, ["{<10><10><40><60>}"])
    assert preds.name == "refcoco_val_predictions.jsonl"
    ref = SplitResult("refcoco", "val", {"acc@0.5": 1.0}, 1, 1, 0)
    stopped = SplitResult("refcoco", "testA", None, 1, 1, 0)  # stopped early: nothing to draw
    assert pictures.write_split_pictures("ref", [ref, stopped], str(tmp_path)) == [str(tmp_path / "refcoco_val_boxes.png")]
    vqa = SplitResult("okvqa", "val", {"accuracy": 0.5, "accuracy_other": 0.5}, 1, 1, 0)
    assert pictures.write_split_pictures("vqa", [vqa], str(tmp_path)) == [str(tmp_path / "okvqa_val_question_types.png")]
    assert pictures.write_split_pictures("caption", [vqa], str(tmp_path)) == []

    def missing():
        raise pictures.PlotUnavailable(f"drawing pictures needs matplotlib: {pictures.PLOT_EXTRA_HINT}")

    monkeypatch.setattr(pictures, "pyplot", missing)
    with caplog.at_level("WARNING"):
        assert pictures.write_split_pictures("vqa", [vqa], str(tmp_path / "none")) == []
    assert "pip install 'minigpt-kit[plot]'" in caplog.text
