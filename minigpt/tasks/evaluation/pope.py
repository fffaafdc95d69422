"""POPE's scoring of yes/no object questions: how an answer is read, and the five figures of a split.

POPE (Li et al., 2023, "Evaluating Object Hallucination in Large Vision-Language Models") asks
"Is there a <object> in the image?" about objects present and absent in equal numbers; a model that
answers "yes" about absent objects hallucinates them. Its ``evaluate.py`` reads each answer and
reports accuracy, precision, recall, F1 and the share of "yes"; this module does the same.
"""

from __future__ import annotations

from typing import Dict, Sequence

POPE_NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def pope_answer(prediction: str) -> str:
    """An answer read as POPE's ``evaluate.py`` reads it: ``"no"`` or ``"yes"``.

    Only the first sentence counts (the text before the first ``.``); commas are dropped and the rest
    is split on spaces; the answer is ``no`` when one of the words is exactly ``No``, ``no`` or
    ``not``, and ``yes`` otherwise (so an empty or off-topic answer counts as ``yes``).
    """
    first = prediction.split(".", 1)[0].replace(",", "")
    return "no" if any(word in POPE_NEGATIVE_WORDS for word in first.split(" ")) else "yes"


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> Dict[str, float]:
    """POPE's five figures from ``yes``/``no`` predictions and labels, ``yes`` being the positive class.

    ``accuracy``, ``precision`` and ``recall`` of ``yes``, their ``f1`` and ``yes_ratio`` (the share of
    ``yes`` answers). Where POPE's script would divide by zero (no ``yes`` predicted, or no ``yes``
    label), the figure is 0.0.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"pope_metrics: {len(predictions)} predictions for {len(labels)} labels")
    if not predictions:
        raise ValueError("pope_metrics needs at least one answer")
    for value in (*predictions, *labels):
        if value not in ("yes", "no"):
            raise ValueError(f"pope_metrics takes 'yes'/'no' values, got {value!r}")
    pairs = list(zip(predictions, labels))
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    positives = sum(t == "yes" for t in labels)
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(pairs),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(p == "yes" for p in predictions) / len(predictions),
    }
