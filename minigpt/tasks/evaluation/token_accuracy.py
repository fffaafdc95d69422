"""Teacher-forced token accuracy on the completions: the share of answer tokens the model's argmax predicts.

MM-LLaMA's validation metric (its ``compute_metrics``: argmax over the logits, counted on completion
tokens only). Here it runs on the same samples as the generation evaluation, in ``run.batch_size_eval``
batches, each rank every ``world_size``-th batch; the counts are summed over ranks, so the figure does
not depend on the number of processes. An unreadable sample is left out (counted as ``skipped``).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List

import torch
from torch.utils.data import Dataset

from minigpt.common import dist_utils
from minigpt.common.io import DatasetError
from minigpt.tasks.evaluation.loop import gather

logger = logging.getLogger(__name__)


@torch.no_grad()
def token_accuracy(model: Any, dataset: Dataset, n: int, batch_size: int) -> Dict[str, float]:
    """``{"token_accuracy", "answer_tokens", "token_accuracy_skipped"}`` over the first ``n`` samples of ``dataset``.

    ``model(batch)`` must return ``n_correct`` and ``n_tokens`` (every :class:`MultimodalLLM` does).
    """
    from minigpt.datasets.collate import collate_samples

    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    correct = tokens = skipped = 0
    starts = list(range(0, n, batch_size))
    for start in starts[rank::world]:
        samples: List[Dict[str, Any]] = []
        for i in range(start, min(start + batch_size, n)):
            try:
                samples.append(dataset[i])
            except DatasetError as exc:
                skipped += 1
                logger.warning("token accuracy: skipped sample %d: %s", i, exc)
        if not samples:
            continue
        out = model(collate_samples(samples))
        if "n_correct" not in out:
            raise TypeError(f"{type(model).__name__}.forward returns no n_correct: token accuracy needs it")
        correct += int(out["n_correct"])
        tokens += int(out["n_tokens"])
    parts = gather((correct, tokens, skipped))
    correct, tokens, skipped = (sum(p[k] for p in parts) for k in range(3))
    return {
        "token_accuracy": correct / tokens if tokens else 0.0,
        "answer_tokens": float(tokens),
        "token_accuracy_skipped": float(skipped),
    }
