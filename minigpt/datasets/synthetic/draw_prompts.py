"""Drawing requests of the synthetic world: "draw a red circle in the top left" with the image asked for.

Each request names one shape (kind and colour, from the scenes' palette) and one quadrant of the
image; its target image is that shape, alone, inside that quadrant, on the scenes' light background.
The answer is DreamLLM's ``<dream>``: the model is to draw the target where it writes it.
:mod:`minigpt.datasets.synthetic.draw_judge` reads colour and quadrant back from any drawn image.

Files (under the synthetic root; written when the generator's ``creation`` option asks for them)::

    creation/creation_<split>.json   [{"image", "prompt", "answer", "colour", "kind", "quadrant"}, ...]
    creation/images/<split>/<index>.png
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from PIL import Image, ImageDraw

from minigpt.common.constants import DREAM_TOKEN
from minigpt.datasets.synthetic.files import atomic_write_bytes, atomic_write_json
from minigpt.datasets.synthetic.scenes import COLOURS, KINDS, draw_shape, render_background
from minigpt.datasets.synthetic.streams import choice, randint, stream_rng

QUADRANTS: Tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
PROMPT_FORMS: Tuple[str, ...] = (
    "draw a {colour} {kind} in the {quadrant}",
    "paint a {colour} {kind} in the {quadrant} corner",
    "make a picture of a {colour} {kind} at the {quadrant}",
    "create an image with a {colour} {kind} in the {quadrant}",
)
SIDE_RANGE = (0.28, 0.42)  # the shape's side as a fraction of the image side
CREATION_DIR = "creation"


def creation_file(split: str) -> str:
    return f"{CREATION_DIR}/creation_{split}.json"


def quadrant_box(quadrant: str, size: int, rng: random.Random) -> List[int]:
    """A square box (x1, y1, x2, y2; x2, y2 exclusive) lying wholly inside ``quadrant`` of a ``size`` image."""
    half = size // 2
    side = randint(rng, max(3, int(SIDE_RANGE[0] * size)), max(3, int(SIDE_RANGE[1] * size)))
    side = min(side, half - 2)
    row, col = QUADRANTS.index(quadrant) // 2, QUADRANTS.index(quadrant) % 2
    x1 = col * half + randint(rng, 1, half - side - 1)
    y1 = row * half + randint(rng, 1, half - side - 1)
    return [x1, y1, x1 + side, y1 + side]


def make_request(seed: int, split: str, index: int, image_size: int) -> Tuple[Dict[str, Any], Image.Image]:
    """One drawing request and its target image, from this (seed, split, index)'s own stream."""
    rng = stream_rng(seed, split, index, "creation")
    colour, kind, quadrant = choice(rng, list(COLOURS)), choice(rng, KINDS), choice(rng, QUADRANTS)
    img = render_background(rng, image_size, image_size)
    draw_shape(ImageDraw.Draw(img), kind, colour, quadrant_box(quadrant, image_size, rng))
    prompt = choice(rng, PROMPT_FORMS).format(colour=colour, kind=kind, quadrant=quadrant)
    row = {"image": f"{CREATION_DIR}/images/{split}/{index:06d}.png", "prompt": prompt, "answer": DREAM_TOKEN,
           "colour": colour, "kind": kind, "quadrant": quadrant}
    return row, img


def write_creation_files(root: Path, seed: int, counts: Mapping[str, int], image_size: int) -> Dict[str, Any]:
    """Write ``counts[split]`` drawing requests per split under ``root``; the manifest's ``files`` and ``counts``."""
    files: Dict[str, str] = {}
    out_counts: Dict[str, int] = {}
    for split, n in counts.items():
        rows = []
        for index in range(int(n)):
            row, img = make_request(seed, split, index, image_size)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            atomic_write_bytes(Path(root) / row["image"], buf.getvalue())
            rows.append(row)
        atomic_write_json(Path(root) / creation_file(split), rows)
        files[f"creation_{split}"] = creation_file(split)
        out_counts[f"creation_{split}"] = len(rows)
    return {"files": files, "counts": out_counts}
