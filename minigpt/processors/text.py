"""Text processors: a raw caption in, the cleaned target text out."""

from __future__ import annotations

import re

from minigpt.processors.base import BaseProcessor

# The characters BLIP's ``blip_caption`` (LAVIS, which the originals train with) turns into spaces.
BLIP_PUNCTUATION = '.!"()*#:;~'
_BLIP_PUNCTUATION_RE = re.compile("[" + re.escape(BLIP_PUNCTUATION) + "]")


class CaptionTextProcessor(BaseProcessor):
    """Cleans a caption, question or expression; registered as ``caption_text``.

    Collapses runs of whitespace (newlines included) to one space and strips the ends, keeps
    at most ``max_words`` words (``null`` keeps all), lower-cases only when ``lowercase`` is set
    and turns each of ``. ! " ( ) * # : ; ~`` into a space only when ``drop_punctuation`` is set
    (case and punctuation carry meaning for the LLM, so they are kept by default; BLIP's
    ``blip_caption`` does both, before counting words), and puts ``prompt`` in front of the result.
    """

    CONFIG_KEYS = {"prompt": "", "max_words": 50, "lowercase": False, "drop_punctuation": False}

    def __init__(
        self, prompt: str = "", max_words: int | None = 50, lowercase: bool = False, drop_punctuation: bool = False
    ) -> None:
        if max_words is not None and (int(max_words) != max_words or max_words <= 0):
            raise ValueError(f"caption_text max_words must be a positive integer or null, got {max_words!r}")
        self.prompt = prompt or ""
        self.max_words = None if max_words is None else int(max_words)
        self.lowercase = bool(lowercase)
        self.drop_punctuation = bool(drop_punctuation)

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"caption_text expects a string, got {type(text).__name__}: {text!r}")
        if self.drop_punctuation:
            text = _BLIP_PUNCTUATION_RE.sub(" ", text)
        words = text.split()
        if self.max_words is not None:
            words = words[: self.max_words]
        text = " ".join(words)
        if self.lowercase:
            text = text.lower()
        return self.prompt + text
