"""Benchmark metrics, each computed the way its benchmark's own evaluation computes it.

- VQA accuracy (OK-VQA, VQAv2, VizWiz): the official VQA evaluation (GT-Vision-Lab/VQA,
  ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``), quirks included; see :func:`vqa_accuracy`.
- GQA, VSR, Hateful Memes, IconQA: the comparisons MiniGPT-v2's ``eval_scripts/eval_vqa.py`` makes.
- ScienceQA: the option-letter parsing of LLaVA's ``eval_science_qa.py`` (LaVIN reports the same).
- RefCOCO/+/g: Acc@0.5 on the first box parsed from the model's text, scaled from the 0-100 grid
  to pixels as MiniGPT-v2's ``eval_ref.py`` does.
- Captioning: CIDEr and BLEU-1..4 by the maintained ``pycocoevalcap`` scorers on captions tokenised
  in Python the way the COCO caption evaluation's PTB tokeniser does (no Java needed).
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Union

from minigpt.common import grounding

# -- VQA answer normalisation (official vqaEval.py) --------------------------------------------------
# The official list: ':' , '#', '%', '$', '&', '*' and the apostrophe are deliberately absent.
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official pattern verbatim. Its "(?!<=\d)" is a mistyped look-behind and never fires, so the
# rule really is "drop a period not followed by a digit": "2." -> "2", "2.5" stays, "a.m" -> "am".
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The official code passes re.UNICODE (32) where ``re.sub`` expects ``count``: at most 32 periods go.
_PERIOD_STRIP_COUNT = int(re.UNICODE)
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})


def _pairs(spec: str) -> Dict[str, str]:
    items = spec.split()
    return dict(zip(items[0::2], items[1::2]))


# The official contractions table, in full (written as "key value" pairs). Its keys "Id've",
# "I'dve", "Im" and "Ive" start with a capital and so never match the lowercased words they are
# looked up with; "somebody'd" maps to "somebodyd". Both are kept: the benchmark numbers include them.
_CONTRACTIONS = _pairs(
    """
    aint ain't  arent aren't  cant can't  couldve could've  couldnt couldn't  couldn'tve couldn't've
    couldnt've couldn't've  didnt didn't  doesnt doesn't  dont don't  hadnt hadn't  hadnt've hadn't've
    hadn'tve hadn't've  hasnt hasn't  havent haven't  hed he'd  hed've he'd've  he'dve he'd've  hes he's
    howd how'd  howll how'll  hows how's  Id've I'd've  I'dve I'd've  Im I'm  Ive I've  isnt isn't
    itd it'd  itd've it'd've  it'dve it'd've  itll it'll  let's let's  maam ma'am  mightnt mightn't
    mightnt've mightn't've  mightn'tve mightn't've  mightve might've  mustnt mustn't  mustve must've
    neednt needn't  notve not've  oclock o'clock  oughtnt oughtn't  ow's'at 'ow's'at  'ows'at 'ow's'at
    'ow'sat 'ow's'at  shant shan't  shed've she'd've  she'dve she'd've  she's she's  shouldve should've
    shouldnt shouldn't  shouldnt've shouldn't've  shouldn'tve shouldn't've  somebody'd somebodyd
    somebodyd've somebody'd've  somebody'dve somebody'd've  somebodyll somebody'll  somebodys somebody's
    someoned someone'd  someoned've someone'd've  someone'dve someone'd've  someonell someone'll
    someones someone's  somethingd something'd  somethingd've something'd've  something'dve something'd've
    somethingll something'll  thats that's  thered there'd  thered've there'd've  there'dve there'd've
    therere there're  theres there's  theyd they'd  theyd've they'd've  they'dve they'd've  theyll they'll
    theyre they're  theyve they've  twas 'twas  wasnt wasn't  wed've we'd've  we'dve we'd've  weve we've
    werent weren't  whatll what'll  whatre what're  whats what's  whatve what've  whens when's
    whered where'd  wheres where's  whereve where've  whod who'd  whod've who'd've  who'dve who'd've
    wholl who'll  whos who's  whove who've  whyll why'll  whyre why're  whys why's  wont won't
    wouldve would've  wouldnt wouldn't  wouldnt've wouldn't've  wouldn'tve wouldn't've  yall y'all
    yall'll y'all'll  y'allll y'all'll  yall'd've y'all'd've  y'alld've y'all'd've  y'all'dve y'all'd've
    youd you'd  youd've you'd've  you'dve you'd've  youll you'll  youre you're  youve you've
    """
)


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: drop or space out punctuation, then strip periods.

    Each listed mark is deleted when it touches a space somewhere in the text, or when the text has
    a comma between digits ("1,000" -> "1000"); otherwise it becomes a space ("red,blue" ->
    "red blue"). Then periods not followed by a digit go ("dog." -> "dog", "2.5" stays).
    """
    out = text
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in _VQA_PUNCT:
        # decided on the original text, not on what earlier marks left behind, as the official code does
        if digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lowercase, number words to digits, no articles, contractions."""
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """What the official VQA evaluation does to a *prediction* before comparing it.

    Newlines and tabs to spaces, outer whitespace stripped, :func:`process_punctuation`, then
    :func:`process_digit_article` ("Two" -> "2", "a dog." -> "dog", "dont" -> "don't").
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """One question's VQA accuracy, as the official evaluation computes it.

    The prediction goes through :func:`normalize_answer`. The ground-truth answers only through
    :func:`process_punctuation`, and only when they are not all the same string: the official
    annotations are already lowercased, digit-mapped and article-free, so the evaluation does not
    redo that for them ("2" is matched by "two", but a ground truth "Two" matches nothing).
    For each answer left out in turn, ``min(#remaining answers equal to the prediction / 3, 1)``;
    the result is the mean over the leave-one-out subsets (3 of 10 humans agreeing scores 0.9).
    With one ground truth (datasets that have one) the official loop would always score 0; this
    returns exact match instead.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_answer(prediction)
    gts = list(answers)
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    if len(gts) == 1:
        return float(pred == gts[0])
    matches = sum(g == pred for g in gts)
    # Leaving out answer i leaves `matches - [gt_i == pred]` matching answers.
    total = sum(min(1.0, (matches - (g == pred)) / 3.0) for g in gts)
    return total / len(gts)


# -- short-answer and multiple-choice benchmarks -------------------------------------------------------
def _clean_generation(text: str) -> str:
    # MiniGPT-v2's scripts drop "<unk>" pieces and surrounding whitespace before comparing
    return text.replace("<unk>", "").strip()


def gqa_accuracy(prediction: str, answer: str) -> float:
    """GQA: exact match of the lowercased, stripped prediction with the answer (GQA's eval and MiniGPT-v2's).

    No punctuation or article handling: "yes." does not match "yes", as in MiniGPT-v2's reported numbers.
    """
    return float(_clean_generation(prediction).lower() == answer.strip().lower())


def vsr_accuracy(prediction: str, label: Union[bool, int, str]) -> float:
    """VSR: the prediction, lowercased and stripped, must be ``"true"`` (label 1) or ``"false"`` (label 0).

    MiniGPT-v2 asks "is this statement true or false?" and compares the answer text with the
    label word exactly; "yes"/"no" are not mapped to true/false, so they score 0.
    """
    if isinstance(label, str):
        if label.strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"VSR label must be true/false or 1/0, got {label!r}")
        truth = label.strip().lower() in ("true", "1")
    else:
        truth = bool(int(label))
    return float(_clean_generation(prediction).lower() == ("true" if truth else "false"))


def hm_accuracy(prediction: str, label: int) -> float:
    """Hateful Memes accuracy: "yes" means hateful (1), "no" not hateful (0); anything else is wrong.

    MiniGPT-v2's ``eval_vqa.py`` maps the lowercased, stripped answer ``yes`` -> 1 and ``no`` -> 0
    and counts a match with the 0/1 label; an answer that is neither never matches.
    """
    word = _clean_generation(prediction).lower()
    pred = {"yes": 1, "no": 0}.get(word)
    return float(pred is not None and pred == int(label))


def _match_choice(prediction: str, choices: Sequence[str]) -> Optional[int]:
    """Index of the choice a free-text prediction names, or None when it names none or several."""
    pred = normalize_answer(prediction)
    norm = [normalize_answer(c) for c in choices]
    exact = [i for i, c in enumerate(norm) if c == pred]
    if exact:
        return exact[0]
    contained = [i for i, c in enumerate(norm) if c and re.search(rf"(?<!\S){re.escape(c)}(?!\S)", pred)]
    return contained[0] if len(contained) == 1 else None


def iconqa_accuracy(prediction: str, answer: str, choices: Optional[Sequence[str]] = None) -> float:
    """IconQA: 1.0 when the prediction is the correct answer.

    MiniGPT-v2 scores IconQA by ranking the candidate answers by likelihood and checking the top
    one; a prediction produced that way is a choice's text and matches exactly. For generated text,
    with ``choices`` the prediction is mapped to the one choice it equals or contains as a phrase
    (after VQA normalisation), and that choice must be the answer; without ``choices``
    (fill-in-the-blank questions) the normalised prediction must equal the normalised answer.
    """
    if not choices:
        return float(normalize_answer(prediction) == normalize_answer(answer))
    idx = _match_choice(prediction, choices)
    return float(idx is not None and normalize_answer(choices[idx]) == normalize_answer(answer))


SCIENCEQA_OPTIONS = ("A", "B", "C", "D", "E")
_SQA_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # LLaVA's pattern; its "." is any character
_SQA_ANSWER_IS_END = re.compile(r"The answer is ([A-Z])$")
_SQA_PAREN = re.compile(r"^\(([A-Za-z])\)")


def scienceqa_choice(prediction: str, choices: Sequence[str]) -> int:
    """The choice index a ScienceQA answer names, or -1 when it cannot be parsed.

    LLaVA's rules first, in its order: the bare letter ("B"), a letter then ". " or "." ("B. cat"),
    exactly one "The answer is B." in the text. Where those fail (LLaVA would draw a random choice;
    this counts it wrong, so scores are reproducible): "The answer is B" at the very end, a
    parenthesised letter at the start ("(b)", as LaVIN's option list writes them), or the text of
    exactly one choice. A letter beyond the number of choices is -1.
    """
    text = _clean_generation(prediction)
    n = len(choices)
    options = SCIENCEQA_OPTIONS[:n]
    letter: Optional[str] = None
    if text in SCIENCEQA_OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        letter = text[0]
    elif len(text) == 2 and text[0] in SCIENCEQA_OPTIONS and text[1] == ".":
        letter = text[0]
    else:
        found = _SQA_ANSWER_IS.findall(text)
        if len(found) == 1:
            letter = found[0]
        elif not found:
            end = _SQA_ANSWER_IS_END.search(text)
            paren = _SQA_PAREN.match(text)
            if end:
                letter = end.group(1)
            elif paren:
                letter = paren.group(1).upper()
            else:
                idx = _match_choice(text, choices)
                return -1 if idx is None else idx
    return options.index(letter) if letter in options else -1


def scienceqa_accuracy(prediction: str, answer_index: int, choices: Sequence[str]) -> float:
    """ScienceQA: 1.0 when :func:`scienceqa_choice` parses the prediction to ``answer_index``."""
    if not 0 <= answer_index < len(choices):
        raise ValueError(f"answer_index {answer_index} is outside the {len(choices)} choices {list(choices)!r}")
    return float(scienceqa_choice(prediction, choices) == answer_index)


# -- referring expressions -------------------------------------------------------------------------
def parse_box(text: str) -> Optional[List[int]]:
    """The first ``{<x1><y1><x2><y2>}`` box in text (0-100 grid), or None; see ``common.grounding``."""
    return grounding.parse_box(text)


def grid_to_pixels(box: Sequence[float], width: float, height: float) -> List[float]:
    """Grid box -> pixel box; see ``minigpt.common.grounding``."""
    return grounding.grid_to_pixels(box, width, height)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes; see ``minigpt.common.grounding``."""
    return grounding.iou(a, b)


def _iou_inclusive(a: Sequence[float], b: Sequence[float]) -> float:
    # MiniGPT-v2's computeIoU: boxes as inclusive pixel ranges, so every side is one pixel longer
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def refcoco_hit(
    prediction: str,
    gt_box: Sequence[float],
    width: float,
    height: float,
    threshold: float = 0.5,
    *,
    rule: str = "standard",
) -> float:
    """1.0 when the first box in ``prediction`` overlaps ``gt_box`` (pixels, x1 y1 x2 y2) enough.

    The predicted box is on the 0-100 grid and is scaled by ``width``/``height`` as MiniGPT-v2's
    ``eval_ref.py`` does (``x / 100 * width``). ``rule="standard"`` is Acc@0.5 as RefCOCO papers
    define it: continuous IoU >= ``threshold``. ``rule="minigptv2"`` reproduces MiniGPT-v2's script:
    IoU over inclusive pixel ranges (+1 on each side) and a strict ``>``. No box in the text is a miss.
    """
    if rule not in ("standard", "minigptv2"):
        raise ValueError(f"refcoco_hit rule must be 'standard' or 'minigptv2', got {rule!r}")
    if len(gt_box) != 4:
        raise ValueError(f"gt_box must be [x1, y1, x2, y2] in pixels, got {list(gt_box)!r}")
    box = parse_box(prediction)
    if box is None:
        return 0.0
    pred_px = grid_to_pixels(box, width, height)
    if rule == "minigptv2":
        return float(_iou_inclusive(pred_px, gt_box) > threshold)
    return float(iou(pred_px, gt_box) >= threshold)


# -- captioning ----------------------------------------------------------------------------------------
# Tokens the COCO caption evaluation drops after PTB tokenisation. Its list spells the bracket
# tokens in upper case ("-LRB-") while the tokeniser runs with -lowerCase, so brackets survive as
# "-lrb-" etc.; reproduced here.
_COCO_DROPPED = frozenset({"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"})
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"]}
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st ave jr sr vs etc inc co ltd prof mt ft no rd blvd gen sgt capt lt col".split()
)
_PTB_TOKEN = re.compile(
    r"""
      (?:[^\W\d_]\.){2,}                               # e.g. u.s.a. a.m.
    | [^\W_]+(?:(?:[-/.&']|(?<=\d)[,:](?=\d))[^\W_]+)*  # words, numbers 1,000 2.5 5:30, black-and-white
    | '(?:s|re|ve|ll|d|m)\b                             # a clitic already split off ("man 's")
    | \.{2,} | -{2,} | [!?]+                            # ellipsis, dashes, "!!"
    | \S                                               # anything else, one character at a time
    """,
    re.VERBOSE,
)
_CLITIC = re.compile(r"^(.+?)('s|'re|'ve|'ll|'d|'m)$")


def caption_tokens(text: str) -> List[str]:
    """Lowercased caption words as the COCO caption evaluation sees them (PTB tokens, punctuation dropped).

    Mirrors Stanford's PTBTokenizer (run by ``pycocoevalcap`` with -lowerCase) on caption-like
    text: clitics split ("man's" -> "man 's", "don't" -> "do n't"), hyphenated words and numbers
    such as "1,000" or "2.5" kept whole, abbreviations keep their period, then the punctuation
    tokens the COCO evaluation removes are removed.
    """
    lowered = text.lower().replace("\u2019", "'")
    out: List[str] = []
    for m in _PTB_TOKEN.finditer(lowered):
        tok = m.group(0)
        if tok == '"' or tok.startswith("--"):
            continue  # PTB writes these as ``/'' and "--", which the COCO evaluation drops
        if tok in _BRACKETS:
            out.append(_BRACKETS[tok])
            continue
        if tok == "." and out and out[-1] in _ABBREVIATIONS and m.start() > 0 and lowered[m.start() - 1] != " ":
            out[-1] += "."  # "mr." stays one token, as PTB's abbreviation list has it
            continue
        if tok in _SPLIT_WORDS:
            out.extend(_SPLIT_WORDS[tok])
            continue
        if len(tok) > 3 and tok.endswith("n't"):
            out.extend([tok[:-3], "n't"])
            continue
        clitic = _CLITIC.match(tok)
        if clitic:
            out.extend([clitic.group(1), clitic.group(2)])
            continue
        out.append(tok)
    return [t for t in out if t not in _COCO_DROPPED]


def caption_scores(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> Dict[str, float]:
    """Corpus CIDEr (CIDEr-D as COCO reports it) and BLEU-1..4, keyed by image id.

    Scored by ``pycocoevalcap``'s Cider and Bleu (closest reference length for the brevity
    penalty) on :func:`caption_tokens`. Every image needs a prediction and at least one reference;
    CIDEr's idf comes from the references of the whole corpus, so score the full split at once.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("caption_scores needs pycocoevalcap: pip install 'minigpt-kit[eval]'") from exc
    missing = sorted(set(references) - set(predictions))
    extra = sorted(set(predictions) - set(references))
    if missing or extra:
        raise KeyError(f"caption_scores: images without a prediction {missing[:5]}, without references {extra[:5]}")
    if not predictions:
        raise ValueError("caption_scores needs at least one image")
    res: Dict[str, List[str]] = {}
    gts: Dict[str, List[str]] = {}
    for key in sorted(predictions, key=str):
        refs = [" ".join(caption_tokens(r)) for r in references[key]]
        if not refs:
            raise ValueError(f"caption_scores: image {key!r} has no reference captions")
        gts[key] = refs
        res[key] = [" ".join(caption_tokens(predictions[key]))]
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    out = {"CIDEr": float(cider)}
    out.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    if any(math.isnan(v) for v in out.values()):  # pragma: no cover - guards against degenerate corpora
        raise ValueError(f"caption_scores produced NaN: {out}")
    return out


def corpus_bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (NLTK, method1 smoothing) over :func:`caption_tokens`; a quick training-time signal.

    Reported as ``caption_bleu4_nltk``. It is not COCO's ``Bleu_4`` (:func:`caption_scores`,
    pycocoevalcap, no smoothing), which ``eval_caption.py`` reports: the two differ on the same captions.

    Benchmarks report :func:`caption_scores` instead.
    """
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    hyps = [caption_tokens(p) for p in predictions]
    refs = [[caption_tokens(r) for r in rs] for rs in references]
    return float(corpus_bleu(refs, hyps, smoothing_function=SmoothingFunction().method1))

