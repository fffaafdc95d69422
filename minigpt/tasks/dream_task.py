"""Image creation (DreamLLM): training as every stage, evaluation that judges the images the model draws."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

import numpy as np
import torch

from minigpt.common import dist_utils
from minigpt.datasets.synthetic.draw_judge import judge_drawing
from minigpt.tasks.base_task import BaseTask
from minigpt.tasks.evaluation.records import EvalRecord
from minigpt.tasks.evaluation.scorers import NOT_DRAWN

logger = logging.getLogger(__name__)

GRID_SIZE = 16  # drawn images kept per evaluation for the samples grid
GRID_FILE = "creation_samples.png"


class ImageCreationTask(BaseTask):
    """Creation samples (``task: creation``) are answered by drawing. YAML name ``image_creation``.

    The model (``dreamllm``) answers each request with :meth:`generate_with_images`; a sample whose
    answer holds an image is predicted as the synthetic world's judge reads that image,
    ``"colour|quadrant"`` (:func:`~minigpt.datasets.synthetic.draw_judge.judge_drawing`), one without as
    ``not drawn``; the ``creation`` scorer counts colour and quadrant right. Every other sample is
    answered in text, as by :class:`~minigpt.tasks.image_text_pretrain.ImageTextPretrainTask`. The first
    drawn images of an evaluation are also written as a grid, ``<output_dir>/creation_samples.png``.
    Sampling uses the head's ``guidance_scale`` and ``sampling_steps``, seeded by ``run.seed``.
    """

    def __init__(self) -> None:
        self._drawn: List[torch.Tensor] = []
        self._seed = 0

    def predict(self, model, records: List[EvalRecord], batch: Dict[str, Any], run_cfg) -> List[str]:
        tasks = batch.get("task") or [None] * len(records)
        rows = [i for i, t in enumerate(tasks) if t == "creation"]
        out: List[str] = [""] * len(records)
        others = [i for i in range(len(records)) if i not in set(rows)]
        if others:
            images = batch.get("image")
            sub = None if images is None else (images[others] if isinstance(images, torch.Tensor)
                                              else [images[i] for i in others])
            texts = model.generate(sub, [records[i].prompt for i in others],
                                   max_new_tokens=int(run_cfg.eval_max_new_tokens), num_beams=int(run_cfg.eval_num_beams))
            for i, text in zip(others, texts):
                out[i] = text
        if rows:
            self._seed += 1
            generator = torch.Generator().manual_seed(int(run_cfg.get("seed") or 0) * 100003 + self._seed)
            answers = model.generate_with_images(None, [records[i].prompt for i in rows],
                                                 max_new_tokens=int(run_cfg.eval_max_new_tokens), generator=generator)
            for i, answer in zip(rows, answers):
                if not answer.images:
                    out[i] = f"{NOT_DRAWN}|{NOT_DRAWN}"
                    continue
                image = answer.images[0]
                if len(self._drawn) < GRID_SIZE:
                    self._drawn.append(image)
                colour, quadrant = judge_drawing(image.permute(1, 2, 0).numpy())
                out[i] = f"{colour}|{quadrant}"
        return out

    def evaluate(self, model, datasets, splits, run_cfg, output_dir: str, progress: bool = True) -> Dict[str, float]:
        self._drawn, self._seed = [], 0
        results = super().evaluate(model, datasets, splits, run_cfg, output_dir, progress)
        if self._drawn and dist_utils.is_main_process():
            path = write_grid(self._drawn, os.path.join(output_dir, GRID_FILE))
            logger.info("drawn samples: %s", path)
        return results


def write_grid(images: List[torch.Tensor], path: str, columns: int = 8, upscale: int = 4) -> str:
    """``images`` (``[3, H, W]`` in [0, 1], one size) side by side as one PNG, each ``upscale`` times larger."""
    from PIL import Image

    rows = (len(images) + columns - 1) // columns
    _, h, w = images[0].shape
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), 255, dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        pixels = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = pixels
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    picture = Image.fromarray(grid)
    picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.NEAREST)
    picture.save(path, optimize=True)
    return path
