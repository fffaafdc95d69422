"""The synthetic world's judge of drawn images: which palette colour dominates, and in which quadrant.

Background pixels of the synthetic world are pale (HSV saturation <= 0.16); shape colours are
saturated. The judge keeps the pixels whose spread between RGB channels is at least
``MIN_CHROMA``, gives each the nearest palette colour (:data:`~minigpt.datasets.synthetic.scenes.COLOURS`),
names the most frequent one, and the quadrant of that colour's pixel centroid. An image with too
few such pixels is judged ``none`` / ``none``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from minigpt.datasets.synthetic.draw_prompts import QUADRANTS
from minigpt.datasets.synthetic.scenes import COLOURS

MIN_CHROMA = 70.0  # 0-255 units: max(R, G, B) - min(R, G, B) of a shape pixel
MIN_FRACTION = 0.01  # of the image's pixels that must be shape-like for any verdict
NONE = "none"

_NAMES = list(COLOURS)
_PALETTE = np.asarray([COLOURS[c] for c in _NAMES], dtype=np.float32)  # [6, 3]


def judge_drawing(image: np.ndarray) -> Tuple[str, str]:
    """``image`` ``[H, W, 3]`` (uint8, or floats in [0, 1]) -> (dominant colour, quadrant), or ``none``s."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"judge_drawing takes an [H, W, 3] image, got shape {img.shape}")
    if img.max() <= 1.0:
        img = img * 255.0
    h, w = img.shape[:2]
    chroma = img.max(axis=-1) - img.min(axis=-1)
    ys, xs = np.nonzero(chroma >= MIN_CHROMA)
    if len(ys) < max(1, MIN_FRACTION * h * w):
        return NONE, NONE
    pixels = img[ys, xs]  # [n, 3]
    nearest = ((pixels[:, None, :] - _PALETTE[None]) ** 2).sum(-1).argmin(1)  # [n]
    winner = int(np.bincount(nearest, minlength=len(_NAMES)).argmax())
    mine = nearest == winner
    cy, cx = ys[mine].mean() + 0.5, xs[mine].mean() + 0.5
    quadrant = QUADRANTS[2 * int(cy >= h / 2) + int(cx >= w / 2)]
    return _NAMES[winner], quadrant
