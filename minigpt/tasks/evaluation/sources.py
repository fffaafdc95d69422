"""A split as the evaluation loop reads it: benchmark records (eval scripts) or a dataset's samples (training).

A source offers the loop the ids of its items up front (so a rerun knows what is left to predict),
``load(i)`` -> ``(record, model input)`` run inside the DataLoader, and, for scoring on rank 0, every
record in order. A :class:`RecordSource` knows its records before predicting (the benchmark readers
made them); a :class:`DatasetSource` learns each sample's record only by reading the sample, so the
loop saves the record with the prediction (``carries_records``) and scores from what was saved.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from minigpt.tasks.evaluation.records import EvalRecord

ImageLoader = Callable[[str], torch.Tensor]

# the keys of a dataset sample that scoring reads besides its task, answer and id (see scorers.TASK_SCORERS)
SAMPLE_TARGET_KEYS = ("answers", "question_type", "gt_box", "image_size", "captions", "scienceqa", "drawing")


class RecordSource:
    """Benchmark records; ``load`` reads each record's image (a path) with ``load_image``."""

    carries_records = False

    def __init__(self, records: Sequence[EvalRecord], load_image: ImageLoader) -> None:
        self._records = list(records)
        self.load_image = load_image
        self.ids = [r.id for r in self._records]

    def load(self, i: int) -> Tuple[EvalRecord, Optional[torch.Tensor]]:
        rec = self._records[i]
        return rec, None if rec.image is None else self.load_image(rec.image)

    def records(self, ids: Sequence[str], lines: Mapping[str, Dict[str, Any]]) -> List[EvalRecord]:
        """The records of ``ids`` in record order (the ids to score: unreadable samples left out)."""
        wanted = set(ids)
        return [r for r in self._records if r.id in wanted]

    def row(self, record: EvalRecord, prediction: str, scored: Dict[str, Any]) -> Dict[str, Any]:
        return {"id": record.id, "prediction": prediction, **scored}

    def merged_line(self, record: EvalRecord, row: Dict[str, Any]) -> Dict[str, Any]:
        return {**row, "prompt": record.prompt, "image": record.image, "target": record.target}


def sample_record(item_id: str, sample: Mapping[str, Any]) -> EvalRecord:
    """The record of one dataset sample: its instruction (first turn) and, as target, what scoring reads."""
    instruction, answer = sample["instruction_input"], sample["answer"]
    target = {
        "sample_id": sample["sample_id"],
        "task": sample["task"],
        "answer": answer if isinstance(answer, str) else answer[0],
        **{k: sample[k] for k in SAMPLE_TARGET_KEYS if k in sample},
    }
    prompt = instruction if isinstance(instruction, str) else instruction[0]
    return EvalRecord(id=item_id, image=None, prompt=prompt, target=json.loads(json.dumps(target)))


class DatasetSource:
    """The first ``n`` samples of a map-style dataset split; ids are sample indices, inputs the samples."""

    carries_records = True

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset = dataset
        self.ids = [str(i) for i in range(n)]

    def load(self, i: int) -> Tuple[EvalRecord, Dict[str, Any]]:
        sample = self.dataset[i]
        return sample_record(self.ids[i], sample), sample

    def records(self, ids: Sequence[str], lines: Mapping[str, Dict[str, Any]]) -> List[EvalRecord]:
        return [EvalRecord(i, None, lines[i]["prompt"], lines[i]["target"]) for i in ids]

    def row(self, record: EvalRecord, prediction: str, scored: Dict[str, Any]) -> Dict[str, Any]:
        return scored

    def merged_line(self, record: EvalRecord, row: Dict[str, Any]) -> Dict[str, Any]:
        return row
