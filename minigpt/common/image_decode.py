"""Decoding that refuses truncated images whatever the process-wide PIL setting says.

PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is global, and some libraries set it on import (lmms-eval's
task module does), after which PIL pads a truncated file with grey instead of raising. The library's
readers (datasets, the demo's uploads) must still see a truncated file as corrupt, so they decode
through :func:`load_whole`.
"""

from __future__ import annotations

import threading

from PIL import Image, ImageFile

_LOCK = threading.Lock()


def load_whole(image: Image.Image) -> None:
    """``image.load()`` with truncated data an error (``OSError``), restoring the global setting after."""
    with _LOCK:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before
