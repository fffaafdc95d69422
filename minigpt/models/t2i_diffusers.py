"""A diffusers text-to-image pipeline behind the ``t2i`` kind, registered as ``diffusers``.

EasyGen draws the LLM's ``<Img>description</Img>`` with a diffusion model; any pipeline diffusers
loads with ``DiffusionPipeline.from_pretrained`` and calls with ``prompt=[...]`` (Stable Diffusion
1.x/2.x, SDXL, PixArt, ...) serves. Weights are read from a local folder only (never fetched):
the folder ``save_pretrained`` writes, or a downloaded snapshot.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch
from PIL import Image

from minigpt.common.t2i import TextToImage

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DiffusersTextToImage(TextToImage):
    """A local diffusers pipeline folder as a ``t2i`` generator, registered as ``diffusers``.

    ``pretrained``: the pipeline folder (``model_index.json`` at its top). ``num_inference_steps``,
    ``guidance_scale``, ``height``/``width`` (None: the pipeline's default) and ``negative_prompt``
    go to every call; ``device`` and ``torch_dtype`` place the pipeline. Needs the ``gen`` extra
    (``pip install minigpt-kit[gen]``).
    """

    def __init__(
        self,
        pretrained: str,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        height: Optional[int] = None,
        width: Optional[int] = None,
        negative_prompt: Optional[str] = None,
        device: str = "cpu",
        torch_dtype: str = "float32",
    ) -> None:
        try:
            from diffusers import DiffusionPipeline
        except ImportError as exc:  # the extra is optional
            raise ImportError("t2i 'diffusers' needs the diffusers package: pip install 'minigpt-kit[gen]'") from exc
        if torch_dtype not in _DTYPES:
            raise ValueError(f"t2i diffusers: torch_dtype must be one of {', '.join(_DTYPES)}, got {torch_dtype!r}")
        if int(num_inference_steps) < 1:
            raise ValueError(f"t2i diffusers: num_inference_steps must be >= 1, got {num_inference_steps}")
        try:
            pipe = DiffusionPipeline.from_pretrained(
                str(pretrained), torch_dtype=_DTYPES[torch_dtype], local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise OSError(f"t2i diffusers: cannot load a pipeline from {pretrained!r}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.device = device
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.height, self.width = height, width
        self.negative_prompt = negative_prompt

    def draw(self, descriptions: List[str], seeds: Optional[List[int]]) -> List[Image.Image]:
        if not descriptions:
            return []
        # one generator per prompt: an image does not depend on the batch it was drawn in
        generator = None if seeds is None else [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        kwargs: Any = {
            "prompt": list(descriptions),
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "generator": generator,
            "output_type": "pil",
        }
        if self.height is not None:
            kwargs["height"] = int(self.height)
        if self.width is not None:
            kwargs["width"] = int(self.width)
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(descriptions)
        with torch.no_grad():
            images = self.pipe(**kwargs).images
        return [im.convert("RGB") for im in images]
