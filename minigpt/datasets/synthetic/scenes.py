"""Scenes of coloured shapes and the texts that describe them.

A scene is sampled, rendered and described from random streams derived from
``(seed, split, index)`` alone, so any image can be regenerated on its own, in any process, in any
order: the output does not depend on how the work is split across workers. Scalar draws use only
``random.Random.random()`` and ``getrandbits`` (whose sequences Python promises to keep), so a seed
gives the same scene on every supported Python version.

Four independent streams per image:

* ``"scene"`` — number of shapes, their kinds, colours and boxes;
* ``"pixels"`` — background gradient and noise;
* ``"text"`` — which questions are asked and the order of conversation turns;
* ``"absent"`` — what is asked about that the picture does not hold (:mod:`.absent`).

Texts can therefore be produced without rendering a single pixel (see :func:`iter_texts`).
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from minigpt.common import grounding
from minigpt.datasets.synthetic.absent import absent_question, absent_referent
from minigpt.datasets.synthetic.streams import balanced_coin as _balanced_coin
from minigpt.datasets.synthetic.streams import choice as _choice
from minigpt.datasets.synthetic.streams import randint as _randint
from minigpt.datasets.synthetic.streams import sample as _sample
from minigpt.datasets.synthetic.streams import shuffled as _shuffled
from minigpt.datasets.synthetic.streams import stream_rng

KINDS: Tuple[str, ...] = ("circle", "square", "triangle")

# Saturated and far apart in RGB (closest pair, yellow/orange, is ~100 apart) so a JPEG round trip
# cannot turn one into another.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 220),
    "yellow": (240, 220, 30),
    "purple": (135, 50, 185),
    "orange": (245, 120, 20),
}

# 3x3 grid of the image, row-major from the top left, named by where a box centre falls.
POSITION_WORDS: Tuple[Tuple[str, str, str], ...] = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)

QUESTION_TYPES: Tuple[str, ...] = ("color", "shape", "count", "exist", "position", "absent")
NUMBER_WORDS: Tuple[str, ...] = ("zero", "one", "two", "three")

MIN_SHAPES, MAX_SHAPES = 1, 3
MIN_SIDE_FRAC, MAX_SIDE_FRAC = 0.20, 0.38
BOX_GAP = 2  # pixels of background between any two boxes
POSITION_MIN_DELTA = 4.0  # centres closer than this along an axis make "left of"/"above" ambiguous
MIN_BACKGROUND_DISTANCE = 120.0  # RGB distance every background pixel keeps from every shape colour

# -- scenes --------------------------------------------------------------------------------------
@dataclass
class Scene:
    """One image's content: its size and objects ``{"kind", "colour", "box": [x1, y1, x2, y2]}``.

    Boxes are in pixels with ``x2``/``y2`` exclusive, so ``x2 - x1`` is the width.
    """

    width: int
    height: int
    objects: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "objects": [
                {"kind": o["kind"], "colour": o["colour"], "box": list(o["box"])} for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Scene":
        return cls(width=int(d["width"]), height=int(d["height"]), objects=[dict(o) for o in d["objects"]])


def side_range(image_size: int) -> Tuple[int, int]:
    """Smallest and largest box side, in pixels, for a square image of ``image_size``."""
    lo = max(4, round(MIN_SIDE_FRAC * image_size))
    hi = max(lo, round(MAX_SIDE_FRAC * image_size))
    return lo, hi


def boxes_apart(a: Sequence[int], b: Sequence[int], gap: int = BOX_GAP) -> bool:
    """True when boxes ``a`` and ``b`` leave at least ``gap`` pixels between them along some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def sample_scene(rng: random.Random, image_size: int = 64) -> Scene:
    """Draw 1-3 shapes with unique (colour, kind) pairs on non-overlapping boxes."""
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    pairs = [(c, k) for c in COLOURS for k in KINDS]
    n = _randint(rng, MIN_SHAPES, MAX_SHAPES)
    chosen = _sample(rng, pairs, n)
    lo, hi = side_range(image_size)
    # Rejection sampling; three boxes of the largest side always fit in two rows, so a restart
    # (rare) finds a layout quickly.
    while True:
        boxes: List[List[int]] = []
        for _ in range(n):
            for _attempt in range(100):
                side = _randint(rng, lo, hi)
                x1 = _randint(rng, 0, image_size - side)
                y1 = _randint(rng, 0, image_size - side)
                box = [x1, y1, x1 + side, y1 + side]
                if all(boxes_apart(box, other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == n:
            break
    objects = [{"kind": k, "colour": c, "box": b} for (c, k), b in zip(chosen, boxes)]
    return Scene(width=image_size, height=image_size, objects=objects)


# -- rendering -----------------------------------------------------------------------------------
def _light_colour(rng: random.Random) -> Tuple[float, float, float]:
    """A pale, washed-out colour (HSV value 0.84-0.97, saturation <= 0.16)."""
    h = rng.random()
    s = 0.03 + 0.13 * rng.random()
    v = 0.84 + 0.13 * rng.random()
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (rgb[0] * 255.0, rgb[1] * 255.0, rgb[2] * 255.0)


@functools.lru_cache(maxsize=8)
def _pixel_grid(width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def render_background(rng: random.Random, width: int, height: int) -> Image.Image:
    """A light, low-saturation linear gradient in a random direction with +-4 per-pixel noise (RGB)."""
    c0 = np.asarray(_light_colour(rng), dtype=np.float32)[:, None, None]
    c1 = np.asarray(_light_colour(rng), dtype=np.float32)[:, None, None]
    angle = 2.0 * math.pi * rng.random()
    cos, sin = math.cos(angle), math.sin(angle)
    # The projection's extremes sit at two image corners, so the gradient spans the whole image.
    corners = [0.0, (width - 1) * cos, (height - 1) * sin, (width - 1) * cos + (height - 1) * sin]
    lo, span = min(corners), max(max(corners) - min(corners), 1e-6)
    xs, ys = _pixel_grid(width, height)
    t = xs * (cos / span) + ys * (sin / span) - lo / span  # [H, W] in [0, 1]
    n = 3 * width * height
    noise = np.frombuffer(rng.getrandbits(8 * n).to_bytes(n, "little"), dtype=np.uint8).reshape(
        3, height, width
    )
    # Channel-first [3, H, W] keeps numpy's inner loops long; PIL merges the planes back to RGB.
    img = t * (c1 - c0)
    img += c0 - 3.5  # with the +0.5 rounding offset folded in, noise % 9 gives -4..+4
    img += noise % 9
    np.clip(img, 0, 255, out=img)
    planes = img.astype(np.uint8)
    return Image.merge(
        "RGB", [Image.frombuffer("L", (width, height), p.tobytes(), "raw", "L", 0, 1) for p in planes]
    )


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, colour: str, box: Sequence[int]) -> None:
    """Fill ``box`` (x2, y2 exclusive) with a shape that touches all four sides of it."""
    x1, y1, x2, y2 = box
    fill = COLOURS[colour]
    if kind == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif kind == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif kind == "triangle":
        draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2.0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")


def render_scene(scene: Scene, rng: random.Random) -> Image.Image:
    """Paint ``scene`` onto a fresh background drawn from ``rng``; returns an RGB PIL image."""
    img = render_background(rng, scene.width, scene.height)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        draw_shape(draw, obj["kind"], obj["colour"], obj["box"])
    return img


# -- text ----------------------------------------------------------------------------------------
def box_centre(box: Sequence[float]) -> Tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def position_word(box: Sequence[float], width: int, height: int) -> str:
    """The 3x3-grid word ("top left", ..., "centre", ..., "bottom right") for a box centre."""
    cx, cy = box_centre(box)
    col = min(2, max(0, int(cx * 3 / width)))
    row = min(2, max(0, int(cy * 3 / height)))
    return POSITION_WORDS[row][col]


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def object_name(obj: Dict[str, Any]) -> str:
    return f"{obj['colour']} {obj['kind']}"


def referring_expression(obj: Dict[str, Any]) -> str:
    """The expression "the {colour} {kind}": unique within a scene because (colour, kind) pairs are."""
    return f"the {object_name(obj)}"


def box_to_grid(box: Sequence[float], w: int, h: int) -> List[int]:
    """Pixel box -> MiniGPT-v2's 0-100 grid: ``round(x / w * 100)`` per coordinate."""
    return grounding.box_to_grid(box, w, h)


def format_box(grid_box: Sequence[int]) -> str:
    """Grid box -> the text MiniGPT-v2 reads and writes, ``{<x1><y1><x2><y2>}``."""
    return grounding.format_grid_box(grid_box)


def left_to_right(scene: Scene) -> List[Dict[str, Any]]:
    return sorted(scene.objects, key=lambda o: (box_centre(o["box"])[0], box_centre(o["box"])[1]))


def _noun_phrase(obj: Dict[str, Any]) -> str:
    name = object_name(obj)
    return f"{article(name)} {name}"


def _describe(scene: Scene, phrase_of: Callable[[Dict[str, Any]], str]) -> str:
    parts = []
    for obj in left_to_right(scene):
        parts.append(f"{phrase_of(obj)} at the {position_word(obj['box'], scene.width, scene.height)}")
    n = len(parts)
    listed = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "shape" if n == 1 else "shapes"
    return f"{NUMBER_WORDS[n]} {noun}: {listed}."


def make_caption(scene: Scene) -> str:
    """e.g. "two shapes: a red circle at the top left and a blue square at the bottom right." """
    return _describe(scene, _noun_phrase)


def make_grounded_caption(scene: Scene) -> str:
    """The caption with each shape's phrase grounded: "one shape: <p>a red circle</p> {<9><9><39><39>} at the top left." """

    def grounded(obj: Dict[str, Any]) -> str:
        grid = box_to_grid(obj["box"], scene.width, scene.height)
        return grounding.format_phrase_boxes(_noun_phrase(obj), [grid])

    return _describe(scene, grounded)


def answer_position(a: Dict[str, Any], b: Dict[str, Any], relation: str) -> bool:
    """Whether object ``a`` stands in ``relation`` to ``b``, judged by box centres (y grows down)."""
    (ax, ay), (bx, by) = box_centre(a["box"]), box_centre(b["box"])
    if relation == "to the left of":
        return ax < bx
    if relation == "to the right of":
        return ax > bx
    if relation == "above":
        return ay < by
    if relation == "below":
        return ay > by
    raise ValueError(f"unknown relation {relation!r}")


POSITION_RELATIONS: Tuple[str, ...] = ("to the left of", "to the right of", "above", "below")


def _relation_axis(relation: str) -> int:
    return 0 if relation in ("to the left of", "to the right of") else 1


def make_questions(scene: Scene, rng: random.Random, exist_yes: bool, position_yes: bool,
                   absent_rng: Optional[random.Random] = None) -> List[Dict[str, str]]:
    """One question of each type that applies to ``scene``: ``{"question", "answer", "question_type"}``.

    ``exist_yes`` / ``position_yes`` fix the yes/no answer of those types, so a caller can keep
    them balanced across images. Order is always color, shape, count, exist, position, absent; the
    ``absent`` question (about something not in the picture) is drawn from ``absent_rng`` and asked
    only when one is given.
    """
    objs = scene.objects
    kinds = [o["kind"] for o in objs]
    colours = [o["colour"] for o in objs]
    out: List[Dict[str, str]] = []

    unique_kinds = [k for k in KINDS if kinds.count(k) == 1]
    if unique_kinds:
        kind = _choice(rng, unique_kinds)
        colour = next(o["colour"] for o in objs if o["kind"] == kind)
        out.append({"question": f"what color is the {kind}?", "answer": colour, "question_type": "color"})

    unique_colours = [c for c in COLOURS if colours.count(c) == 1]
    if unique_colours:
        colour = _choice(rng, unique_colours)
        kind = next(o["kind"] for o in objs if o["colour"] == colour)
        out.append(
            {"question": f"what shape is the {colour} object?", "answer": kind, "question_type": "shape"}
        )

    out.append({"question": "how many shapes are there?", "answer": str(len(objs)), "question_type": "count"})

    present = {(o["colour"], o["kind"]) for o in objs}
    if exist_yes:
        colour, kind = _choice(rng, sorted(present))
    else:
        # An absent pair that shares a colour or a kind with something in the picture, so the
        # answer needs both attributes checked together.
        near = sorted(
            (c, k) for c in COLOURS for k in KINDS if (c, k) not in present and (c in colours or k in kinds)
        )
        colour, kind = _choice(rng, near)
    name = f"{colour} {kind}"
    out.append(
        {
            "question": f"is there {article(name)} {name}?",
            "answer": "yes" if exist_yes else "no",
            "question_type": "exist",
        }
    )

    candidates = []
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i == j:
                continue
            ca, cb = box_centre(a["box"]), box_centre(b["box"])
            for relation in POSITION_RELATIONS:
                axis = _relation_axis(relation)
                if (
                    abs(ca[axis] - cb[axis]) >= POSITION_MIN_DELTA
                    and answer_position(a, b, relation) == position_yes
                ):
                    candidates.append((i, j, relation))
    if candidates:
        i, j, relation = _choice(rng, candidates)
        out.append(
            {
                "question": f"is the {object_name(objs[i])} {relation} the {object_name(objs[j])}?",
                "answer": "yes" if position_yes else "no",
                "question_type": "position",
            }
        )
    if absent_rng is not None:
        out.append(absent_question(scene.objects, absent_rng, KINDS, tuple(COLOURS)))
    return out


# -- one example, end to end ---------------------------------------------------------------------
@dataclass
class Example:
    """Everything generated for one image: scene, caption, VQA questions, conversation order, refs."""

    split: str
    index: int
    scene: Scene
    caption: str
    questions: List[Dict[str, str]]
    conversation_order: List[int]  # indices into ``questions``, shuffled for the LLaVA turns
    image: Optional[Image.Image] = None
    absent_ref: Optional[Tuple[str, str]] = None  # (expression of a shape not in the picture, its refusal)
    refer_absent: bool = False  # whether the conversation's [refer] turn asks for the absent shape

    @property
    def image_name(self) -> str:
        """Path relative to ``ROOT/images``, e.g. ``train/000000.jpg``."""
        return f"{self.split}/{self.index:06d}.jpg"

    def refer_turn(self) -> Tuple[str, str]:
        """The conversations' ``[refer]`` turn: an expression and its answer, a box or (for half the
        images, balanced) a refusal for a shape the picture lacks."""
        if self.refer_absent and self.absent_ref is not None:
            return self.absent_ref
        ref = self.refs()[self.index % len(self.scene.objects)]
        return ref["expression"], ref["box_text"]

    def refs(self) -> List[Dict[str, Any]]:
        """One referring expression per object with its box on the 0-100 grid and as text."""
        out = []
        for obj in self.scene.objects:
            grid = box_to_grid(obj["box"], self.scene.width, self.scene.height)
            out.append(
                {"expression": referring_expression(obj), "grid_box": grid, "box_text": format_box(grid)}
            )
        return out


def make_example(seed: int, split: str, index: int, image_size: int = 64, render: bool = True,
                 absent: bool = False) -> Example:
    """Generate image ``index`` of ``split``; pass ``render=False`` to skip the pixels.

    ``absent`` also asks about what the picture lacks (:mod:`.absent`): an ``absent`` question and,
    for the conversations, a ``[refer]`` turn that is refused for half the images.
    """
    scene = sample_scene(stream_rng(seed, split, index, "scene"), image_size)
    text_rng = stream_rng(seed, split, index, "text")
    absent_rng = stream_rng(seed, split, index, "absent")
    questions = make_questions(
        scene,
        text_rng,
        exist_yes=_balanced_coin(seed, split, index, "exist"),
        position_yes=_balanced_coin(seed, split, index, "position"),
        absent_rng=absent_rng if absent else None,
    )
    order = _shuffled(text_rng, range(len(questions)))
    image = render_scene(scene, stream_rng(seed, split, index, "pixels")) if render else None
    absent_ref = absent_referent(scene.objects, absent_rng, KINDS, tuple(COLOURS)) if absent else None
    refer_absent = absent and _balanced_coin(seed, split, index, "refer_absent")
    return Example(split, index, scene, make_caption(scene), questions, order, image, absent_ref, refer_absent)


def iter_examples(n: int, seed: int = 0, split: str = "train", image_size: int = 64, render: bool = False,
                  start: int = 0, absent: bool = False) -> Iterator[Example]:
    """Examples ``start .. start + n - 1`` of ``split``, identical to what the dataset writer stores."""
    for index in range(start, start + n):
        yield make_example(seed, split, index, image_size, render=render, absent=absent)


def iter_texts(n: int, seed: int = 0, split: str = "train", image_size: int = 64) -> Iterator[str]:
    """Every caption, question, answer and referring expression of the first ``n`` scenes."""
    for ex in iter_examples(n, seed, split, image_size, render=False):
        yield ex.caption
        for q in ex.questions:
            yield q["question"]
            yield q["answer"]
        for ref in ex.refs():
            yield ref["expression"]
