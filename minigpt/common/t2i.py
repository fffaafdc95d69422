"""Text-to-image pipelines: the registered kind ``t2i`` and the ``<Img>description</Img>`` spans they draw.

EasyGen's route to image generation: the LLM writes an image as its description between the image
tags (``<Img>two shapes: ...</Img>``), and a text-conditioned image generator draws the description.
A generator is any class registered under the ``t2i`` kind (``registry.list("t2i")``) that
subclasses :class:`TextToImage`: built from its YAML block with ``from_config`` and called with a
list of descriptions. The built-in ones are ``diffusers`` (a local diffusers pipeline folder) and
``synthetic_shapes`` (draws the synthetic world's caption language, no weights).

The span rule (:func:`image_spans`) lives here, below every layer that needs it: the datasets that
write the spans, the bridge that reads them from generated text, and the evaluation that scores the
drawings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Union

from PIL import Image

from minigpt.common.constants import IMAGE_TOKEN

IMG_OPEN, IMG_CLOSE = "<Img>", "</Img>"

_SPAN = re.compile(re.escape(IMG_OPEN) + r"(.*?)" + re.escape(IMG_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ImageSpan:
    """One ``<Img>description</Img>`` in a text: the description (stripped) and where the span lies."""

    description: str
    start: int  # index of "<Img>" in the text
    end: int  # index just past "</Img>"


def image_spans(text: str) -> List[ImageSpan]:
    """Every ``<Img>...</Img>`` span of ``text`` that holds a description, in order.

    A span holding the image slot (``<Img><ImageHere></Img>``, an input image) or only whitespace
    is no drawing request and is left out; an ``<Img>`` never closed (generation cut by
    ``max_new_tokens``) is left out too.
    """
    out = []
    for m in _SPAN.finditer(text):
        description = m.group(1).strip()
        if description and IMAGE_TOKEN not in description:
            out.append(ImageSpan(description, m.start(), m.end()))
    return out


def image_span(description: str) -> str:
    """The text an image turn is written as: ``<Img>description</Img>``."""
    if IMG_OPEN in description or IMG_CLOSE in description:
        raise ValueError(f"an image description cannot hold the image tags themselves: {description!r:.200}")
    return f"{IMG_OPEN}{description.strip()}{IMG_CLOSE}"


class TextToImage:
    """Base class of the registered ``t2i`` generators: descriptions in, RGB PIL images out.

    Subclasses implement :meth:`draw` and build from their YAML block with :meth:`from_config`
    (keyword arguments of ``__init__``; ``name`` picks the class and is not passed on).
    """

    def draw(self, descriptions: List[str], seeds: Optional[List[int]]) -> List[Image.Image]:
        """One image per description; ``seeds`` (one per description, or None) make a random generator repeatable."""
        raise NotImplementedError

    def __call__(self, descriptions: Sequence[str], seed: Union[None, int, Sequence[int]] = None) -> List[Image.Image]:
        """Draw ``descriptions``. ``seed``: None, a base seed (description ``i`` gets ``seed + i``), or one seed per
        description, so that an image does not depend on which other descriptions share its call."""
        if isinstance(descriptions, str):
            raise TypeError("pass a list of descriptions, not one string")
        descriptions = list(descriptions)
        if seed is None:
            seeds = None
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(len(descriptions))]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != len(descriptions):
                raise ValueError(f"{len(seeds)} seeds for {len(descriptions)} descriptions")
        images = self.draw(descriptions, seeds)
        if len(images) != len(descriptions):
            raise RuntimeError(
                f"{type(self).__name__} returned {len(images)} images for {len(descriptions)} descriptions"
            )
        return images

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]] = None) -> "TextToImage":
        kwargs = {k: v for k, v in dict(cfg or {}).items() if k != "name"}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise TypeError(f"t2i {cls.__name__}: bad keys in its config block {sorted(kwargs)}: {exc}") from exc


def build_t2i(cfg: Mapping[str, Any]) -> TextToImage:
    """The generator a ``{name: <registered t2i>, ...}`` block names (an unknown name lists the known ones)."""
    from minigpt.common.registry import registry

    block = dict(cfg or {})
    if "name" not in block:
        raise KeyError(f"a t2i block needs a 'name' (one of {', '.join(registry.list('t2i'))}), got {block!r}")
    cls = registry.get_class("t2i", block["name"])
    if not (isinstance(cls, type) and issubclass(cls, TextToImage)):
        raise TypeError(f"t2i {block['name']!r} resolves to {cls!r}, which is not a TextToImage subclass")
    return cls.from_config(block)
