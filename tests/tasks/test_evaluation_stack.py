"""The one evaluation stack (minigpt/tasks/evaluation): in training and in the eval scripts alike.

In-training evaluation (``BaseTask.evaluate`` on a dataset split) and the eval scripts' runner
(``run_split`` on a benchmark split) share one loop, and on the same synthetic data give the same
figures. The model is a stand-in that answers each question (or referring expression) the same way
whichever path asks, right for two in three of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from minigpt.common import grounding
from minigpt.evaluation.benchmarks import BENCHMARKS, get_benchmark
from minigpt.evaluation.benchmarks.runner import EvalSettings, run_split
from minigpt.tasks.evaluation.scorers import SCORERS

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL_CFG = REPO_ROOT / "eval_configs" / "quickstart_eval.yaml"
VQA_TAG = "[vqa] "
REFER_LEAD = "[refer] give me the location of "


class _Respond:
    """Answers keyed by the question / expression text found in a prompt, whatever the prompt's wording."""

    def __init__(self, vqa_records, ref_records) -> None:
        self.vqa: Dict[str, str] = {}
        self.refer: Dict[str, str] = {}
        for k, r in enumerate(vqa_records):
            self.vqa.setdefault(r.prompt[len(VQA_TAG):], r.target["answers"][0] if k % 3 else "zebra")
        for k, r in enumerate(ref_records):
            t = r.target
            right = grounding.format_box(t["box"], t["width"], t["height"])
            self.refer.setdefault(r.prompt[len(REFER_LEAD):], right if k % 3 else "{<0><0><10><10>}")

    def __call__(self, prompt: str) -> str:
        if VQA_TAG in prompt:
            return self.vqa[prompt.split(VQA_TAG, 1)[1]]
        expression = max((e for e in self.refer if e in prompt), key=len)  # the training prompts vary the wording
        return self.refer[expression]


class _ScriptedModel(torch.nn.Module):
    def __init__(self, respond: _Respond) -> None:
        super().__init__()
        self.respond = respond
        self.prompts: List[str] = []

    def generate(self, images, prompts, **kwargs) -> List[str]:
        self.prompts.extend(prompts)
        return [self.respond(p) for p in prompts]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("data")
    generate_synthetic_dataset(root / "synthetic", n_train=2, n_test=6, seed=1, progress=False)
    return root


def test_in_training_evaluation_and_eval_script_give_the_same_figures(synthetic_root, tmp_path):
    from minigpt.common.config import Config
    from minigpt.common.registry import registry

    vqa_bench, ref_bench = get_benchmark("synthetic_vqa"), get_benchmark("synthetic_refcoco")
    vqa_records = vqa_bench.read(vqa_bench.resolve_paths(str(synthetic_root)), "test")
    ref_records = ref_bench.read(ref_bench.resolve_paths(str(synthetic_root)), "val")
    respond = _Respond(vqa_records, ref_records)

    # the eval scripts' path: benchmark records through run_split
    def answer(images, prompts):
        return [respond(p) for p in prompts]

    settings = EvalSettings(output_dir=str(tmp_path / "script"), batch_size=4, progress=False)
    zeros = lambda path: torch.zeros(3, 4, 4)  # noqa: E731
    script_vqa = run_split(vqa_bench, "test", vqa_records, answer, zeros, settings).metrics
    script_ref = run_split(ref_bench, "val", ref_records, answer, zeros, settings).metrics

    # in-training evaluation: the same files read by the training readers, the task's evaluate
    cfg = Config(str(EVAL_CFG), [f"run.data_root={synthetic_root}", "run.batch_size_eval=4", "run.max_eval_samples=1000"])
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    datasets = {k: v for k, v in task.build_datasets(cfg).items() if k in ("synthetic_vqa", "synthetic_refcoco")}
    model = _ScriptedModel(respond)
    train = task.evaluate(model, datasets, ["test"], cfg.run_cfg, str(tmp_path / "train"), progress=False)

    assert train["synthetic_vqa/test/samples"] == len(vqa_records)
    assert train["synthetic_refcoco/test/samples"] == len(ref_records)
    assert 0.0 < script_vqa["accuracy"] < 1.0 and 0.0 < script_ref["acc@0.5"] < 1.0  # figures that can differ
    assert train["synthetic_vqa/test/vqa_accuracy"] == round(script_vqa["accuracy"], 4)
    per_type = {k: v for k, v in script_vqa.items() if k.startswith("accuracy_")}
    assert len(per_type) >= 3
    for key, value in per_type.items():
        assert train[f"synthetic_vqa/test/vqa_{key}"] == round(value, 4), key
    assert train["synthetic_refcoco/test/grounding_acc@0.5"] == round(script_ref["acc@0.5"], 4)
    assert train["synthetic_refcoco/test/grounding_mean_iou"] == round(script_ref["mean_iou"], 4)
    # the training prompts are the training readers' (image slot, tag, template), not the benchmark's
    assert all(p.startswith("<Img><ImageHere></Img> [") for p in model.prompts)

    # in-training predictions: one scored line per sample, as before the stacks were merged
    rows = [json.loads(line) for line in (tmp_path / "train" / "predictions" / "synthetic_vqa_test.jsonl").open()]
    assert len(rows) == len(vqa_records)
    assert set(rows[0]) >= {"sample_id", "task", "prediction", "answer", "score", "question_type"}
    assert [r["sample_id"] for r in rows] == [f"synthetic_vqa:{r.id}" for r in vqa_records]


def test_every_benchmark_is_in_the_scorers_table():
    assert set(BENCHMARKS) <= set(SCORERS)
    assert all(BENCHMARKS[name].scorer is SCORERS[name] for name in BENCHMARKS)


def test_the_tasks_layer_does_not_import_the_evaluation_layer():
    code = (
        "import sys, minigpt.tasks.base_task, minigpt.tasks.image_text_pretrain, minigpt.runners.runner_iter; "
        "bad = sorted(m for m in sys.modules if m.startswith('minigpt.evaluation')); "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_corrupt_image_is_skipped_counted_and_reported_by_both_paths(tmp_path, caplog):
    from minigpt.common.config import Config
    from minigpt.common.registry import registry
    from minigpt.datasets.synthetic import generate_synthetic_dataset
    from minigpt.evaluation.benchmarks.cli import _ImageLoader
    from minigpt.processors.image import ImageEvalProcessor

    root = tmp_path / "data"
    generate_synthetic_dataset(root / "synthetic", n_train=2, n_test=6, seed=1, progress=False)
    vqa_bench, ref_bench = get_benchmark("synthetic_vqa"), get_benchmark("synthetic_refcoco")
    vqa_records = vqa_bench.read(vqa_bench.resolve_paths(str(root)), "test")
    ref_records = ref_bench.read(ref_bench.resolve_paths(str(root)), "val")
    broken = Path(vqa_records[0].image)
    broken.write_bytes(b"\xff\xd8\xff\xe0 a jpeg cut short")
    bad_ids = [r.id for r in vqa_records if r.image == str(broken)]
    respond = _Respond(vqa_records, ref_records)

    # the eval scripts' path, with two loader workers: the skip travels back from the worker
    settings = EvalSettings(output_dir=str(tmp_path / "script"), batch_size=4, num_workers=2, progress=False)
    with caplog.at_level("WARNING", logger="minigpt.tasks.evaluation.loop"):
        result = run_split(vqa_bench, "test", vqa_records, lambda images, prompts: [respond(p) for p in prompts],
                           _ImageLoader(ImageEvalProcessor(image_size=32)), settings)
    assert result.skipped == {"decode_error": len(bad_ids)} and result.metrics is not None
    warned = [r.getMessage() for r in caplog.records if "skipped unreadable sample" in r.getMessage()]
    assert len(warned) == len(bad_ids) and all(str(broken) in m for m in warned), warned
    summary = json.loads(Path(result.metrics_path).read_text())
    assert summary["samples"] == len(vqa_records) - len(bad_ids)
    assert [(s["id"], s["kind"], s["path"]) for s in summary["skipped"]] == [(i, "decode_error", str(broken)) for i in bad_ids]
    scored = [json.loads(line) for line in (tmp_path / "script" / "synthetic_vqa_test_predictions.jsonl").open()]
    assert len(scored) == len(vqa_records) - len(bad_ids) and not {r["id"] for r in scored} & set(bad_ids)

    # in-training evaluation: the training readers raise for the same file; the split still gets its figures
    cfg = Config(str(EVAL_CFG), [f"run.data_root={root}", "run.batch_size_eval=4", "run.max_eval_samples=1000"])
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    datasets = {k: v for k, v in task.build_datasets(cfg).items() if k in ("synthetic_vqa", "synthetic_refcoco")}
    caplog.clear()
    with caplog.at_level("WARNING", logger="minigpt.tasks.evaluation.loop"):
        train = task.evaluate(_ScriptedModel(respond), datasets, ["test"], cfg.run_cfg, str(tmp_path / "train"),
                              progress=False)
    assert train["synthetic_vqa/test/skipped"] == train["synthetic_vqa/test/skipped_decode_error"] == len(bad_ids)
    assert 0.0 <= train["synthetic_vqa/test/vqa_accuracy"] <= 1.0
    bad_refs = sum(r.image == str(broken) for r in ref_records)
    assert train["synthetic_refcoco/test/skipped"] == bad_refs
    assert any(str(broken) in r.getMessage() and "synthetic_vqa/test" in r.getMessage() for r in caplog.records)
