"""Pictures of an evaluation: boxes drawn over a sample of referring predictions, a per-question-type chart for VQA.

The benchmark command (``minigpt eval ref|vqa``, ``eval_scripts/eval_ref.py``, ``eval_vqa.py``)
writes them next to the metrics when matplotlib is installed (``pip install 'minigpt-kit[plot]'``):

* ``<benchmark>_<split>_boxes.png``: a grid of images, each with the ground-truth box (green,
  solid) and the model's box (red, dashed), the expression and the IoU underneath;
* ``<benchmark>_<split>_question_types.png``: accuracy per question (or answer) type as bars,
  the overall accuracy as a line.
"""

from __future__ import annotations

import json
import logging
import textwrap
from typing import Any, Dict, List, Mapping, Optional

from minigpt.common.grounding import grid_to_pixels, parse_box, split_task_tag

logger = logging.getLogger(__name__)

PLOT_EXTRA_HINT = "pip install 'minigpt-kit[plot]'"
BOX_SAMPLES = 8  # images in an overlay grid
GROUND_TRUTH_COLOUR, PREDICTION_COLOUR = "#1a9641", "#d7191c"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; :class:`PlotUnavailable` without matplotlib."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable(f"drawing pictures needs matplotlib: {PLOT_EXTRA_HINT}") from exc
    matplotlib.use("Agg", force=True)  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out_path: str, dpi: int = 72) -> str:
    """Save ``fig`` as a palette PNG (charts have few colours: a few tens of KB) and close it; returns ``out_path``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=128, dither=Image.Dither.NONE).save(out_path, optimize=True)
    return out_path


def spread_sample(n_total: int, n: int) -> List[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (all of them when there are fewer)."""
    if n_total <= n:
        return list(range(n_total))
    return [round(i * (n_total - 1) / (n - 1)) for i in range(n)] if n > 1 else [0]


def _expression(prompt: str) -> str:
    text = split_task_tag(prompt)[1].strip()
    for lead in ("give me the location of ", "where is "):
        if text.lower().startswith(lead):
            return text[len(lead):]
    return text


def draw_ref_overlays(predictions_path: str, out_path: str, n: int = BOX_SAMPLES, title: str = "") -> str:
    """Draw ground truth and predicted boxes over ``n`` images of a merged referring predictions file.

    Each line of ``predictions_path`` (``<benchmark>_<split>_predictions.jsonl``) holds ``prediction``
    (a box on the 0-100 grid, as the model wrote it), ``iou``, ``image`` (a path), ``prompt`` and
    ``target`` (``box`` in pixels, ``width``, ``height``). Returns ``out_path``.
    """
    from PIL import Image

    plt = pyplot()
    with open(predictions_path) as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    if not lines:
        raise ValueError(f"{predictions_path}: no predictions to draw")
    chosen = [lines[i] for i in spread_sample(len(lines), n)]
    cols = min(4, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.75 * rows), squeeze=False)
    from matplotlib.patches import Rectangle

    for ax in axes.flat:
        ax.axis("off")
    for ax, line in zip(axes.flat, chosen):
        target = line["target"]
        with Image.open(line["image"]) as im:
            image = im.convert("RGB")
        ax.imshow(image, extent=(0, target["width"], target["height"], 0))
        gx1, gy1, gx2, gy2 = target["box"]
        ax.add_patch(Rectangle((gx1, gy1), gx2 - gx1, gy2 - gy1, fill=False, lw=2, ec=GROUND_TRUTH_COLOUR))
        box = parse_box(str(line.get("prediction", "")))
        if box is not None:
            px1, py1, px2, py2 = grid_to_pixels(box, target["width"], target["height"])
            ax.add_patch(Rectangle((px1, py1), px2 - px1, py2 - py1, fill=False, lw=2, ls="--", ec=PREDICTION_COLOUR))
        verdict = f"IoU {float(line.get('iou', 0.0)):.2f}" if box is not None else "no box"
        caption = textwrap.shorten(_expression(str(line.get("prompt", ""))), 60, placeholder="…")
        ax.set_title("\n".join(textwrap.wrap(caption, 24)[:2] + [verdict]), fontsize=7)
    fig.suptitle(title or "referring: ground truth (green) and prediction (red, dashed)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_path)


def type_accuracies(metrics: Mapping[str, Any], prefix: str = "accuracy_") -> Dict[str, float]:
    """``{type: accuracy}`` from metrics keyed ``accuracy_<type>`` (a VQA split's per-type results)."""
    return {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix) and k != prefix}


def draw_question_types(
    metrics: Mapping[str, Any], out_path: str, title: str = "", overall_key: str = "accuracy"
) -> Optional[str]:
    """A bar per question type (``accuracy_<type>`` keys of ``metrics``), the overall accuracy as a line.

    Returns ``out_path``, or None when ``metrics`` has no per-type accuracy (nothing to draw).
    """
    per_type = type_accuracies(metrics)
    if not per_type:
        return None
    plt = pyplot()
    names = sorted(per_type, key=lambda k: per_type[k])
    fig, ax = plt.subplots(figsize=(5.2, 0.45 * len(names) + 1.0))
    bars = ax.barh(names, [per_type[k] for k in names], color="#4a7ab5")
    for bar, name in zip(bars, names):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{per_type[name]:.3f}",
                va="center", fontsize=8)  # fmt: skip
    xlabel = "accuracy"
    if overall_key in metrics:
        overall = float(metrics[overall_key])
        ax.axvline(overall, color="#444444", ls="--", lw=1)
        xlabel += f" (dashed: overall {overall:.3f})"
    ax.set_xlim(0, 1.12)
    ax.set_xlabel(xlabel)
    ax.set_title(title or "accuracy per question type", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_path)


def write_split_pictures(family: str, results: List[Any], output_dir: str) -> List[str]:
    """The pictures of a benchmark run's finished splits (``ref``: box overlays, ``vqa``: per-type chart).

    ``results`` are :class:`~minigpt.tasks.evaluation.loop.SplitResult`; returns the files written.
    Without matplotlib, logs how to install it and draws nothing.
    """
    import os

    written: List[str] = []
    for r in results:
        if r.metrics is None or family not in ("ref", "vqa"):
            continue
        stem = os.path.join(output_dir, f"{r.benchmark}_{r.split}")
        try:
            if family == "ref":
                written.append(draw_ref_overlays(f"{stem}_predictions.jsonl", f"{stem}_boxes.png",
                                                 title=f"{r.benchmark} {r.split}: ground truth (green), prediction (red)"))
            else:
                path = draw_question_types(r.metrics, f"{stem}_question_types.png",
                                           title=f"{r.benchmark} {r.split}: accuracy per question type")
                written += [path] if path else []
        except PlotUnavailable as exc:
            logger.warning("no pictures: %s", exc)
            break
    return written
