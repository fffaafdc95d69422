"""Synthetic videos: one shape that moves in one of four directions, or changes colour, with VideoChat-format questions.

Each clip is ``VIDEO_FRAMES`` frames at ``VIDEO_FPS`` fps on one background (the scenes' renderer and
colours, so an encoder pretrained on the synthetic images sees familiar pixels), written as a
Motion-JPEG MP4 (:mod:`.mp4`). Half the clips (a balanced, seeded coin) show the shape sliding
``MOVE_FRAC`` of the frame left, right, up or down; the rest show it standing still while its colour
switches halfway. Every clip gets one question, in VideoChat-Instruct's released layout
(``[{"video": <file>, "QA": [{"i": "", "q": ..., "a": ...}]}]``, the ``video`` path relative to the
videos folder), plus ``question_type`` (``motion`` or ``colour``) on each QA entry so evaluation can
report each kind; the test split keeps its answers. Like the images, clip ``i`` of a split depends on
``(seed, split, i)`` only.

Layout under ``<root>/videochat/``::

    videos/{train,test}/<index:06d>.mp4
    videochat_instruct_{train,test}.json
    manifest.json          # written last: the settings, for is_complete
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from PIL import ImageDraw

from minigpt.datasets.synthetic.mp4 import write_mjpeg_mp4
from minigpt.datasets.synthetic.scenes import COLOURS, KINDS, draw_shape, render_background
from minigpt.datasets.synthetic.streams import balanced_coin, choice, randint, stream_rng

VIDEO_GENERATOR_VERSION = 1
VIDEO_DIR = "videochat"
VIDEO_FRAMES = 8
VIDEO_FPS = 8
MOVE_FRAC = 0.4  # how far a moving shape travels, as a fraction of the frame side
SIDE_FRACS = (0.22, 0.3)  # shape side, as fractions of the frame side
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTION_QUESTIONS = ("Which way does the {kind} move?", "In which direction is the {kind} moving?")
COLOUR_QUESTIONS = ("What colour does the {kind} change to?", "What colour does the {kind} turn into?")

PathLike = Union[str, "os.PathLike[str]"]


def make_clip(seed: int, split: str, index: int, size: int = 64) -> Dict[str, Any]:
    """Clip ``index`` of ``split``: its frames (``uint8 [H, W, 3]``), its question and answer, and what it shows."""
    rng = stream_rng(seed, split, index, "video")
    kind, colour = choice(rng, KINDS), choice(rng, list(COLOURS))
    side = randint(rng, round(SIDE_FRACS[0] * size), round(SIDE_FRACS[1] * size))
    moving = balanced_coin(seed, split, index, "video_motion")
    travel = round(MOVE_FRAC * size)
    if moving:
        direction = choice(rng, list(DIRECTIONS))
        dx, dy = DIRECTIONS[direction]
        # start where the whole path stays inside the frame
        x0 = randint(rng, travel if dx < 0 else 0, size - side - (travel if dx > 0 else 0))
        y0 = randint(rng, travel if dy < 0 else 0, size - side - (travel if dy > 0 else 0))
        path = [(x0 + round(dx * travel * t / (VIDEO_FRAMES - 1)), y0 + round(dy * travel * t / (VIDEO_FRAMES - 1)))
                for t in range(VIDEO_FRAMES)]
        colours = [colour] * VIDEO_FRAMES
        qa = {"q": choice(rng, MOTION_QUESTIONS).format(kind=kind), "a": direction, "question_type": "motion"}
    else:
        after = choice(rng, [c for c in COLOURS if c != colour])
        x0, y0 = randint(rng, 0, size - side), randint(rng, 0, size - side)
        path = [(x0, y0)] * VIDEO_FRAMES
        colours = [colour] * (VIDEO_FRAMES // 2) + [after] * (VIDEO_FRAMES - VIDEO_FRAMES // 2)
        qa = {"q": choice(rng, COLOUR_QUESTIONS).format(kind=kind), "a": after, "question_type": "colour"}
    background = render_background(stream_rng(seed, split, index, "video_pixels"), size, size)
    frames = []
    for (x, y), c in zip(path, colours):
        img = background.copy()
        draw_shape(ImageDraw.Draw(img), kind, c, [x, y, x + side, y + side])
        frames.append(np.asarray(img))
    return {"frames": frames, "qa": {"i": "", **qa}, "kind": kind, "colours": colours, "path": path}


def _settings(seed: int, n_train: int, n_test: int, image_size: int) -> Dict[str, Any]:
    return {"version": VIDEO_GENERATOR_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test,
            "image_size": image_size, "frames": VIDEO_FRAMES, "fps": VIDEO_FPS}


def videos_complete(root: PathLike, n_train: int, n_test: int, seed: int, image_size: int = 64) -> bool:
    """True when ``<root>/videochat`` holds the clips of exactly these settings."""
    folder = Path(root) / VIDEO_DIR
    try:
        with open(folder / "manifest.json", encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return False
    if manifest.get("settings") != _settings(seed, n_train, n_test, image_size):
        return False
    return all((folder / "videos" / s / f"{n - 1:06d}.mp4").is_file() for s, n in (("train", n_train), ("test", n_test)) if n)


def generate_synthetic_videos(
    root: PathLike, n_train: int = 4000, n_test: int = 400, seed: int = 0, image_size: int = 64,
    progress: Optional[Any] = None,
) -> Dict[str, Any]:
    """Write the clips and their VideoChat-format JSON under ``<root>/videochat``; return the manifest."""
    folder = Path(root) / VIDEO_DIR
    (folder / "manifest.json").unlink(missing_ok=True)  # written last: absent until the set is whole
    counts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        (folder / "videos" / split).mkdir(parents=True, exist_ok=True)
        entries: List[Dict[str, Any]] = []
        for i in range(n):
            clip = make_clip(seed, split, i, image_size)
            name = f"{split}/{i:06d}.mp4"
            write_mjpeg_mp4(folder / "videos" / name, clip["frames"], fps=VIDEO_FPS)
            entries.append({"video": name, "QA": [clip["qa"]]})
            if progress is not None:
                progress.update(1)
        tmp = folder / f"videochat_instruct_{split}.json.tmp"
        tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
        os.replace(tmp, folder / f"videochat_instruct_{split}.json")
        counts[split] = n
    manifest = {"generator": "minigpt.synthetic_videos", "settings": _settings(seed, n_train, n_test, image_size),
                "counts": counts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
