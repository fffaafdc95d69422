"""Example inputs for the demo, drawn by the synthetic scene generator when the demo starts.

Nothing binary ships with the library: each start renders a few held-out scenes (the ``test``
split of seed 0, the images the quickstart evaluates on and never trains on) into a folder, and
pairs each with a task shortcut and a message whose answer the scene itself knows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from minigpt.datasets.synthetic import make_example

EXAMPLE_SEED = 0
EXAMPLE_SPLIT = "test"


@dataclass(frozen=True)
class DemoExample:
    """One example row: an image file, a task shortcut (a key of ``DEMO_TASKS`` or ``"chat"``), a message.

    ``expected`` is the scene's own answer where it has a single one (a colour, a count, an
    expression), for reading what a trained model says against the truth.
    """

    image_path: str
    task: str
    message: str
    expected: Optional[str] = None


def write_examples(folder: str, image_size: int = 64) -> List[DemoExample]:
    """Render the example scenes into ``folder`` (created if needed) as PNG; return the example rows.

    ``image_size`` is the side the scenes are drawn at; 64 is what the quickstart model was
    trained on, so its answers on them are the ones its evaluation measured.
    """
    os.makedirs(folder, exist_ok=True)
    scenes = [make_example(EXAMPLE_SEED, EXAMPLE_SPLIT, i, image_size=image_size) for i in range(5)]
    paths = []
    for ex in scenes:
        path = os.path.join(folder, f"scene_{ex.index:03d}.png")
        ex.image.save(path)
        paths.append(path)

    first_ref = [ex.refs()[0] for ex in scenes]
    rows: List[DemoExample] = []
    for ex, path in zip(scenes, paths):  # a colour question, from the first scene that has one
        colour = next((q for q in ex.questions if q["question_type"] == "color"), None)
        if colour is not None:
            rows.append(DemoExample(path, "vqa", colour["question"], colour["answer"]))
            break
    busiest = max(range(len(scenes)), key=lambda i: len(scenes[i].scene.objects))
    count = next(q for q in scenes[busiest].questions if q["question_type"] == "count")
    rows.append(DemoExample(paths[busiest], "vqa", count["question"], count["answer"]))
    rows.append(
        DemoExample(
            paths[2],
            "refer",
            f"give me the location of {first_ref[2]['expression']}",
            first_ref[2]["box_text"],
        )
    )
    rows.append(
        DemoExample(
            paths[3], "identify", f"what is this {first_ref[3]['box_text']}", first_ref[3]["expression"]
        )
    )
    rows.append(DemoExample(paths[4], "caption", "", scenes[4].caption))
    rows.append(DemoExample(paths[0], "grounding", ""))
    return rows
