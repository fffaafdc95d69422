"""MiniGPT-v2's grounding language: task tags and boxes as text on a 0-100 grid.

A box is written ``{<x1><y1><x2><y2>}``: corners as integers from 0 to 100, each the pixel
coordinate divided by the image's width (x) or height (y), times 100. Grounded captions and
detections name what a box holds as ``<p>phrase</p> {<..><..><..><..>}``, several boxes of one
phrase joined by ``<delim>``. This module writes that text, reads it back from model output
(tolerating the ways generation breaks it), converts to pixels, scores boxes and draws them.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from PIL import Image, ImageDraw, ImageFont

GRID = 100  # the grid's largest coordinate

# MiniGPT-v2's task identifiers, written in front of the instruction ("[refer] the red circle").
TASK_TAGS: Dict[str, str] = {
    "vqa": "[vqa]",  # short answer to a question
    "caption": "[caption]",  # brief caption
    "refer": "[refer]",  # expression -> one box
    "grounding": "[grounding]",  # caption with a box after each phrase
    "identify": "[identify]",  # box -> what is in it
    "detection": "[detection]",  # class name -> every box of it
}
_TAG_RE = re.compile(r"^\s*(\[(?:" + "|".join(TASK_TAGS) + r")\])\s*")

Box = Sequence[float]
LabelledBox = Tuple[Optional[str], List[int]]


# -- task tags -----------------------------------------------------------------------------------
def task_prompt(task: str, text: str) -> str:
    """``"[task] text"``; ``task`` is a key of :data:`TASK_TAGS` (``"refer"``) or the tag itself."""
    tag = task if task in TASK_TAGS.values() else TASK_TAGS.get(task)
    if tag is None:
        raise KeyError(f"unknown task {task!r}; MiniGPT-v2's tasks are {', '.join(TASK_TAGS)}")
    return f"{tag} {text}"


def split_task_tag(text: str) -> Tuple[Optional[str], str]:
    """``("[refer]", "the red circle")`` from ``"[refer] the red circle"``; ``(None, text)`` without a tag."""
    m = _TAG_RE.match(text)
    if not m:
        return None, text
    return m.group(1), text[m.end() :]


# -- writing boxes -------------------------------------------------------------------------------
def _clip(v: float) -> int:
    return max(0, min(GRID, int(v)))


def box_to_grid(box_px: Box, width: float, height: float, rounding: str = "round") -> List[int]:
    """Pixel box ``[x1, y1, x2, y2]`` -> grid box, each corner rounded and clipped to 0-100.

    ``rounding="round"`` (Python's ``round``) is what this library's datasets write;
    ``"floor"`` is MiniGPT-v2's own (``int(x / w * 100)``), for data matching its released weights.
    """
    if len(box_px) != 4:
        raise ValueError(f"a box has 4 coordinates [x1, y1, x2, y2], got {list(box_px)!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    conv = round if rounding == "round" else int
    x1, y1, x2, y2 = box_px
    return [
        _clip(conv(x1 / width * GRID)),
        _clip(conv(y1 / height * GRID)),
        _clip(conv(x2 / width * GRID)),
        _clip(conv(y2 / height * GRID)),
    ]


def format_grid_box(grid_box: Sequence[int]) -> str:
    """Grid box -> ``{<x1><y1><x2><y2>}``; each value must be an integer from 0 to 100."""
    if len(grid_box) != 4:
        raise ValueError(f"a grid box has 4 coordinates, got {list(grid_box)!r}")
    for v in grid_box:
        if int(v) != v or not 0 <= v <= GRID:
            raise ValueError(f"grid coordinates are integers from 0 to {GRID}, got {list(grid_box)!r}")
    return "{" + "".join(f"<{int(v)}>" for v in grid_box) + "}"


def format_box(box_px: Box, width: float, height: float, rounding: str = "round") -> str:
    """Pixel box on a ``width`` x ``height`` image -> MiniGPT-v2's box text ``{<x1><y1><x2><y2>}``."""
    return format_grid_box(box_to_grid(box_px, width, height, rounding))


def format_phrase_boxes(phrase: str, grid_boxes: Iterable[Sequence[int]]) -> str:
    """``<p>phrase</p> {<..>}<delim>{<..>}``: a phrase and its boxes, as grounded captions write them."""
    boxes = [format_grid_box(b) for b in grid_boxes]
    if not boxes:
        raise ValueError(f"phrase {phrase!r} needs at least one box")
    return f"<p>{phrase}</p> " + "<delim>".join(boxes)


# -- reading boxes -------------------------------------------------------------------------------
_COORD = r"<\s*(-?\d{1,3})\s*>"
# Braces optional (the closing one is often cut off by max_new_tokens), spaces anywhere between.
BOX_PATTERN = re.compile(r"\{?\s*" + r"\s*".join([_COORD] * 4) + r"(?:\s*\})?")
# A phrase ends at </p>, or (when generation dropped the </p>) where its first box starts.
_PHRASE_RE = re.compile(r"<p>\s*(.*?)\s*(?:</p>|(?=\{?\s*<\s*-?\d{1,3}\s*>))")
_BETWEEN_RE = re.compile(r"^\s*(?:<delim>|,|;)?\s*$")  # what may sit between a phrase's boxes


def _normalise(values: Sequence[str]) -> List[int]:
    x1, y1, x2, y2 = (_clip(int(v)) for v in values)
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def parse_boxes(text: str) -> List[LabelledBox]:
    """Every box in ``text`` with the phrase it belongs to (or None), in order.

    Reads ``{<x1><y1><x2><y2>}`` boxes, tolerating a missing brace, spaces inside, values off the
    grid (clipped to 0-100) and swapped corners (reordered so x1 <= x2, y1 <= y2), and
    MiniGPT-v2's ``<p>phrase</p> {box}<delim>{box}`` form, also without its ``</p>``. A box gets
    the phrase right before it, or before the boxes it follows through ``<delim>``; a box with
    other text in between gets None. A run of fewer than 4 numbers is not a box.
    """
    phrases = [(m.start(), m.end(), m.group(1) or None) for m in _PHRASE_RE.finditer(text)]
    out: List[LabelledBox] = []
    label: Optional[str] = None
    anchor = 0  # where the text that must be empty for the current label to carry on starts
    pi = 0
    for m in BOX_PATTERN.finditer(text):
        while pi < len(phrases) and phrases[pi][0] < m.start():  # the last phrase tag before this box
            _, anchor, label = phrases[pi]
            pi += 1
        if label is not None and not _BETWEEN_RE.match(text[anchor : m.start()]):
            label = None
        out.append((label, _normalise(m.groups())))
        anchor = m.end()
    return out


def parse_box(text: str) -> Optional[List[int]]:
    """The first box in ``text`` on the 0-100 grid, or None (see :func:`parse_boxes` for the tolerance)."""
    boxes = parse_boxes(text)
    return boxes[0][1] if boxes else None


def grid_to_pixels(box: Box, width: float, height: float) -> List[float]:
    """Grid box -> pixel box on a ``width`` x ``height`` image (x scales with the width, y the height)."""
    return [box[0] / GRID * width, box[1] / GRID * height, box[2] / GRID * width, box[3] / GRID * height]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (continuous coordinates; empty -> 0)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# -- drawing -------------------------------------------------------------------------------------
# Distinct, saturated colours that stay readable under black label text.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)


def draw_boxes(
    image: Image.Image,
    boxes: Iterable[Union[LabelledBox, Box]],
    grid: bool = False,
    line_width: Optional[int] = None,
) -> Image.Image:
    """A copy of ``image`` (RGB, same size) with each box outlined and, if it has one, its label written.

    ``boxes`` holds ``(label or None, box)`` pairs, as :func:`parse_boxes` returns them, or bare
    boxes; in pixels, or on the 0-100 grid with ``grid=True``. Boxes with the same label share a
    colour. The label sits on a filled strip above the box, or inside it at the top edge.
    """
    out = image.convert("RGB").copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = line_width if line_width is not None else max(2, round(min(w, h) / 200))
    colours: Dict[Optional[str], Tuple[int, int, int]] = {}
    for n, item in enumerate(boxes):
        if len(item) == 2 and (item[0] is None or isinstance(item[0], str)):
            label, box = item  # type: ignore[misc]
        else:
            label, box = None, item
        if len(box) != 4:
            raise ValueError(f"box {n}: 4 coordinates [x1, y1, x2, y2] expected, got {list(box)!r}")
        x1, y1, x2, y2 = grid_to_pixels(box, w, h) if grid else [float(v) for v in box]
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        key = label if label is not None else f"#{n}"  # unlabelled boxes each get their own colour
        colour = colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        if label:
            left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
            tw, th = right - left + 4, bottom - top + 4
            ty = y1 - th if y1 - th >= 0 else y1 + width  # above the box, or inside it at the image's top
            tx = min(max(0.0, x1), max(0.0, w - tw))
            draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
            draw.text((tx + 2 - left, ty + 2 - top), label, fill=(0, 0, 0), font=font)
    return out
