"""Draw the synthetic world's captions: the ``synthetic_shapes`` text-to-image generator.

The generator's captions are a small language ("two shapes: a red circle at the top left and a
blue square at the bottom right."), so a description can be parsed back to a :class:`Scene` and
painted with the generator's own renderer: each shape at the middle of its 3x3 grid cell, at the
middle of the generator's size range (shapes sharing a cell: smaller, in quarters of it). This is the offline stand-in for a diffusion pipeline in the
EasyGen route (the LLM writes ``<Img>caption</Img>``, a registered ``t2i`` draws it), with pictures
whose content is known.
"""

from __future__ import annotations

import logging
import re
from typing import List, Optional

from PIL import Image

from minigpt.common.t2i import TextToImage
from minigpt.datasets.synthetic.scenes import (
    COLOURS,
    KINDS,
    NUMBER_WORDS,
    POSITION_WORDS,
    Scene,
    render_scene,
    side_range,
)
from minigpt.datasets.synthetic.streams import stream_rng

logger = logging.getLogger(__name__)

_POSITIONS = [word for row in POSITION_WORDS for word in row]
# longest first, so "top left" wins over "top"
_POSITION_ALT = "|".join(sorted(map(re.escape, _POSITIONS), key=len, reverse=True))
_PHRASE = re.compile(
    rf"\b(?:a|an)\s+({'|'.join(COLOURS)})\s+({'|'.join(KINDS)})\s+at\s+the\s+({_POSITION_ALT})\b"
)
_HEAD = re.compile(rf"^\s*({'|'.join(NUMBER_WORDS)})\s+shapes?\s*:")


class CaptionParseError(ValueError):
    """A description that is not a caption of the synthetic language; the message quotes it."""


def parse_caption(text: str, image_size: int = 64) -> Scene:
    """The scene a synthetic caption describes, each shape centred in its grid cell.

    Shapes that share a cell (the generator names a cell by a box's centre, so two or three can)
    are drawn smaller, in quarters of it. Raises :class:`CaptionParseError` when no shape phrase
    is found or when the count word disagrees with the phrases.
    """
    phrases = _PHRASE.findall(text)
    if not phrases:
        raise CaptionParseError(f"no '<a|an> <colour> <shape> at the <position>' phrase in {text!r:.200}")
    head = _HEAD.match(text)
    if head is not None and NUMBER_WORDS.index(head.group(1)) != len(phrases):
        raise CaptionParseError(
            f"caption says {head.group(1)} shape(s) but describes {len(phrases)}: {text!r:.200}"
        )
    lo, hi = side_range(image_size)
    cell = image_size / 3.0
    in_cell = [sum(1 for p in phrases if p[2] == where) for _, _, where in phrases]
    seen: dict = {}
    objects = []
    for (colour, kind, where), sharing in zip(phrases, in_cell):
        row, col = divmod(_POSITIONS.index(where), 3)
        k = seen[where] = seen.get(where, -1) + 1
        if sharing == 1:  # alone in its cell: centred, at the middle of the size range
            side = (lo + hi) // 2
            cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        else:  # the generator puts up to three shapes' centres in one cell: quarter-cells, along its diagonal first
            side = max(4, int(cell / 2) - 1)
            qx, qy = ((0, 0), (1, 1), (1, 0))[k]
            cx, cy = (col + 0.25 + 0.5 * qx) * cell, (row + 0.25 + 0.5 * qy) * cell
        x1 = min(max(0, round(cx - side / 2)), image_size - side)
        y1 = min(max(0, round(cy - side / 2)), image_size - side)
        objects.append({"kind": kind, "colour": colour, "box": [x1, y1, x1 + side, y1 + side]})
    return Scene(width=image_size, height=image_size, objects=objects)


class SyntheticShapesTextToImage(TextToImage):
    """Paints synthetic captions (no weights), registered as ``synthetic_shapes`` under the ``t2i`` kind.

    ``image_size``: the square side in pixels. ``strict``: a description that does not parse is an
    error; otherwise (the default, for scoring a model's free text) it gets the background alone
    and a warning. The background is drawn from the description's seed (its position in the call
    when none is given), so a drawing is repeatable.
    """

    def __init__(self, image_size: int = 64, strict: bool = False) -> None:
        if int(image_size) < 16:
            raise ValueError(f"synthetic_shapes: image_size must be at least 16 pixels, got {image_size}")
        self.image_size = int(image_size)
        self.strict = bool(strict)

    def draw(self, descriptions: List[str], seeds: Optional[List[int]]) -> List[Image.Image]:
        out, unparsed = [], []
        for i, text in enumerate(descriptions):
            try:
                scene = parse_caption(text, self.image_size)
            except CaptionParseError:
                if self.strict:
                    raise
                unparsed.append(text)
                scene = Scene(self.image_size, self.image_size, [])
            seed = i if seeds is None else seeds[i]
            out.append(render_scene(scene, stream_rng(seed, "test", 0, "t2i_pixels")))
        if unparsed:
            logger.warning("synthetic_shapes: %d of %d descriptions do not parse, drawn as the background alone "
                           "(first: %r)", len(unparsed), len(descriptions), unparsed[0][:200])
        return out
