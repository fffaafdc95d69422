"""Metric definitions: VQA accuracy, box parsing and IoU, caption BLEU."""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

from minigpt.common import grounding

_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:']")
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_ARTICLES = {"a", "an", "the"}
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_CONTRACTIONS = {
    "dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
    "wont": "won't", "didnt": "didn't", "wasnt": "wasn't", "werent": "weren't", "hasnt": "hasn't",
    "havent": "haven't", "shouldnt": "shouldn't", "couldnt": "couldn't", "wouldnt": "wouldn't",
    "im": "i'm", "ive": "i've", "youre": "you're", "thats": "that's", "whats": "what's",
}


def normalize_answer(text: str) -> str:
    """The VQA evaluation's answer normalisation: case, punctuation, number words, articles, contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    words = []
    for w in text.split():
        w = _CONTRACTIONS.get(w, w)
        w = _PERIOD.sub("", w)
        if "'" not in w:
            w = _PUNCT.sub("", w)
        else:
            w = _PUNCT.sub("", w.replace("'", "\0")).replace("\0", "'")
        w = _NUMBERS.get(w, w)
        if w and w not in _ARTICLES:
            words.append(w)
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """min(#humans who said it / 3, 1), averaged over the leave-one-out subsets of the answers."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        scores.append(min(1.0, sum(g == pred for g in others) / 3.0))
    return sum(scores) / len(scores)


def parse_box(text: str) -> Optional[List[int]]:
    """The first ``{<x1><y1><x2><y2>}`` box in text (0-100 grid), or None; see ``common.grounding``."""
    return grounding.parse_box(text)


def grid_to_pixels(box: Sequence[float], width: float, height: float) -> List[float]:
    """Grid box -> pixel box; see ``minigpt.common.grounding``."""
    return grounding.grid_to_pixels(box, width, height)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes; see ``minigpt.common.grounding``."""
    return grounding.iou(a, b)


_NON_WORD = re.compile(r"[^\w\s']")


def caption_tokens(text: str) -> List[str]:
    """Lowercased words with punctuation dropped, as the COCO caption evaluation tokenises before scoring."""
    return _NON_WORD.sub(" ", text.lower()).split()


def corpus_bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (NLTK) over :func:`caption_tokens`, so "circle." and "circle" are the same word."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    hyps = [caption_tokens(p) for p in predictions]
    refs = [[caption_tokens(r) for r in rs] for rs in references]
    return float(corpus_bleu(refs, hyps, smoothing_function=SmoothingFunction().method1))
