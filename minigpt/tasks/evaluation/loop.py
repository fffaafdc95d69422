"""The evaluation loop: batched generation, torchrun sharding, resumable predictions, one gather, scoring.

Used by in-training evaluation (:meth:`minigpt.tasks.base_task.BaseTask.evaluate`, a dataset split) and
by the eval scripts (:func:`minigpt.evaluation.benchmarks.runner.run_split`, a benchmark split). Files
under ``output_dir`` for split ``S`` of ``B``:

* ``predictions/B_S.rank<r>-of-<w>.jsonl`` -- what rank ``r`` of a ``w``-process run predicted, one
  JSON line per sample (``{"id", "prediction"}``, plus the sample's record when the source only learns
  it by reading the sample), flushed and synced after every batch. A rerun reads every such file
  (whatever world size wrote it), skips the ids already there and shares out only the rest, so an
  interrupted evaluation continues where it stopped.
* ``predictions/B_S.meta.json`` -- the settings the predictions were made with. A rerun with other
  settings refuses to mix the two unless ``overwrite`` is given, which starts afresh.
* the merged predictions in sample order, each with its score (``settings.predictions_file``), and,
  with ``settings.metrics_file``, ``B_S_metrics.json``: written by rank 0 once every sample has a prediction.

Bad samples: a sample whose reading raises :class:`~minigpt.common.io.DatasetError` (a corrupt,
missing or oversized image or video; see :data:`~minigpt.common.io.SKIP_KINDS`) is skipped rather
than stopping the evaluation: logged with its id and the error (which names the file), left out of
scoring, and counted by kind (``SplitResult.skipped``; the metrics file lists each one). A rerun
tries skipped samples again, as it does every sample without a prediction.

Sharding: each rank takes every ``world_size``-th of the samples still to predict; rank 0 merges the
predictions read at the start with the new ones gathered from every rank and scores them in sample
order, so the figures do not depend on the number of processes or on where a run was interrupted.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from torch.utils.data import DataLoader, Dataset

from minigpt.common import dist_utils
from minigpt.common.io import DatasetError, write_atomically
from minigpt.tasks.evaluation.records import BenchmarkDataError, EvalRecord
from minigpt.tasks.evaluation.scorers import Scorer

logger = logging.getLogger(__name__)

# (records of a batch, their model inputs) -> one generated text per record
PredictFn = Callable[[List[EvalRecord], List[Any]], List[str]]


@dataclass
class EvalSettings:
    """How a split is run (shared by all splits of one command or evaluation). Not registered.

    ``fingerprint`` holds what decides the predictions besides the split (model, checkpoint, template,
    generation settings); it is stored with the predictions and checked on resume. ``max_batches``
    stops each process after that many batches without merging (a smoke test, or a deliberate
    interruption); rerunning continues. ``predictions_file`` (relative to ``output_dir``; ``{stem}`` is
    ``<name>_<split>``) receives the merged, scored predictions; ``metrics_file`` writes
    ``<stem>_metrics.json`` beside it.
    """

    output_dir: str
    batch_size: int = 8
    num_workers: int = 0
    progress: bool = True
    max_samples: Optional[int] = None
    max_batches: Optional[int] = None
    overwrite: bool = False
    fingerprint: Dict[str, Any] = field(default_factory=dict)
    predictions_file: str = "{stem}_predictions.jsonl"
    metrics_file: bool = True


@dataclass
class SplitResult:
    """The outcome of one split: metrics (None when stopped early) and counts.

    ``skipped``: unreadable samples left out of scoring, by kind (empty when there were none).
    """

    benchmark: str
    split: str
    metrics: Optional[Dict[str, float]]
    samples: int
    predicted_now: int
    reused: int
    metrics_path: Optional[str] = None
    skipped: Dict[str, int] = field(default_factory=dict)


@dataclass
class SkippedSample:
    """A sample the loop could not read: its id and the :class:`~minigpt.common.io.DatasetError`'s kind, path, text."""

    id: str
    kind: str
    path: Optional[str]
    error: str


# -- prediction files ------------------------------------------------------------------------------
def _stem(name: str, split: str) -> str:
    return f"{name}_{split}"


def part_files(pred_dir: str, name: str, split: str) -> List[str]:
    """Every per-rank predictions file of a split, from runs of any world size."""
    pattern = os.path.join(glob.escape(pred_dir), f"{glob.escape(_stem(name, split))}.rank*-of-*.jsonl")
    return sorted(glob.glob(pattern))


def read_prediction_lines(paths: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``{id: line}`` from predictions files; a last line cut short by a kill is ignored."""
    done: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                done[str(row["id"])] = {**row, "prediction": str(row["prediction"])}
            except (ValueError, KeyError, TypeError) as exc:
                if lineno == len(lines):  # the last line, without its newline: a write the kill cut off
                    logger.warning("%s: ignoring an unfinished last line", path)
                    continue
                raise BenchmarkDataError(f"{path}:{lineno}: not a predictions line ({exc})") from exc
    return done


def read_predictions(paths: Sequence[str]) -> Dict[str, str]:
    """``{id: prediction}`` from predictions files (see :func:`read_prediction_lines`)."""
    return {k: v["prediction"] for k, v in read_prediction_lines(paths).items()}


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


class _Shard(Dataset):
    def __init__(self, source: Any, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Union[Tuple[EvalRecord, Any], SkippedSample]:
        i = self.indices[k]
        try:
            return self.source.load(i)
        except DatasetError as exc:  # in a worker process too: the marker travels back with the batch
            return SkippedSample(self.source.ids[i], exc.kind, exc.path, str(exc))


def _as_list(batch: List[Any]) -> List[Any]:
    return batch


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


def gather(obj: Any) -> List[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without torch.distributed): the loop's one gather."""
    if not dist_utils.is_dist():
        return [obj]
    import torch.distributed as dist

    out: List[Any] = [None] * dist_utils.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# -- the loop --------------------------------------------------------------------------------------
def evaluate_split(
    name: str,
    split: str,
    source: Any,
    predict: PredictFn,
    scorer: Scorer,
    settings: EvalSettings,
    identity: Optional[Dict[str, Any]] = None,
    describe: Optional[Dict[str, Any]] = None,
) -> SplitResult:
    """Predict what is missing of ``source`` on this rank's shard, then (rank 0) merge, score and write.

    ``source`` is a :mod:`~minigpt.tasks.evaluation.sources` source; ``identity`` joins the stored
    fingerprint (what else makes the predictions, e.g. the prompt); ``describe`` joins the metrics file.
    """
    from tqdm import tqdm

    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    ids = list(source.ids) if settings.max_samples is None else list(source.ids)[: settings.max_samples]
    stem = _stem(name, split)
    pred_dir = os.path.join(settings.output_dir, "predictions")
    meta_path = os.path.join(pred_dir, f"{stem}.meta.json")
    fingerprint = {"benchmark": name, "split": split, **(identity or {}), **settings.fingerprint}
    fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from the file (tuples -> lists)

    parts = part_files(pred_dir, name, split)
    resuming = _check_fingerprint(meta_path, fingerprint, settings.overwrite, parts)
    dist_utils.barrier()  # every rank has looked at the old files before rank 0 replaces them
    if dist_utils.is_main_process() and not resuming:
        for p in parts:
            os.remove(p)
        os.makedirs(pred_dir, exist_ok=True)
        _atomic_write(meta_path, json.dumps(fingerprint, indent=2))
    dist_utils.barrier()
    wanted = set(ids)
    done = {k: v for k, v in read_prediction_lines(part_files(pred_dir, name, split)).items() if k in wanted}
    dist_utils.barrier()  # every rank has read the old predictions before any rank appends new ones

    pending = [i for i, item_id in enumerate(ids) if item_id not in done]
    shard = pending[rank::world]
    if done and rank == 0:
        logger.info("%s/%s: %d of %d predictions already saved; predicting the other %d",
                    name, split, len(done), len(ids), len(pending))
    writer = PredictionWriter(os.path.join(pred_dir, f"{stem}.rank{rank}-of-{world}.jsonl"))
    loader = DataLoader(
        _Shard(source, shard),
        batch_size=max(1, int(settings.batch_size)),
        num_workers=int(settings.num_workers),
        collate_fn=_as_list,
    )
    new: Dict[str, Dict[str, Any]] = {}
    skipped: Dict[str, Dict[str, Any]] = {}  # id -> {kind, path, error} of the samples that could not be read
    finished = True
    bar = tqdm(total=len(shard), desc=f"{name}/{split}", disable=not (settings.progress and rank == 0))
    try:
        for n_batch, batch in enumerate(loader):
            if settings.max_batches is not None and n_batch >= settings.max_batches:
                finished = False
                break
            for bad in (item for item in batch if isinstance(item, SkippedSample)):
                logger.warning("%s/%s: skipped unreadable sample %s (%s): %s", name, split, bad.id, bad.kind, bad.error)
                skipped[bad.id] = {"kind": bad.kind, "path": bad.path, "error": bad.error}
                bar.update(1)
            batch = [item for item in batch if not isinstance(item, SkippedSample)]
            if not batch:
                continue
            recs = [rec for rec, _ in batch]
            preds = predict(recs, [inp for _, inp in batch])
            if len(preds) != len(recs):
                raise RuntimeError(f"the model returned {len(preds)} answers for {len(recs)} prompts")
            lines = [_line(source, r, p) for r, p in zip(recs, preds)]
            writer.write(lines)
            new.update((r.id, line) for r, line in zip(recs, lines))
            bar.update(len(recs))
    finally:
        bar.close()
        writer.close()

    gathered: List[Tuple[Dict[str, Dict[str, Any]], Dict[str, Dict[str, Any]], bool]] = gather(
        (new, skipped, finished)
    )
    predicted_now = sum(len(g[0]) for g in gathered)
    from_ranks = {k: v for g in gathered for k, v in g[1].items()}
    all_skipped = {i: from_ranks[i] for i in ids if i in from_ranks}  # in sample order
    by_kind: Dict[str, int] = {}
    for bad in all_skipped.values():
        by_kind[bad["kind"]] = by_kind.get(bad["kind"], 0) + 1
    result = SplitResult(name, split, None, len(ids), predicted_now, len(done), skipped=dict(sorted(by_kind.items())))
    if not all(g[2] for g in gathered):
        return result
    if dist_utils.is_main_process():
        merged = dict(done)
        for g, _, _ in gathered:
            merged.update(g)
        scored = [i for i in ids if i not in all_skipped]
        result.metrics, result.metrics_path = _score_and_write(
            name, split, scored, source, merged, scorer, settings, describe or {}, all_skipped
        )
    result.metrics, result.metrics_path = dist_utils.broadcast_object((result.metrics, result.metrics_path))
    return result


def _line(source: Any, record: EvalRecord, prediction: str) -> Dict[str, Any]:
    line: Dict[str, Any] = {"id": record.id, "prediction": prediction}
    if source.carries_records:
        line.update(prompt=record.prompt, target=record.target)
    return line


def _score_and_write(
    name: str,
    split: str,
    ids: List[str],
    source: Any,
    lines: Dict[str, Dict[str, Any]],
    scorer: Scorer,
    settings: EvalSettings,
    describe: Dict[str, Any],
    skipped: Dict[str, Dict[str, Any]],
) -> Tuple[Dict[str, float], Optional[str]]:
    """Score the predictions of ``ids`` (the readable samples) and write the merged file (and metrics file)."""
    missing = [i for i in ids if i not in lines]
    if missing:
        raise RuntimeError(f"{name}/{split}: {len(missing)} samples have no prediction, e.g. {missing[:3]}")
    stem = _stem(name, split)
    records = source.records(ids, lines)
    rows = []
    for rec in records:
        pred = lines[rec.id]["prediction"]
        rows.append(source.row(rec, pred, scorer.score(rec, pred)))
    # every sample unreadable: nothing to score (the skipped counts still say why)
    metrics = {k: round(float(v), 6) for k, v in scorer.aggregate(records, rows).items()} if records else {}
    _atomic_write(
        os.path.join(settings.output_dir, settings.predictions_file.format(stem=stem)),
        "".join(json.dumps(source.merged_line(rec, row), ensure_ascii=False) + "\n" for rec, row in zip(records, rows)),
    )
    if not settings.metrics_file:
        return metrics, None
    path = os.path.join(settings.output_dir, f"{stem}_metrics.json")
    summary = {
        "benchmark": name,
        "split": split,
        **describe,
        "samples": len(records),
        "metrics": metrics,
        "skipped": [{"id": k, **v} for k, v in skipped.items()],
        "settings": settings.fingerprint,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _atomic_write(path, json.dumps(summary, indent=2) + "\n")
    return metrics, path


def _atomic_write(path: str, text: str) -> None:
    """``text`` to ``path`` through a fsynced temporary file and a rename (:func:`~minigpt.common.io.write_atomically`)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    write_atomically(path, write)
