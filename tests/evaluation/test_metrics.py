"""Metric definitions, each pinned on hand-worked cases: VQA (official normalisation and leave-one-out),
GQA, VSR, Hateful Memes, IconQA, ScienceQA, RefCOCO Acc@0.5, COCO caption CIDEr/BLEU, and how the task
scores rows."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections import Counter

import pytest

from minigpt.evaluation import metrics as M
from minigpt.tasks.evaluation.records import EvalRecord
from minigpt.tasks.evaluation.scorers import SAMPLES_SCORER
from minigpt.tasks.evaluation.sources import sample_record


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
    answers = ["2"] * matching + ["3"] * (10 - matching)
    assert M.vqa_accuracy("Two", answers) == pytest.approx(expected)


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


# -- how in-training evaluation turns generations into rows and rows into metrics -----------------------
def _batch(task: str, answer: str, **extra):
    """One dataset sample (what the training readers yield), as the evaluation loop's record."""
    return sample_record("0", {"task": task, "answer": answer, "sample_id": "s0", "instruction_input": "q", **extra})


def _score_row(record, prediction: str):
    return SAMPLES_SCORER.score(record, prediction)


def test_refer_row_counts_iou_of_exactly_half_as_a_hit():
    batch = _batch("refer", "{<0><0><50><100>}", image_size=(100, 100), gt_box=[0.0, 0.0, 50.0, 100.0])
    row = _score_row(batch, "{<0><0><100><100>}")
    assert row["iou"] == 0.5 and row["score"] == 1.0
    miss = _score_row(batch, "no box, sorry")
    assert miss["iou"] == 0.0 and miss["score"] == 0.0


def test_vqa_rows_use_all_answers_and_aggregate_per_question_type():
    records = [
        _batch("vqa", "2", answers=["2"] * 3 + ["3"] * 7, question_type="count"),
        _batch("vqa", "red", answers=["red"] * 10, question_type="color"),
        _batch("caption", "a big red circle", captions=["a big red circle", "a disc"]),
    ]
    rows = [_score_row(r, p) for r, p in zip(records, ["two", "Red.", "A big red circle."])]
    assert rows[0]["score"] == pytest.approx(0.9)
    out = SAMPLES_SCORER.aggregate(records, rows)
    assert out["vqa_accuracy"] == pytest.approx(0.95)
    assert out["vqa_accuracy_count"] == pytest.approx(0.9)
    assert out["vqa_accuracy_color"] == pytest.approx(1.0)
    assert out["caption_exact"] == 1.0 and out["caption_bleu4_nltk"] == pytest.approx(1.0)


def test_hallucination_rate_counts_absent_things_answered_as_there():
    records = [
        _batch("vqa", "there is no circle", answers=["there is no circle"] * 10, question_type="absent"),
        _batch("vqa", "there is no red object", answers=["there is no red object"] * 10, question_type="absent"),
        _batch("vqa", "no", answers=["no"] * 10, question_type="exist"),
        _batch("vqa", "no", answers=["no"] * 10, question_type="exist"),
        _batch("vqa", "yes", answers=["yes"] * 10, question_type="exist"),  # present: not counted
        _batch("vqa", "red", answers=["red"] * 10, question_type="color"),  # not about an absent thing
    ]
    # a colour for the missing circle, a refusal naming the wrong thing (still a refusal), a "yes" for an
    # absent pair, a correct "no", a wrong "no" for a present pair, a wrong colour
    said = ["red", "There is no blue object", "yes", "no", "no", "blue"]
    rows = [_score_row(r, p) for r, p in zip(records, said)]
    assert [r.get("hallucinated") for r in rows] == [True, False, True, False, None, None]
    out = SAMPLES_SCORER.aggregate(records, rows)
    assert out["hallucination_rate"] == pytest.approx(0.5)
    assert "hallucination_rate" not in SAMPLES_SCORER.aggregate(records[4:], rows[4:])


# -- the official VQA evaluation's corner cases ----------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,000", "1000"),  # a comma between digits: every listed mark is deleted, not spaced
        ("red,blue", "red blue"),  # no digit comma, no space next to it: the comma becomes a space
        ("red, blue", "red blue"),  # touches a space: deleted
        ("2.", "2"),  # a period not followed by a digit goes, even after a digit
        ("2.5", "2.5"),
        ("a.m.", "am"),
        ("yes: it is", "yes: it is"),  # ':' is not in the official punctuation list
        ("it's", "it's"),  # nor is the apostrophe
        ("whats", "what's"),
        ("Im", "im"),  # the official table's key is "Im"; lowercased words never hit it
        ("somebody'd", "somebodyd"),  # the official table's odd entry, kept
        ("An apple", "apple"),
        ("The Three", "3"),
        ("ten\tcats\n", "10 cats"),
    ],
)
def test_vqa_normalisation_follows_the_official_rules(text, expected):
    assert M.normalize_answer(text) == expected


def test_vqa_ground_truths_get_punctuation_processing_only_and_only_when_they_differ():
    # "Two" in the annotations is not digit-mapped (the official annotations are pre-normalised)
    assert M.vqa_accuracy("2", ["Two"] * 10) == 0.0
    assert M.vqa_accuracy("two", ["2"] * 10) == 1.0
    # ten identical answers are used verbatim: "yes." never equals a normalised prediction
    assert M.vqa_accuracy("yes", ["yes."] * 10) == 0.0
    # answers that differ get processPunctuation: "yes." -> "yes"
    assert M.vqa_accuracy("yes", ["yes."] * 4 + ["no"] * 6) == 1.0
    # ... and "2!" becomes "2 " (the '!' is spaced, the answer not re-split), which "2" does not match
    assert M.vqa_accuracy("2", ["2!"] * 4 + ["3"] * 6) == 0.0


def test_vqa_leave_one_out_sums_worked_by_hand():
    answers = ["red"] * 4 + ["dark red"] * 3 + ["maroon"] * 2 + ["brown"]
    # "red": dropping any answer leaves >= 3 "red" -> every subset scores 1
    assert M.vqa_accuracy("Red.", answers) == pytest.approx(1.0)
    # "dark red": 3 subsets drop one of them (2/3 each), 7 keep all three (1 each)
    assert M.vqa_accuracy("dark red", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    # "maroon": 2 subsets leave 1 (1/3), 8 leave 2 (2/3)
    assert M.vqa_accuracy("maroon", answers) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    # "brown": 1 subset leaves 0, 9 leave 1 (1/3)
    assert M.vqa_accuracy("the brown", answers) == pytest.approx(9 * (1 / 3) / 10)
    assert M.vqa_accuracy("blue", answers) == 0.0


# -- GQA, VSR, Hateful Memes, IconQA ---------------------------------------------------------------
@pytest.mark.parametrize(
    "prediction, answer, expected",
    [("Yes", "yes", 1.0), (" left ", "left", 1.0), ("yes.", "yes", 0.0), ("the table", "table", 0.0), ("no", "yes", 0.0)],
)
def test_gqa_is_exact_match_after_lowercasing(prediction, answer, expected):
    assert M.gqa_accuracy(prediction, answer) == expected


@pytest.mark.parametrize(
    "prediction, label, expected",
    [
        ("True", 1, 1.0),
        ("false", 0, 1.0),
        (" FALSE ", False, 1.0),
        ("true", "true", 1.0),
        ("true", 0, 0.0),
        ("yes", 1, 0.0),  # MiniGPT-v2 compares with the words true/false; yes/no are not mapped
        ("no", 0, 0.0),
        ("true.", 1, 0.0),
    ],
)
def test_vsr_compares_with_the_label_word(prediction, label, expected):
    assert M.vsr_accuracy(prediction, label) == expected


def test_vsr_rejects_a_label_that_is_not_true_or_false():
    with pytest.raises(ValueError, match="maybe"):
        M.vsr_accuracy("true", "maybe")


@pytest.mark.parametrize(
    "prediction, label, expected",
    [("Yes", 1, 1.0), ("no", 0, 1.0), (" NO ", 0, 1.0), ("yes", 0, 0.0), ("no", 1, 0.0),
     ("yes.", 1, 0.0), ("maybe", 0, 0.0), ("maybe", 1, 0.0), ("true", 1, 0.0)],
)
def test_hateful_memes_accuracy_maps_yes_no(prediction, label, expected):
    assert M.hm_accuracy(prediction, label) == expected


@pytest.mark.parametrize(
    "prediction, expected",
    [("square", 1.0), ("It is a square.", 1.0), ("Square", 1.0), ("circle", 0.0), ("circle or square", 0.0), ("", 0.0)],
)
def test_iconqa_maps_the_prediction_to_one_choice(prediction, expected):
    assert M.iconqa_accuracy(prediction, "square", ["circle", "square", "triangle"]) == expected


def test_iconqa_without_choices_is_normalised_exact_match():
    assert M.iconqa_accuracy("Two", "2") == 1.0
    assert M.iconqa_accuracy("3", "2") == 0.0


# -- ScienceQA -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prediction, index",
    [
        ("B", 1),
        ("B. dog", 1),
        ("B.", 1),
        ("The answer is B.", 1),
        ("Because dogs bark. The answer is B. BECAUSE: ...", 1),
        ("The answer is B", 1),  # LLaVA's pattern needs a character after the letter; accepted at the end too
        ("(b)", 1),
        ("(B) dog", 1),
        ("dog", 1),  # the text of exactly one choice
        ("The answer is A. The answer is B.", -1),  # two answers: unparsed, as in LLaVA
        ("The answer is D.", -1),  # beyond the three choices
        ("b", -1),
        ("no idea", -1),
    ],
)
def test_scienceqa_parses_the_option_letter(prediction, index):
    choices = ["cat", "dog", "bird"]
    assert M.scienceqa_choice(prediction, choices) == index
    assert M.scienceqa_accuracy(prediction, 1, choices) == float(index == 1)


def test_scienceqa_rejects_an_answer_index_outside_the_choices():
    with pytest.raises(ValueError, match="answer_index 3"):
        M.scienceqa_accuracy("A", 3, ["cat", "dog"])


# -- RefCOCO Acc@0.5 -------------------------------------------------------------------------------
def test_refcoco_hit_at_the_iou_boundary():
    # the full-image prediction against the left half: IoU exactly 0.5 -> a hit
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 50, 100], 100, 100) == 1.0
    # a hair less than half: IoU 0.499 -> a miss
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 49.9, 100], 100, 100) == 0.0
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 49.9, 100], 100, 100, threshold=0.49) == 1.0
    assert M.refcoco_hit("no box", [0, 0, 50, 100], 100, 100) == 0.0


def test_refcoco_hit_scales_the_grid_by_width_and_height():
    # grid (25, 50)-(75, 100) on a 400x200 image is (100, 100)-(300, 200) in pixels: IoU 1 with the truth
    assert M.refcoco_hit("[refer] {<25><50><75><100>}", [100, 100, 300, 200], 400, 200) == 1.0
    # read with the axes swapped it would be (50, 50)-(150, 300): IoU with the truth 50*100 / 65000 < 0.5
    assert M.refcoco_hit("{<25><50><75><100>}", [100, 100, 300, 200], 200, 400) == 0.0


def test_refcoco_hit_minigptv2_rule_uses_inclusive_pixels_and_a_strict_threshold():
    # a 99x99 image: grid 100 -> pixel 99. Inclusive areas: prediction 100*100, truth 50*100, IoU exactly 0.5
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 49, 99], 99, 99, rule="minigptv2") == 0.0  # not > 0.5
    # continuous IoU of the same boxes is 49*99 / (99*99) < 0.5
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 49, 99], 99, 99) == 0.0
    # one pixel wider: inclusive 51*100/10000 = 0.51, continuous 50*99/9801 = 0.505
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 50, 99], 99, 99, rule="minigptv2") == 1.0
    assert M.refcoco_hit("{<0><0><100><100>}", [0, 0, 50, 99], 99, 99) == 1.0
    with pytest.raises(ValueError, match="rule"):
        M.refcoco_hit("{<0><0><1><1>}", [0, 0, 1, 1], 10, 10, rule="loose")


# -- COCO captions: tokenisation, CIDEr, BLEU ------------------------------------------------------
_PTB_SENTENCES = [
    "A man's dog (black-and-white) jumps over 1,000 \"logs\"... Don't stop!",
    "The 2.5 kg cat; can't sit -- ok? Mr. Smith's car, e.g. U.S.A. it's 5:30 pm.",
    "A dog's toy, the dogs' toys 'quoted' I'm we'll you'd won't cannot",
    "A bus parked by the curb.  The BUS is red/white...and blue! 3-4 people",
    "An old-fashioned clock tower with a blue sky [in the background].",
    "The sign says \"STOP\" at the intersection of 5th Ave. and Main St.",
    "Man in a red shirt riding a skateboard down a ramp --- wow",
]


def test_caption_tokens_split_clitics_and_keep_numbers_and_hyphenated_words():
    assert M.caption_tokens("A man's dog can't sit.") == ["a", "man", "'s", "dog", "ca", "n't", "sit"]
    assert M.caption_tokens("Over 1,000 black-and-white logs, 2.5 km!") == [
        "over", "1,000", "black-and-white", "logs", "2.5", "km"]
    # brackets survive as PTB's -lrb-/-rrb- because the COCO evaluation's drop list spells them in capitals
    assert M.caption_tokens("a cat (sleeping)") == ["a", "cat", "-lrb-", "sleeping", "-rrb-"]


def _coco_jar():
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    except ImportError:
        return None
    jar = os.path.join(os.path.dirname(ptb.__file__), ptb.STANFORD_CORENLP_3_4_1_JAR)
    return jar if os.path.exists(jar) and shutil.which("java") else None


@pytest.mark.skipif(_coco_jar() is None, reason="needs java and pycocoevalcap's Stanford tokenizer jar")
def test_caption_tokens_match_the_coco_java_tokenizer(tmp_path):
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    src = tmp_path / "captions.txt"
    src.write_text("\n".join(_PTB_SENTENCES) + "\n")
    out = subprocess.run(
        ["java", "-cp", _coco_jar(), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(src)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()
    assert len(out) >= len(_PTB_SENTENCES)
    for sentence, line in zip(_PTB_SENTENCES, out):
        expected = [w for w in line.rstrip().split(" ") if w not in ptb.PUNCTUATIONS]
        assert M.caption_tokens(sentence) == expected, sentence


def test_cider_on_a_three_image_corpus_worked_by_hand():
    pytest.importorskip("pycocoevalcap")
    refs = {"1": ["Red square."], "2": ["blue triangle"], "3": ["green star"]}
    preds = {"1": "red circle", "2": "Blue triangle.", "3": "green star"}
    # idf of every n-gram is log(3) (each occurs in one image's references; unseen ones count as df 1).
    # Image 1: unigrams share "red": cosine log3^2 / (sqrt2 log3 * sqrt2 log3) = 1/2; bigrams differ: 0;
    # no 3-/4-grams: 0; equal lengths, no penalty. mean(1/2, 0, 0, 0) * 10 = 1.25.
    # Images 2 and 3: unigram and bigram cosines 1, no 3-/4-grams: mean(1, 1, 0, 0) * 10 = 5.
    scores = M.caption_scores(preds, refs)
    assert scores["CIDEr"] == pytest.approx((1.25 + 5 + 5) / 3)


def _bleu_by_formula(hyps, refs, max_n):
    """Corpus BLEU straight from Papineni et al.: clipped n-gram precisions, closest reference length."""
    correct = [0] * max_n
    guess = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, rs in zip(hyps, refs):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            grams = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
            best = Counter()
            for r in rs:
                for g, c in Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1)).items():
                    best[g] = max(best[g], c)
            correct[n - 1] += sum(min(c, best[g]) for g, c in grams.items())
            guess[n - 1] += max(len(hyp) - n + 1, 0)
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.prod(c / g for c, g in zip(correct, guess)) ** (1 / max_n)


def test_bleu_matches_the_formula_and_nltk():
    pytest.importorskip("pycocoevalcap")
    from nltk.translate.bleu_score import corpus_bleu

    refs = {
        "a": ["A red circle on a blue background", "a red disc on blue"],
        "b": ["Two green squares and a yellow triangle.", "green squares beside a triangle"],
        "c": ["A cat is sleeping on the sofa.", "a small cat sleeps"],
    }
    preds = {"a": "A red circle on a blue background.", "b": "two green squares near a yellow triangle", "c": "a cat"}
    keys = sorted(refs)
    hyps = [M.caption_tokens(preds[k]) for k in keys]
    toks = [[M.caption_tokens(r) for r in refs[k]] for k in keys]
    # hypotheses 7 + 7 + 2 words against closest references 7 + 7 + 4: a brevity penalty applies
    assert sum(map(len, hyps)) == 16
    scores = M.caption_scores(preds, refs)
    for n in range(1, 5):
        assert scores[f"Bleu_{n}"] == pytest.approx(_bleu_by_formula(hyps, toks, n), rel=1e-6)
    assert 0.0 < scores["Bleu_4"] < scores["Bleu_1"] < 1.0
    # NLTK's corpus_bleu agrees where every hypothesis has 4+ words (it counts a shorter one's empty
    # 3-/4-gram set as one guess, which the BLEU definition and pycocoevalcap do not)
    preds["c"] = "a small cat is asleep"
    hyps[2] = M.caption_tokens(preds["c"])
    assert scores["Bleu_4"] != pytest.approx(M.caption_scores(preds, refs)["Bleu_4"])
    assert M.caption_scores(preds, refs)["Bleu_4"] == pytest.approx(corpus_bleu(toks, hyps), rel=1e-6)


def test_caption_scores_needs_matching_ids():
    pytest.importorskip("pycocoevalcap")
    with pytest.raises(KeyError, match="without a prediction"):
        M.caption_scores({"1": "a cat"}, {"1": ["a cat"], "2": ["a dog"]})


def test_scienceqa_table_has_the_official_columns_worked_by_hand():
    from minigpt.tasks.evaluation.scorers import SCORERS

    def rec(pid, subject, grade, hint, image):
        meta = {"subject": subject, "grade": grade, "has_text": hint, "has_image": image,
                "no_context": not hint and not image}
        return EvalRecord(pid, None, "", {"answer": 0, "choices": ["a", "b"]}, meta)

    records = [
        rec("1", "natural science", "G1-6", True, True),     # TXT and IMG: counts in both
        rec("2", "natural science", "G7-12", False, True),
        rec("3", "social science", "G1-6", True, False),
        rec("4", "language science", "G7-12", False, False),  # NO
        rec("5", "language science", "G1-6", False, False),  # NO
    ]
    scorer = SCORERS["scienceqa"]
    rows = [scorer.score(r, p) for r, p in zip(records, ["The answer is A.", "B", "A", "The answer is B.", "(A)"])]
    got = scorer.aggregate(records, rows)
    assert got == pytest.approx({
        "accuracy": 3 / 5, "accuracy_nat": 1 / 2, "accuracy_soc": 1.0, "accuracy_lan": 1 / 2,
        "accuracy_txt": 1.0, "accuracy_img": 1 / 2, "accuracy_no": 1 / 2,
        "accuracy_g1_6": 1.0, "accuracy_g7_12": 0.0, "accuracy_text_only": 2 / 3,
    })
    # a column no question falls in is left out, not reported as 0
    assert "accuracy_soc" not in scorer.aggregate(records[:2], rows[:2])
