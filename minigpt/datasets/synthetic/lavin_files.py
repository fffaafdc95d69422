"""LaVIN's data, synthetic: ScienceQA-format problems (image and text-only) and Alpaca-format instructions.

Written by :func:`~minigpt.datasets.synthetic.writers.generate_synthetic_dataset` under the
synthetic root, where the ``synthetic_scienceqa`` and ``synthetic_alpaca`` builders read:

* ``sqa/problems.json`` and ``sqa/pid_splits.json``; an image problem's ``image`` names the
  generated image itself (``train/000012.jpg`` under ``images/``, read with ``image_path: "{image}"``:
  13k per-problem folders would cost more than the rest of the generation). Each generated image gives one multiple
  choice problem about its shapes (its first conversation question, with up to four choices), without
  a hint (IMG); as many text-only problems come from their own seeded streams: the larger of two
  digits, the word first in a dictionary, the word that names a colour (no context: NO), counting the
  words of a short sentence and opposite directions on a map (a hint: TXT). Train images and problems form ``train``; the test ones are
  cut into ``val`` (every fifth) and ``test``. Every problem has a lecture and a solution.
* ``alpaca/alpaca_data_<split>.json``: one text-only instruction per four images of the split
  (reverse words, sort numbers, add numbers, capitalise a word).

Everything is a function of ``(seed, split, index)``, so the files do not depend on the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from minigpt.datasets.synthetic.files import atomic_write_json
from minigpt.datasets.synthetic.real_rows import multiple_choice
from minigpt.datasets.synthetic.scenes import COLOURS, KINDS, Example
from minigpt.datasets.synthetic.streams import choice, randint, sample, shuffled, stream_rng

SCIENCEQA_DIR = "sqa"  # not scienceqa/: the real layout puts the released layout there
SCIENCEQA_FILES = {"problems": f"{SCIENCEQA_DIR}/problems.json", "pid_splits": f"{SCIENCEQA_DIR}/pid_splits.json"}
ALPACA_FILE = "alpaca/alpaca_data_{split}.json"
VAL_EVERY = 5  # every fifth held-out image and text problem is in `val`, the others in `test`
ALPACA_EVERY = 4  # one Alpaca instruction per four images of a split

_LECTURES = {
    "color": "Every shape in a picture has one colour; look at the shape the question names.",
    "shape": "A circle is round, a square has four equal sides and a triangle has three sides.",
    "count": "To count the shapes, look at each one once and add them up.",
    "exist": "A shape is in the picture when one of that kind and colour can be seen.",
    "position": "Left, right, above and below compare where the centres of two shapes are.",
    "absent": "A question can name a shape the picture does not have; then the answer says so.",
}
# Text-only problems use words the shipped tokenizer keeps whole (one token each) and answers a small model
# can read off the question: a random tiny LLM learns them from a few thousand examples, where multi-token
# weekdays, two-digit numbers and story sums with shuffled options stayed near chance.
_DICTIONARY = ("above", "cat", "dog", "green", "house", "left", "no", "orange", "purple", "red", "small",
               "tree", "yes")  # first letters all differ
_WORDS = ("red", "blue", "green", "circle", "square", "small", "big", "cat", "dog", "tree", "house", "road")
_NOT_COLOURS = ("circle", "square", "triangle", "small", "big", "cat", "dog", "tree", "house", "road")
_OPPOSITES = {"left": "right", "right": "left", "above": "below", "below": "above"}
COUNT_OPTIONS = (2, 3, 4)  # sentence lengths, listed in this order as the choices


YES_NO = ["yes", "no"]


def image_problem(ex: Example) -> Dict[str, Any]:
    """The ScienceQA-format problem of one generated image: its first conversation question, multiple choice.

    A yes/no question lists ``yes, no`` in that order, as the text-only direction problems do; the
    right answer's place still varies, as the generator balances yes and no. Rotated choices would
    make the answer letter the exclusive-or of the seen answer and the choice order, which a random
    tiny LLM did not learn in the quickstart's steps (it answered one letter; docs/lavin.md).
    """
    q = ex.questions[ex.conversation_order[0]]
    choices = list(YES_NO) if q["answer"] in YES_NO else multiple_choice(ex, q)
    return {
        "question": q["question"][0].upper() + q["question"][1:],
        "choices": choices,
        "answer": choices.index(q["answer"]),
        "hint": "",
        "image": ex.image_name,
        "task": "closed choice",
        "grade": f"grade{1 + ex.index % 6}",
        "subject": "natural science",
        "topic": "shapes",
        "category": q["question_type"],
        "lecture": _LECTURES[q["question_type"]],
        "solution": f"The picture shows {ex.caption}",
    }


# -- text-only problems: (question, hint, choices, right choice, lecture, solution, subject, grade) --------
Text = Tuple[str, str, List[str], str, str, str, str, int]


def _compare(rng) -> Text:
    a, b = sample(rng, list(range(10)), 2)
    big = max(a, b)
    return ("Which number is larger?", "", [str(a), str(b)], str(big),
            "Counting goes 0, 1, 2, ... 9: a number that comes later is larger.",
            f"{big} is larger than {min(a, b)}.", "natural science", 1 + randint(rng, 0, 2))


def _alphabet(rng) -> Text:
    words = sample(rng, list(_DICTIONARY), 2)
    first = min(words)
    return ("Which word would you find first in a dictionary?", "", words, first,
            "A dictionary lists words in alphabetical order: compare the first letters.",
            f"{first} comes first in alphabetical order.", "language science", 2 + randint(rng, 0, 3))


def _count_words(rng) -> Text:
    n = choice(rng, COUNT_OPTIONS)
    sentence = " ".join(choice(rng, _WORDS) for _ in range(n))
    return ("How many words are in the sentence?", f"Sentence: {sentence}.", [str(o) for o in COUNT_OPTIONS],
            str(n), "Words are separated by spaces; count each one once.", f"The sentence has {n} words.",
            "language science", 7 + randint(rng, 0, 2))


def _colour_word(rng) -> Text:
    colour, other = choice(rng, list(COLOURS)), choice(rng, _NOT_COLOURS)
    return ("Which word names a colour?", "", shuffled(rng, [colour, other]), colour,
            "Red, green, blue, yellow, purple and orange are colours; shapes and things are not.",
            f"{colour} is a colour.", "language science", 1 + randint(rng, 0, 2))


def _directions(rng) -> Text:
    a = choice(rng, list(_OPPOSITES))
    b = _OPPOSITES[a] if randint(rng, 0, 1) else choice(rng, [d for d in _OPPOSITES if d not in (a, _OPPOSITES[a])])
    right = "yes" if b == _OPPOSITES[a] else "no"
    return (f"Is {b} the opposite of {a}?", "A map shows left, right, above and below.", ["yes", "no"], right,
            "On a map, left is opposite right and above is opposite below.",
            f"The opposite of {a} is {_OPPOSITES[a]}.", "social science", 3 + randint(rng, 0, 3))


_TEXT_KINDS: Tuple[Callable[[Any], Text], ...] = (_compare, _alphabet, _count_words, _colour_word, _directions)


def text_problem(seed: int, split: str, index: int) -> Dict[str, Any]:
    """Text-only problem ``index`` of ``split`` (``train`` or ``test``): kind and content drawn from its own stream."""
    rng = stream_rng(seed, split, index, "scienceqa_text")
    # drawn, not cycled by index: a cycle of five would line up with VAL_EVERY and keep a kind out of `test`
    kind = choice(rng, _TEXT_KINDS)
    question, hint, choices, right, lecture, solution, subject, grade = kind(rng)
    return {
        "question": question, "choices": choices, "answer": choices.index(right), "hint": hint, "image": None,
        "task": "closed choice", "grade": f"grade{grade}", "subject": subject, "topic": kind.__name__.strip("_"),
        "category": kind.__name__.strip("_"), "lecture": lecture, "solution": solution,
    }


# -- Alpaca --------------------------------------------------------------------------------------------
def alpaca_entry(seed: int, split: str, index: int) -> Dict[str, str]:
    """One Alpaca-format instruction: ``{instruction, input, output}``."""
    rng = stream_rng(seed, split, index, "alpaca")
    kind = index % 4
    if kind == 0:
        words = [choice(rng, _WORDS) for _ in range(randint(rng, 2, 5))]
        return {"instruction": "Reverse the order of the words.", "input": " ".join(words),
                "output": " ".join(reversed(words))}
    if kind == 1:
        numbers = [randint(rng, 1, 99) for _ in range(randint(rng, 3, 5))]
        return {"instruction": "Sort the numbers from smallest to largest.", "input": ", ".join(map(str, numbers)),
                "output": ", ".join(map(str, sorted(numbers)))}
    if kind == 2:
        a, b = randint(rng, 1, 50), randint(rng, 1, 50)
        return {"instruction": f"What is {a} plus {b}?", "input": "", "output": str(a + b)}
    word = choice(rng, list(_WORDS) + list(COLOURS) + list(KINDS))
    return {"instruction": "Write the word in capital letters.", "input": word, "output": word.upper()}


# -- the files -----------------------------------------------------------------------------------------
def write_lavin_files(
    root: Path, seed: int, image_problems: Dict[str, List[Dict[str, Any]]], n_images: Dict[str, int]
) -> Dict[str, Any]:
    """Write the ScienceQA-format split and the Alpaca sets under ``root``; returns ``{files, counts}``.

    ``image_problems[split]`` holds :func:`image_problem` of each image of ``split`` in index order.
    """
    problems: Dict[str, Dict[str, Any]] = {}
    splits: Dict[str, List[str]] = {"train": [], "val": [], "test": []}
    pid = 0
    for source in ("train", "test"):
        n = n_images[source]
        for index in range(n):  # image and text problems alternate, so any first part of a split mixes both
            for kind in ("image", "text"):
                out = "train" if source == "train" else ("val" if index % VAL_EVERY == VAL_EVERY - 1 else "test")
                problem = image_problems[source][index] if kind == "image" else text_problem(seed, source, index)
                problems[str(pid)] = {**problem, "split": out}
                splits[out].append(str(pid))
                pid += 1
    atomic_write_json(root / SCIENCEQA_FILES["problems"], problems)
    atomic_write_json(root / SCIENCEQA_FILES["pid_splits"], splits)
    files: Dict[str, Any] = {"scienceqa_problems": SCIENCEQA_FILES["problems"],
                             "scienceqa_pid_splits": SCIENCEQA_FILES["pid_splits"]}
    counts = {f"scienceqa_{split}": len(pids) for split, pids in splits.items()}
    for split, n in n_images.items():
        rows = [alpaca_entry(seed, split, i) for i in range(max(1, n // ALPACA_EVERY) if n else 0)]
        rel = ALPACA_FILE.format(split=split)
        atomic_write_json(root / rel, rows)
        files[f"alpaca_{split}"] = rel
        counts[f"alpaca_{split}"] = len(rows)
    return {"files": files, "counts": counts}
