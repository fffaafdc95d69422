"""Metric definitions: VQA normalisation and accuracy, box parsing, IoU, BLEU-4, and how the task scores rows."""

from __future__ import annotations

import pytest

from minigpt.evaluation import metrics as M
from minigpt.tasks.base_task import BaseTask


@pytest.mark.parametrize(
    "prediction, answer",
    [
        ("Two", "2"),
        ("a dog.", "dog"),
        ("dont", "don't"),
        ("yes!", "yes"),
        ("  The  Red\tCircle ", "red circle"),
        ("none", "0"),
    ],
)
def test_normalisation_makes_equivalent_answers_equal(prediction, answer):
    assert M.normalize_answer(prediction) == M.normalize_answer(answer)


@pytest.mark.parametrize("a, b", [("2.5", "25"), ("dog", "dogs"), ("yes", "no"), ("red circle", "circle red")])
def test_normalisation_keeps_different_answers_apart(a, b):
    assert M.normalize_answer(a) != M.normalize_answer(b)


def test_normalisation_keeps_decimal_points():
    assert M.normalize_answer("2.5") == "2.5"


def _loo(matching: int, total: int = 10) -> float:
    """The leave-one-out VQA accuracy by hand: drop each answer in turn, score min(matches / 3, 1), average."""
    scores = []
    for dropped in range(total):
        left = matching - (1 if dropped < matching else 0)
        scores.append(min(1.0, left / 3))
    return sum(scores) / total


@pytest.mark.parametrize(
    "matching, expected",
    [
        (0, 0.0),
        (1, 0.3),  # 1 subset scores 0, 9 score 1/3
        (2, 0.6),  # 2 subsets score 1/3, 8 score 2/3
        (3, 0.9),  # 3 subsets score 2/3, 7 score 1: three humans are not quite enough for full credit
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matching, expected):
    assert _loo(matching) == pytest.approx(expected)
    answers = ["Two"] * matching + ["three"] * (10 - matching)
    assert M.vqa_accuracy("2", answers) == pytest.approx(expected)


def test_vqa_accuracy_single_answer_is_exact_match_and_empty_is_an_error():
    assert M.vqa_accuracy("A dog.", ["dog"]) == 1.0
    assert M.vqa_accuracy("cat", ["dog"]) == 0.0
    with pytest.raises(ValueError):
        M.vqa_accuracy("dog", [])


@pytest.mark.parametrize(
    "text, box",
    [
        ("{<10><20><30><40>}", [10, 20, 30, 40]),
        ("the square is at { <10> <20> <30> <40> } in the image", [10, 20, 30, 40]),
        ("<10><20><30><40>", [10, 20, 30, 40]),  # closing brace lost to max_new_tokens
        ("{<30><40><10><20>}", [10, 20, 30, 40]),  # corners swapped
        ("{<0><0><120><100>}", [0, 0, 100, 100]),  # off the grid: clamped
        ("{<1><2><3><4>} and {<50><50><60><60>}", [1, 2, 3, 4]),  # the first box wins
    ],
)
def test_parse_box_tolerates_spacing_and_order(text, box):
    assert M.parse_box(text) == box


@pytest.mark.parametrize("text", ["", "a red circle", "{<10><20><30>}", "{<a><b><c><d>}", "<1000><2><3><4>"])
def test_parse_box_returns_none_on_garbage(text):
    assert M.parse_box(text) is None


def test_iou():
    assert M.iou([0, 0, 2, 1], [0, 0, 1, 1]) == 0.5
    assert M.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert M.iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert M.iou([0, 0, 1, 1], [1, 0, 2, 1]) == 0.0  # touching edges
    assert M.iou([0, 0, 4, 4], [2, 2, 6, 6]) == pytest.approx(4 / 28)
    assert M.iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # degenerate, no division by zero


def test_grid_to_pixels_scales_each_axis():
    assert M.grid_to_pixels([10, 20, 50, 100], 200, 50) == pytest.approx([20, 10, 100, 50])


def test_corpus_bleu4():
    refs = [["a red circle on a blue background", "a red disc"], ["two green squares and a yellow triangle"]]
    preds = ["a red circle on a blue background", "two green squares and a yellow triangle"]
    assert M.corpus_bleu4(preds, refs) == pytest.approx(1.0)
    assert M.corpus_bleu4(["A RED circle on a blue background"], [refs[0]]) == pytest.approx(1.0)  # case-blind
    # punctuation is not a word, as in the COCO caption evaluation's tokenisation
    assert M.corpus_bleu4(["two shapes: a red circle, a blue square."], [["two shapes a red circle a blue square"]]) \
        == pytest.approx(1.0)
    assert M.caption_tokens("Two shapes: a red circle.") == ["two", "shapes", "a", "red", "circle"]
    assert M.corpus_bleu4(["zebra zebra zebra zebra"], [refs[0]]) < 0.05
    partial = M.corpus_bleu4(["a red circle on a green background"], [refs[0]])
    assert 0.05 < partial < 1.0


# -- how the task turns generations into rows and rows into metrics ------------------------------
def _batch(task: str, answer: str, **extra):
    return {"task": [task], "answer": [answer], "sample_id": ["s0"], **{k: [v] for k, v in extra.items()}}


def test_refer_row_counts_iou_of_exactly_half_as_a_hit():
    batch = _batch("refer", "{<0><0><50><100>}", image_size=(100, 100), gt_box=[0.0, 0.0, 50.0, 100.0])
    row = BaseTask._score_row(batch, 0, "{<0><0><100><100>}")
    assert row["iou"] == 0.5 and row["score"] == 1.0
    miss = BaseTask._score_row(batch, 0, "no box, sorry")
    assert miss["iou"] == 0.0 and miss["score"] == 0.0


def test_vqa_rows_use_all_answers_and_aggregate_per_question_type():
    rows = [
        BaseTask._score_row(_batch("vqa", "2", answers=["2"] * 3 + ["3"] * 7, question_type="count"), 0, "two"),
        BaseTask._score_row(_batch("vqa", "red", answers=["red"] * 10, question_type="color"), 0, "Red."),
        BaseTask._score_row(_batch("caption", "a big red circle", captions=["a big red circle", "a disc"]), 0,
                            "A big red circle."),
    ]
    assert rows[0]["score"] == pytest.approx(0.9)
    out = BaseTask._aggregate(rows)
    assert out["vqa_accuracy"] == pytest.approx(0.95)
    assert out["vqa_accuracy_count"] == pytest.approx(0.9)
    assert out["vqa_accuracy_color"] == pytest.approx(1.0)
    assert out["caption_exact"] == 1.0 and out["caption_bleu4"] == pytest.approx(1.0)
