"""Questions about what a picture does not hold, and their answer: a refusal, ``there is no ...``.

A model that has only ever been asked about shapes that are there answers "what color is the
circle?" with a colour even when no circle is drawn, and draws a box for "the red square" when there
is none. The synthetic world therefore asks, for every image, one colour or shape question about an
absent shape or colour (question type ``absent``) and refers once to an absent (colour, shape) pair
(the ``[refer]`` turn that ends the conversations of half the images; the other half ask
for a shape that is there and get its box), both answered with :func:`refusal`.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Sequence, Tuple

from minigpt.datasets.synthetic.streams import choice

REFUSAL = "there is no {}"
# The conversations' grounding turn, in MiniGPT-v2's words.
REFER_TURN = "[refer] give me the location of {}"


def refusal(name: str) -> str:
    """The answer to a question about ``name`` when the picture holds none."""
    return REFUSAL.format(name)


def is_refusal(text: str) -> bool:
    """Whether an answer says the thing asked about is not there (it starts ``there is no``)."""
    return text.strip().lower().startswith(REFUSAL.format(""))


def absent_question(
    objects: Sequence[Dict[str, Any]], rng: random.Random, kinds: Sequence[str], colours: Sequence[str]
) -> Dict[str, str]:
    """A colour or shape question about something ``objects`` lack, answered with a refusal.

    Worded as the ``color``/``shape`` questions about shapes that are there ("what color is the
    circle?", "what shape is the red object?"), so only looking tells them apart. A kind of shape can
    be missing (when the picture lacks one of them) and a colour always is (a picture uses at most
    three of six); when both can be asked, each is asked half the time.
    """
    missing_kinds = [k for k in kinds if all(o["kind"] != k for o in objects)]
    missing_colours = [c for c in colours if all(o["colour"] != c for o in objects)]
    if missing_kinds and rng.random() < 0.5:
        kind = choice(rng, missing_kinds)
        return {"question": f"what color is the {kind}?", "answer": refusal(kind), "question_type": "absent"}
    colour = choice(rng, missing_colours)
    return {
        "question": f"what shape is the {colour} object?",
        "answer": refusal(f"{colour} object"),
        "question_type": "absent",
    }


def absent_referent(
    objects: Sequence[Dict[str, Any]], rng: random.Random, kinds: Sequence[str], colours: Sequence[str]
) -> Tuple[str, str]:
    """``("the <colour> <kind>", refusal)`` for a pair ``objects`` lack that shares a colour or a kind with one of them."""
    present = {(o["colour"], o["kind"]) for o in objects}
    near: List[Tuple[str, str]] = sorted(
        (c, k) for c in colours for k in kinds if (c, k) not in present and any(c == pc or k == pk for pc, pk in present)
    )
    colour, kind = choice(rng, near)
    return f"the {colour} {kind}", refusal(f"{colour} {kind}")
