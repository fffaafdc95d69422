"""The task base: builds the model and datasets a config names, runs steps and evaluations."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from typing import Any, Dict, List

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from minigpt.common import dist_utils
from minigpt.common.registry import registry
from minigpt.evaluation import metrics as M

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
        """Generate answers on every (dataset, split) and score them; each rank takes a shard."""
        from tqdm import tqdm

        from minigpt.datasets.collate import collate_samples

        was_training = model.training
        model.eval()
        results: Dict[str, float] = {}
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        for name, by_split in datasets.items():
            for split in splits:
                ds = by_split.get(split)
                if ds is None:
                    continue
                if isinstance(ds, IterableDataset):
                    logger.info("skipping evaluation of streaming dataset %s/%s", name, split)
                    continue
                n = len(ds)
                if run_cfg.get("max_eval_samples"):
                    n = min(n, int(run_cfg.max_eval_samples))
                shard = Subset(ds, list(range(rank, n, world)))
                loader = DataLoader(
                    shard, batch_size=int(run_cfg.batch_size_eval), collate_fn=collate_samples, num_workers=0
                )
                rows = []
                t0 = time.time()
                bar = tqdm(loader, desc=f"eval {name}/{split}", disable=not (progress and rank == 0), leave=False)
                for batch in bar:
                    prompts = [x if isinstance(x, str) else x[0] for x in batch["instruction_input"]]
                    preds = model.generate(
                        batch.get("image"),
                        prompts,
                        max_new_tokens=int(run_cfg.eval_max_new_tokens),
                        num_beams=int(run_cfg.eval_num_beams),
                    )
                    for i, pred in enumerate(preds):
                        rows.append(self._score_row(batch, i, pred))
                rows = self._gather(rows)
                if rank == 0 and rows:
                    part = self._aggregate(rows)
                    part["samples"] = len(rows)
                    part["seconds"] = round(time.time() - t0, 2)
                    results.update({f"{name}/{split}/{k}": v for k, v in part.items()})
                    os.makedirs(os.path.join(output_dir, "predictions"), exist_ok=True)
                    with open(os.path.join(output_dir, "predictions", f"{name}_{split}.jsonl"), "w") as fh:
                        for r in rows:
                            fh.write(json.dumps(r) + "\n")
        model.train(was_training)
        return dist_utils.broadcast_object(results)

    @staticmethod
    def _gather(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        if not dist_utils.is_dist():
            return rows
        import torch.distributed as dist

        parts: List[Any] = [None] * dist_utils.get_world_size()
        dist.all_gather_object(parts, rows)
        return [r for p in parts for r in p]

    @staticmethod
    def _score_row(batch: Dict[str, Any], i: int, pred: str) -> Dict[str, Any]:
        task = batch["task"][i]
        answer = batch["answer"][i]
        answer = answer if isinstance(answer, str) else answer[0]
        row: Dict[str, Any] = {"sample_id": batch["sample_id"][i], "task": task, "prediction": pred, "answer": answer}
        if task == "vqa":
            answers = batch["answers"][i] if "answers" in batch else [answer]
            row["score"] = M.vqa_accuracy(pred, answers)
            if "question_type" in batch:
                row["question_type"] = batch["question_type"][i]
        elif task == "refer":
            w, h = batch["image_size"][i]
            box = M.parse_box(pred)
            row["iou"] = M.iou(M.grid_to_pixels(box, w, h), batch["gt_box"][i]) if box else 0.0
            row["score"] = float(row["iou"] >= 0.5)
        elif task == "caption":
            row["references"] = list(batch["captions"][i]) if "captions" in batch else [answer]
            row["score"] = float(M.normalize_answer(pred) in {M.normalize_answer(r) for r in row["references"]})
        else:
            row["score"] = float(M.normalize_answer(pred) == M.normalize_answer(answer))
        return row

    @staticmethod
    def _aggregate(rows: List[Dict[str, Any]]) -> Dict[str, float]:
        out: Dict[str, float] = {}
        by_task = defaultdict(list)
        for r in rows:
            by_task[r["task"]].append(r)
        for task, rs in by_task.items():
            mean = sum(r["score"] for r in rs) / len(rs)
            if task == "vqa":
                out["vqa_accuracy"] = mean
                by_type = defaultdict(list)
                for r in rs:
                    if "question_type" in r:
                        by_type[r["question_type"]].append(r["score"])
                for qt, scores in sorted(by_type.items()):
                    out[f"vqa_accuracy_{qt}"] = sum(scores) / len(scores)
            elif task == "refer":
                out["grounding_acc@0.5"] = mean
                out["grounding_mean_iou"] = sum(r["iou"] for r in rs) / len(rs)
            elif task == "caption":
                out["caption_exact"] = mean
                out["caption_bleu4"] = M.corpus_bleu4([r["prediction"] for r in rs], [r["references"] for r in rs])
            else:
                out[f"{task}_accuracy"] = mean
        return {k: round(v, 4) for k, v in out.items()}
