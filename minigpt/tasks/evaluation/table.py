"""The results tables evaluation prints: per split (eval scripts) and flat ``dataset/split/metric`` (training)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from minigpt.tasks.evaluation.loop import SplitResult

# metrics already on the scale papers print them (FID; CLIP score is 100 * cosine): shown as they are
UNSCALED = ("fid", "clip_score")


def format_table(results: Sequence[SplitResult]) -> str:
    """One line per (benchmark, split, metric), each value x100 as papers print them (:data:`UNSCALED` as it is)."""
    lines = [f"{'benchmark':<24} {'split':<8} {'metric':<28} {'x100':>8} {'samples':>8}"]
    lines.append("-" * len(lines[0]))
    for r in results:
        if r.metrics is None:
            lines.append(f"{r.benchmark:<24} {r.split:<8} {'(stopped early: rerun to finish)':<28}")
            continue
        for k, v in r.metrics.items():
            shown = v if k in UNSCALED else 100 * v
            lines.append(f"{r.benchmark:<24} {r.split:<8} {k:<28} {shown:>8.2f} {r.samples:>8}")
        if r.skipped:
            kinds = ", ".join(f"{kind} {n}" for kind, n in r.skipped.items())
            lines.append(f"{r.benchmark:<24} {r.split:<8} unreadable, skipped: {kinds}")
    return "\n".join(lines)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``metric  value`` lines for a flat results dict (``dataset/split/metric`` keys); floats to 4 decimals."""
    width = max((len(k) for k in metrics), default=10)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in metrics.items()]
    return "\n".join(lines)
