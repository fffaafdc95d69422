"""``minigpt plot RUN_DIR``: a run's loss, learning rate, throughput per stage and eval metrics, as one PNG.

    minigpt plot output/quickstart                 # a pipeline: every stage, end to end
    minigpt plot output/quickstart/stage1 --out stage1.png

``RUN_DIR`` is a pipeline's output folder (its ``pipeline.json`` lists the stage folders) or one
stage's (its ``metrics.jsonl``). Steps run on across stages, each stage's span marked and named.
The eval panel shows the ``eval`` rows a stage logged while training (``run.eval_every``), or else
the headline metrics of the run's ``metrics.json``. Needs matplotlib: ``pip install 'minigpt-kit[plot]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from minigpt.cli.evaluate import METRICS_FILE as EVAL_METRICS_FILE
from minigpt.common.constants import PIPELINE_FILE
from minigpt.evaluation.pictures import PlotUnavailable, pyplot, save_figure
from minigpt.runners.step_loop import METRICS_FILE

SUMMARY_FILE = EVAL_METRICS_FILE  # a pipeline's (or `minigpt eval`'s) final metrics
DEFAULT_OUT = "training.png"
MAX_EVAL_CURVES = 6
# summary keys that are not metrics
NOT_METRICS = {"wall_time_s", "stages", "all_metrics", "checkpoint", "config"}


class RunDirError(ValueError):
    """A folder that holds no run, or a run file that cannot be read; the message names it."""


@dataclass
class StageRows:
    """One stage's training rows (``step``, ``loss``, ``lr``, throughput) and eval rows, from its ``metrics.jsonl``."""

    name: str
    train: List[Dict[str, Any]] = field(default_factory=list)
    evals: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class RunRows:
    """A run's stages in order, and the metrics of its ``metrics.json`` (empty when it has none)."""

    stages: List[StageRows]
    summary: Dict[str, float]


def _read_rows(path: str) -> List[Dict[str, Any]]:
    with open(path) as fh:
        lines = fh.read().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if n == len(lines):  # a run killed mid-write leaves a cut last line
                break
            raise RunDirError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
    return rows


def read_stage(name: str, folder: str) -> StageRows:
    """The rows of the stage in ``folder``; a stage that has not logged yet has none."""
    path = os.path.join(folder, METRICS_FILE)
    stage = StageRows(name)
    if not os.path.isfile(path):
        return stage
    for row in _read_rows(path):
        if row.get("event") == "eval":
            stage.evals.append(row)
        elif "event" not in row and "loss" in row and "step" in row:
            stage.train.append(row)
    return stage


def load_run(run_dir: str) -> RunRows:
    """The rows of a pipeline folder (``pipeline.json``) or a stage folder (``metrics.jsonl``)."""
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir}: no such folder")
    manifest = os.path.join(run_dir, PIPELINE_FILE)
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            entries = json.load(fh).get("stages") or []
        stages = [read_stage(str(e["name"]), os.path.join(run_dir, str(e["dir"]))) for e in entries]
    elif os.path.isfile(os.path.join(run_dir, METRICS_FILE)):
        stages = [read_stage(os.path.basename(os.path.normpath(run_dir)), run_dir)]
    else:
        raise RunDirError(f"{run_dir}: neither {PIPELINE_FILE} (a pipeline's folder) nor {METRICS_FILE} (a stage's folder)")
    if not any(s.train for s in stages):
        raise RunDirError(f"{run_dir}: no training rows yet in any {METRICS_FILE}")
    summary: Dict[str, float] = {}
    path = os.path.join(run_dir, SUMMARY_FILE)
    if os.path.isfile(path):
        with open(path) as fh:
            data = json.load(fh)
        summary = {k: float(v) for k, v in data.items()
                   if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip
    return RunRows(stages, summary)


def _eval_series(stages: Sequence[StageRows], offsets: Sequence[int]) -> Dict[str, List[tuple]]:
    """``{metric: [(global step, value)]}`` for the fractions (0..1) the stages logged while training."""
    series: Dict[str, List[tuple]] = {}
    for stage, offset in zip(stages, offsets):
        for row in stage.evals:
            for k, v in row.items():
                if k in ("event", "step", "time") or k.startswith("best_") or k.endswith("/samples"):
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0:
                    series.setdefault(k, []).append((offset + int(row["step"]), float(v)))
    return dict(list(series.items())[:MAX_EVAL_CURVES])


def draw_run(run: RunRows, out_path: str, title: str = "") -> str:
    """Four panels (loss, learning rate, throughput per stage, eval metrics) to ``out_path``; returns it."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 6.2))
    ax_loss, ax_lr, ax_tp, ax_eval = axes.flat
    stages = [s for s in run.stages if s.train]
    offsets, total = [], 0
    for s in stages:
        offsets.append(total)
        total += int(s.train[-1]["step"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (s, off) in enumerate(zip(stages, offsets)):
        c = colours[i % len(colours)]
        steps = [off + int(r["step"]) for r in s.train]
        ax_loss.plot(steps, [r["loss"] for r in s.train], color=c, alpha=0.3, lw=0.8)
        ax_loss.plot(steps, [r.get("loss_ema", r["loss"]) for r in s.train], color=c, lw=1.6, label=s.name)
        ax_lr.plot(steps, [r["lr"] for r in s.train], color=c, lw=1.4)
    for ax in (ax_loss, ax_lr):
        for off in offsets[1:]:
            ax.axvline(off, color="#999999", lw=0.6, ls=":")
        ax.set_xlabel("step (all stages)")
    if all(r["loss"] > 0 for s in stages for r in s.train):
        ax_loss.set_yscale("log")
    ax_loss.set_title("loss (line: EMA, faint: per step)", fontsize=9)
    ax_loss.legend(fontsize=7, ncol=2)
    ax_lr.set_title("learning rate", fontsize=9)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    names = [s.name for s in stages]
    sps = [statistics.median(r.get("samples_per_s", 0.0) for r in s.train) for s in stages]
    tps = [statistics.median(r.get("tokens_per_s", 0.0) for r in s.train) for s in stages]
    bars = ax_tp.bar(names, sps, color=[colours[i % len(colours)] for i in range(len(stages))])
    for bar, t in zip(bars, tps):
        if t > 0:  # rows written before a stage counted its tokens say 0: no label rather than a false one
            ax_tp.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{t:,.0f} tok/s",
                       ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax_tp.set_ylabel("samples/s (median)")
    ax_tp.set_title("throughput per stage", fontsize=9)
    ax_tp.tick_params(axis="x", labelsize=7, rotation=20)
    ax_tp.margins(y=0.15)

    series = _eval_series(stages, offsets)
    if series:
        for k, points in series.items():
            ax_eval.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=k)
        ax_eval.legend(fontsize=6)
        ax_eval.set_xlabel("step (all stages)")
        ax_eval.set_title("evaluation during training", fontsize=9)
    elif run.summary:
        keys = [k for k, v in run.summary.items() if math.isfinite(v)]
        ax_eval.barh(keys[::-1], [run.summary[k] for k in keys[::-1]], color="#4a7ab5")
        for y, k in enumerate(keys[::-1]):
            ax_eval.text(run.summary[k], y, f" {run.summary[k]:.3f}", va="center", fontsize=7)
        ax_eval.tick_params(axis="y", labelsize=7)
        ax_eval.set_xlim(0, max(1.0, max(run.summary[k] for k in keys) * 1.15))
        ax_eval.set_title(f"final evaluation ({SUMMARY_FILE})", fontsize=9)
    else:
        ax_eval.text(0.5, 0.5, "no evaluation logged", ha="center", va="center", color="#777777")
        ax_eval.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_path)


def main(argv: Optional[List[str]] = None) -> int:
    """Draw the run; 2 when the folder holds no run or matplotlib is missing."""
    p = argparse.ArgumentParser(description="Draw a run's loss, lr, throughput per stage and eval metrics to a PNG.")
    p.add_argument("run_dir", help="a pipeline's output folder (pipeline.json) or a stage's (metrics.jsonl)")
    p.add_argument("--out", default=None, help=f"the PNG to write (default RUN_DIR/{DEFAULT_OUT})")
    p.add_argument("--title", default=None, help="the figure's title (default: the folder's name)")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.run_dir, DEFAULT_OUT)
    try:
        run = load_run(args.run_dir)
        draw_run(run, out, args.title if args.title is not None else os.path.basename(os.path.normpath(args.run_dir)))
    except (RunDirError, PlotUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
