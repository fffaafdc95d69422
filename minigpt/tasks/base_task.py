"""The task base: builds the model and datasets a config names, runs steps and evaluations."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List

import torch
from torch.utils.data import Dataset, IterableDataset

from minigpt.common import dist_utils
from minigpt.common.registry import registry
from minigpt.datasets.splits import iter_splits
from minigpt.tasks.evaluation.loop import EvalSettings, evaluate_split
from minigpt.tasks.evaluation.records import EvalRecord
from minigpt.tasks.evaluation.scorers import SAMPLES_SCORER
from minigpt.tasks.evaluation.sources import DatasetSource
from minigpt.tasks.evaluation.token_accuracy import token_accuracy

logger = logging.getLogger(__name__)


class BaseTask:
    """A training/evaluation recipe over the one sample schema."""

    @classmethod
    def setup_task(cls, cfg) -> "BaseTask":
        return cls()

    def build_model(self, cfg):
        model_cfg = cfg.model_cfg
        return registry.get_model_class(model_cfg.arch).from_config(model_cfg)

    def build_datasets(self, cfg) -> Dict[str, Dict[str, Dataset]]:
        rc = cfg.run_cfg
        splits = list(rc.get("test_splits") or [])
        if not rc.get("evaluate_only"):
            splits = list(rc.train_splits) + [s for s in splits if s not in rc.train_splits]
        out = {}
        for name, dcfg in cfg.datasets_cfg.items():
            builder = registry.get_builder_class(name)(dcfg, data_root=rc.data_root)
            out[name] = builder.build_datasets(splits=splits)
        return out

    def train_step(self, model, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        return model(samples)

    # -- evaluation ------------------------------------------------------------------------
    def predict(self, model, records: List[EvalRecord], batch: Dict[str, Any], run_cfg) -> List[str]:
        """The texts the evaluation scores for one batch: the model's answers to the records' prompts."""
        return model.generate(
            batch.get("image"),
            [r.prompt for r in records],
            max_new_tokens=int(run_cfg.eval_max_new_tokens),
            num_beams=int(run_cfg.eval_num_beams),
        )

    @torch.no_grad()
    def evaluate(
        self,
        model,
        datasets: Dict[str, Dict[str, Dataset]],
        splits: List[str],
        run_cfg,
        output_dir: str,
        progress: bool = True,
    ) -> Dict[str, float]:
        """Generate answers on every (dataset, split) and score them; each rank takes a shard.

        Each split runs through the one evaluation loop (:func:`minigpt.tasks.evaluation.loop.evaluate_split`)
        and is scored per sample task (:data:`~minigpt.tasks.evaluation.scorers.SAMPLES_SCORER`); the scored
        predictions go to ``<output_dir>/predictions/<dataset>_<split>.jsonl``. Returns
        ``{"<dataset>/<split>/<metric>": value}`` with each split's ``samples`` and ``seconds``, and
        ``skipped`` (unreadable samples, left out of the figures) with ``skipped_<kind>`` per kind; with
        ``run.eval_token_accuracy`` also ``token_accuracy`` (teacher-forced, on the answer tokens).
        """
        from minigpt.datasets.collate import collate_samples

        def predict(records: List[EvalRecord], samples: List[Dict[str, Any]]) -> List[str]:
            return self.predict(model, records, collate_samples(samples), run_cfg)

        # weights change between evaluations: predictions saved by an earlier one are never reused
        settings = EvalSettings(
            output_dir=output_dir,
            batch_size=int(run_cfg.batch_size_eval),
            progress=progress,
            overwrite=True,
            predictions_file=os.path.join("predictions", "{stem}.jsonl"),
            metrics_file=False,
        )
        was_training = model.training
        model.eval()
        results: Dict[str, float] = {}
        for name, split, ds in iter_splits(datasets, splits):
            if isinstance(ds, IterableDataset):
                logger.info("skipping evaluation of streaming dataset %s/%s", name, split)
                continue
            n = len(ds)
            if run_cfg.get("max_eval_samples"):
                n = min(n, int(run_cfg.max_eval_samples))
            if n == 0:
                continue
            t0 = time.time()
            result = evaluate_split(name, split, DatasetSource(ds, n), predict, SAMPLES_SCORER, settings)
            part = {**result.metrics, "samples": result.samples, "seconds": round(time.time() - t0, 2),
                    # unreadable samples (logged as they are met) are left out of the figures, counted by kind
                    "skipped": sum(result.skipped.values()),
                    **{f"skipped_{kind}": n for kind, n in result.skipped.items()}}
            if run_cfg.eval_token_accuracy:  # teacher-forced, on the same samples (MM-LLaMA's validation metric)
                part.update(token_accuracy(model, ds, n, int(run_cfg.batch_size_eval)))
            results.update({f"{name}/{split}/{k}": v for k, v in part.items()})
        model.train(was_training)
        return dist_utils.broadcast_object(results)  # rank 0's timings everywhere
