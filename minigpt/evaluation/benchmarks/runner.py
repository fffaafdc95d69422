"""Run one benchmark split: batched generation, torchrun sharding, resumable predictions, merge, metrics.

Files under ``output_dir`` for benchmark ``B`` and split ``S``:

* ``predictions/B_S.rank<r>-of-<w>.jsonl`` — what rank ``r`` of a ``w``-process run predicted, one
  JSON line per sample (``{"id", "prediction"}``), flushed and synced after every batch. A rerun
  reads every such file (whatever world size wrote it), skips the ids already there and shares
  out only the rest, so an interrupted evaluation continues where it stopped.
* ``predictions/B_S.meta.json`` — the settings the predictions were made with (prompt, model,
  checkpoint, generation length). A rerun with other settings refuses to mix the two unless
  ``overwrite`` is given, which starts afresh.
* ``B_S_predictions.jsonl`` — the merged predictions in annotation order, each with its ground
  truth and score (written by rank 0 once every sample has a prediction).
* ``B_S_metrics.json`` — the metrics table of this split.

Sharding: each rank takes every ``world_size``-th of the samples still to predict; rank 0 merges
the predictions read at the start with the new ones gathered from every rank, scores them in
annotation order and writes the files above, so the figures do not depend on the number of
processes or on where a run was interrupted.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from minigpt.common import dist_utils
from minigpt.evaluation.benchmarks.base import Benchmark, BenchmarkDataError, EvalRecord

logger = logging.getLogger(__name__)

AnswerFn = Callable[[List[Optional[torch.Tensor]], List[str]], List[str]]
ImageLoader = Callable[[str], torch.Tensor]


@dataclass
class EvalSettings:
    """How a benchmark split is run (shared by all splits of one command). Not registered.

    ``fingerprint`` holds what decides the predictions besides the benchmark (model, checkpoint,
    template, generation settings); it is stored with the predictions and checked on resume.
    ``max_batches`` stops each process after that many batches without merging (a smoke test, or
    a deliberate interruption); rerunning continues.
    """

    output_dir: str
    batch_size: int = 8
    num_workers: int = 0
    progress: bool = True
    max_samples: Optional[int] = None
    max_batches: Optional[int] = None
    overwrite: bool = False
    fingerprint: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SplitResult:
    """The outcome of one benchmark split: metrics (None when stopped early) and counts."""

    benchmark: str
    split: str
    metrics: Optional[Dict[str, float]]
    samples: int
    predicted_now: int
    reused: int
    metrics_path: Optional[str] = None


# -- prediction files ------------------------------------------------------------------------------
def _stem(benchmark: str, split: str) -> str:
    return f"{benchmark}_{split}"


def part_files(pred_dir: str, benchmark: str, split: str) -> List[str]:
    """Every per-rank predictions file of a benchmark split, from runs of any world size."""
    pattern = os.path.join(glob.escape(pred_dir), f"{glob.escape(_stem(benchmark, split))}.rank*-of-*.jsonl")
    return sorted(glob.glob(pattern))


def read_predictions(paths: Sequence[str]) -> Dict[str, str]:
    """``{id: prediction}`` from predictions files; a line cut short by a kill is ignored."""
    done: Dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                done[str(row["id"])] = str(row["prediction"])
            except (ValueError, KeyError, TypeError) as exc:
                if lineno == len(lines):  # the last line, without its newline: a write the kill cut off
                    logger.warning("%s: ignoring an unfinished last line", path)
                    continue
                raise BenchmarkDataError(f"{path}:{lineno}: not a predictions line ({exc})") from exc
    return done


class PredictionWriter:
    """Appends one rank's predictions; every batch is flushed and synced before the next starts."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._drop_unfinished_line()
        self._fh = open(path, "a", encoding="utf-8")

    def _drop_unfinished_line(self) -> None:
        # A kill mid-write leaves a line without its newline; appending behind it would corrupt the next line.
        if not os.path.isfile(self.path):
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def write(self, rows: Sequence[Dict[str, Any]]) -> None:
        self._fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


# -- images --------------------------------------------------------------------------------------
class _ImageDataset(Dataset):
    def __init__(self, records: Sequence[EvalRecord], load_image: ImageLoader) -> None:
        self.records = records
        self.load_image = load_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Tuple[int, Optional[torch.Tensor]]:
        rec = self.records[i]
        return i, None if rec.image is None else self.load_image(rec.image)


def _as_list(batch: List[Any]) -> List[Any]:
    return batch


# -- the run ---------------------------------------------------------------------------------------
def _check_fingerprint(meta_path: str, fingerprint: Dict[str, Any], overwrite: bool, parts: List[str]) -> bool:
    """Whether an earlier run's predictions may be reused; raises when they were made otherwise."""
    if overwrite or not os.path.isfile(meta_path):
        return False
    with open(meta_path, encoding="utf-8") as fh:
        old = json.load(fh)
    if old != fingerprint:
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        raise BenchmarkDataError(
            f"{meta_path}: the saved predictions were made with other settings ({', '.join(changed)} differ: "
            f"{ {k: old.get(k) for k in changed} } vs now { {k: fingerprint.get(k) for k in changed} }); "
            "pass --overwrite to start afresh or choose another --output-dir"
        )
    return bool(parts)


def run_split(
    benchmark: Benchmark,
    split: str,
    records: List[EvalRecord],
    answer: AnswerFn,
    load_image: ImageLoader,
    settings: EvalSettings,
) -> SplitResult:
    """Predict what is missing for ``records`` on this rank's shard, then (rank 0) merge and score."""
    from tqdm import tqdm

    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    if settings.max_samples is not None:
        records = records[: settings.max_samples]
    stem = _stem(benchmark.name, split)
    pred_dir = os.path.join(settings.output_dir, "predictions")
    meta_path = os.path.join(pred_dir, f"{stem}.meta.json")
    fingerprint = {"benchmark": benchmark.name, "split": split, "prompt": benchmark.prompt, **settings.fingerprint}
    fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from the file (tuples -> lists)

    parts = part_files(pred_dir, benchmark.name, split)
    resuming = _check_fingerprint(meta_path, fingerprint, settings.overwrite, parts)
    dist_utils.barrier()  # every rank has looked at the old files before rank 0 replaces them
    if dist_utils.is_main_process() and not resuming:
        for p in parts:
            os.remove(p)
        os.makedirs(pred_dir, exist_ok=True)
        with open(meta_path, "w", encoding="utf-8") as fh:
            json.dump(fingerprint, fh, indent=2)
    dist_utils.barrier()
    wanted = {r.id for r in records}
    done = {k: v for k, v in read_predictions(part_files(pred_dir, benchmark.name, split)).items() if k in wanted}
    dist_utils.barrier()  # every rank has read the old predictions before any rank appends new ones

    pending = [r for r in records if r.id not in done]
    shard = pending[rank::world]
    if done and rank == 0:
        logger.info("%s/%s: %d of %d predictions already saved; predicting the other %d",
                    benchmark.name, split, len(done), len(records), len(pending))
    writer = PredictionWriter(os.path.join(pred_dir, f"{stem}.rank{rank}-of-{world}.jsonl"))
    loader = DataLoader(
        _ImageDataset(shard, load_image),
        batch_size=max(1, int(settings.batch_size)),
        num_workers=int(settings.num_workers),
        collate_fn=_as_list,
    )
    new: Dict[str, str] = {}
    finished = True
    bar = tqdm(total=len(shard), desc=f"{benchmark.name}/{split}", disable=not (settings.progress and rank == 0))
    try:
        for n_batch, batch in enumerate(loader):
            if settings.max_batches is not None and n_batch >= settings.max_batches:
                finished = False
                break
            recs = [shard[i] for i, _ in batch]
            preds = answer([img for _, img in batch], [r.prompt for r in recs])
            if len(preds) != len(recs):
                raise RuntimeError(f"the model returned {len(preds)} answers for {len(recs)} prompts")
            writer.write([{"id": r.id, "prediction": p} for r, p in zip(recs, preds)])
            new.update((r.id, p) for r, p in zip(recs, preds))
            bar.update(len(recs))
    finally:
        bar.close()
        writer.close()

    gathered: List[Tuple[Dict[str, str], bool]] = [(new, finished)]
    if dist_utils.is_dist():
        import torch.distributed as dist

        gathered = [None] * world  # type: ignore[list-item]
        dist.all_gather_object(gathered, (new, finished))
    predicted_now = sum(len(g[0]) for g in gathered)
    result = SplitResult(benchmark.name, split, None, len(records), predicted_now, len(done))
    if not all(g[1] for g in gathered):
        return result
    if dist_utils.is_main_process():
        merged = dict(done)
        for g, _ in gathered:
            merged.update(g)
        result.metrics, result.metrics_path = _score_and_write(benchmark, split, records, merged, settings)
    out = dist_utils.broadcast_object((result.metrics, result.metrics_path))
    result.metrics, result.metrics_path = out
    return result


def _score_and_write(
    benchmark: Benchmark, split: str, records: List[EvalRecord], predictions: Dict[str, str], settings: EvalSettings
) -> Tuple[Dict[str, float], str]:
    missing = [r.id for r in records if r.id not in predictions]
    if missing:
        raise RuntimeError(f"{benchmark.name}/{split}: {len(missing)} samples have no prediction, e.g. {missing[:3]}")
    stem = _stem(benchmark.name, split)
    rows = []
    for rec in records:
        pred = predictions[rec.id]
        rows.append({"id": rec.id, "prediction": pred, **benchmark.score(rec, pred)})
    metrics = {k: round(float(v), 6) for k, v in benchmark.aggregate(records, rows).items()}
    os.makedirs(settings.output_dir, exist_ok=True)
    _atomic_write(
        os.path.join(settings.output_dir, f"{stem}_predictions.jsonl"),
        "".join(
            json.dumps({**row, "prompt": rec.prompt, "image": rec.image, "target": rec.target}, ensure_ascii=False)
            + "\n"
            for rec, row in zip(records, rows)
        ),
    )
    path = os.path.join(settings.output_dir, f"{stem}_metrics.json")
    summary = {
        "benchmark": benchmark.name,
        "split": split,
        "description": benchmark.description,
        "samples": len(records),
        "metrics": metrics,
        "prompt": benchmark.prompt,
        "settings": settings.fingerprint,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _atomic_write(path, json.dumps(summary, indent=2) + "\n")
    return metrics, path


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def format_table(results: Sequence[SplitResult]) -> str:
    """The final table: one line per (benchmark, split, metric), each value x100 as papers print them."""
    lines = [f"{'benchmark':<24} {'split':<8} {'metric':<28} {'x100':>8} {'samples':>8}"]
    lines.append("-" * len(lines[0]))
    for r in results:
        if r.metrics is None:
            lines.append(f"{r.benchmark:<24} {r.split:<8} {'(stopped early: rerun to finish)':<28}")
            continue
        for k, v in r.metrics.items():
            lines.append(f"{r.benchmark:<24} {r.split:<8} {k:<28} {100 * v:>8.2f} {r.samples:>8}")
    return "\n".join(lines)
