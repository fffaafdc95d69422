"""EasyGen's caption bridge: the LLM answers, each ``<Img>description</Img>`` it writes is drawn.

The LLM was trained on dialogues whose image turns are written as their descriptions (the
``photochat`` reader, :func:`minigpt.common.t2i.image_span`); at inference :class:`CaptionBridge`
runs the model's ``generate``, finds the spans in each answer and hands their descriptions to a
registered ``t2i`` generator (``synthetic_shapes`` offline, ``diffusers`` with real weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Union

from PIL import Image

from minigpt.common.t2i import TextToImage, build_t2i, image_spans


@dataclass
class BridgeReply:
    """One answer: its text, the descriptions found in it (in order) and one drawing per description."""

    text: str
    descriptions: List[str] = field(default_factory=list)
    images: List[Image.Image] = field(default_factory=list)


class CaptionBridge:
    """A generating model joined to a text-to-image generator by the ``<Img>...</Img>`` spans it writes.

    ``t2i`` is a :class:`TextToImage` or its YAML block (``{name: synthetic_shapes, ...}``).
    """

    def __init__(self, model: Any, t2i: Union[TextToImage, Mapping[str, Any]]) -> None:
        self.model = model
        self.t2i = t2i if isinstance(t2i, TextToImage) else build_t2i(t2i)

    def draw(self, texts: Sequence[str], seed: Optional[int] = None) -> List[BridgeReply]:
        """Draw the spans of texts already generated: every description of every text, in one call."""
        replies = [BridgeReply(t, [s.description for s in image_spans(t)]) for t in texts]
        flat = [d for r in replies for d in r.descriptions]
        drawn = self.t2i(flat, seed=seed) if flat else []
        k = 0
        for r in replies:
            r.images = drawn[k : k + len(r.descriptions)]
            k += len(r.descriptions)
        return replies

    def respond(self, images: Any, prompts: Sequence[Any], seed: Optional[int] = None,
                **generate_kwargs: Any) -> List[BridgeReply]:
        """``model.generate(images, prompts, **generate_kwargs)``, then :meth:`draw` on its answers."""
        texts = self.model.generate(images, prompts, **generate_kwargs)
        return self.draw(texts, seed=seed)
