"""VideoChat-Instruct-11K's layout from the synthetic scenes: short clips of one shape moving, and their QA.

For the real-layout data root (:mod:`minigpt.datasets.synthetic.real_layout`): the ``videochat_instruct``
builder's default annotation file holds ``[{"video": "<folder>/<id>.avi", "QA": [{"i", "q", "a"}]}]``
as the released ``videochat_instruct_11k.json`` does, a detailed-description turn (instruction in
``i``) then a conversation turn (question in ``q``). Each clip is the scene's first shape, in its
colour, crossing a plain background left, right, up or down (8 frames at 4 fps, 64 px), written as
Motion-JPEG AVI (:func:`~minigpt.datasets.datasets.video_datasets.write_mjpeg_avi`, no encoder needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from minigpt.datasets.datasets.video_datasets import write_mjpeg_avi
from minigpt.datasets.synthetic.scenes import COLOURS, Example

DIRECTIONS = ("left", "right", "up", "down")
SIZE, FRAMES, FPS, SIDE = 64, 8, 4, 16
MAX_VIDEOS = 8  # clips a split: enough for the toy-width runs of the recipes


def _clip(colour: str, direction: str) -> List[np.ndarray]:
    travel = SIZE - SIDE
    frames = []
    for t in range(FRAMES):
        step = round(travel * t / (FRAMES - 1))
        x, y = {"left": (travel - step, 24), "right": (step, 24), "up": (24, travel - step), "down": (24, step)}[direction]
        frame = np.full((SIZE, SIZE, 3), 235, np.uint8)
        frame[y : y + SIDE, x : x + SIDE] = COLOURS[colour]
        frames.append(frame)
    return frames


def write_videochat_files(root: Path, videos: str, examples: Sequence[Example]) -> List[Dict[str, Any]]:
    """Write up to :data:`MAX_VIDEOS` clips of ``examples`` under ``root/videos``; returns their annotation rows."""
    rows = []
    for ex in list(examples)[:MAX_VIDEOS]:
        colour = ex.scene.objects[0]["colour"]
        kind = ex.scene.objects[0]["kind"]
        direction = DIRECTIONS[ex.index % len(DIRECTIONS)]
        rel = f"{ex.split}_clips/{ex.index:06d}.avi"
        path = root / videos / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mjpeg_avi(path, _clip(colour, direction), fps=FPS)
        rows.append(
            {
                "video": rel,
                "caption": f"a {colour} {kind} moves {direction}",
                "QA": [
                    {"i": "Describe the following video in detail.", "q": "", "a": f"A {colour} square moves {direction}."},
                    {"i": "", "q": "Which way does the square move?", "a": direction},
                ],
            }
        )
    return rows
