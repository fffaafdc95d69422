"""The synthetic world's POPE split: "Is there a <object> in the image?" about present and absent shapes.

POPE builds, for each image, as many questions about objects that are absent as about objects that
are present, and draws the absent ones three ways: ``random`` (uniformly among the absent objects),
``popular`` (the objects that appear most often in the whole split) and ``adversarial`` (the objects
that appear most often together with this image's objects). Here an object is a (colour, shape)
pair such as "red circle" (18 of them), counted over the held-out split's scenes. The rows are POPE's
own file layout, one JSON object a line: ``{"question_id", "image", "text", "label"}``, labels
``yes``/``no``.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Sequence

from minigpt.datasets.synthetic.files import atomic_write_bytes
from minigpt.datasets.synthetic.scenes import COLOURS, KINDS, Example, article, iter_examples, object_name
from minigpt.datasets.synthetic.streams import sample, stream_rng

POPE_SPLITS = ("random", "popular", "adversarial")
OBJECT_NAMES = tuple(f"{c} {k}" for c in COLOURS for k in KINDS)


def pope_question(name: str) -> str:
    return f"Is there {article(name)} {name} in the image?"


def pope_file(split: str) -> str:
    """Where a POPE split sits under the generator's root."""
    return f"pope/synthetic_pope_{split}.json"


def _present(ex: Example) -> List[str]:
    return [object_name(o) for o in ex.scene.objects]


def _ranked(scores: Counter, frequency: Counter) -> List[str]:
    """Object names by score, then overall frequency, then name (so ties never depend on dict order)."""
    return sorted(OBJECT_NAMES, key=lambda n: (-scores[n], -frequency[n], n))


def pope_rows(examples: Sequence[Example], split: str, seed: int) -> List[Dict[str, object]]:
    """The questions of one POPE ``split`` over ``examples``: each image's objects, then as many absent ones."""
    if split not in POPE_SPLITS:
        raise ValueError(f"unknown POPE split {split!r}; expected one of {', '.join(POPE_SPLITS)}")
    frequency: Counter = Counter(n for ex in examples for n in _present(ex))
    together: Dict[str, Counter] = {n: Counter() for n in OBJECT_NAMES}
    for ex in examples:
        for a, b in combinations(_present(ex), 2):
            together[a][b] += 1
            together[b][a] += 1
    rows: List[Dict[str, object]] = []
    for ex in examples:
        present = _present(ex)
        absent = [n for n in OBJECT_NAMES if n not in present]
        if split == "random":
            negatives = sample(stream_rng(seed, ex.split, ex.index, "pope"), absent, len(present))[: len(present)]
        else:
            scores = frequency if split == "popular" else sum((together[n] for n in present), Counter())
            negatives = [n for n in _ranked(scores, frequency) if n in absent][: len(present)]
        for name, label in [*((n, "yes") for n in present), *((n, "no") for n in negatives)]:
            rows.append(
                {"question_id": len(rows) + 1, "image": ex.image_name, "text": pope_question(name), "label": label}
            )
    return rows


def write_pope_splits(root: Path, seed: int, n_test: int, image_size: int) -> Dict[str, int]:
    """Write the three POPE files over the held-out split's ``n_test`` images; returns rows per file."""
    examples = list(iter_examples(n_test, seed, "test", image_size, render=False))
    counts = {}
    for split in POPE_SPLITS:
        rows = pope_rows(examples, split, seed)
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write_bytes(Path(root) / pope_file(split), text.encode("utf-8"))
        counts[f"pope_{split}"] = len(rows)
    return counts
