"""lmms-eval itself runs our model: a local GQA-format task through ``lmms_eval.evaluator.simple_evaluate``
scores what ``eval_scripts/eval_vqa.py --dataset gqa`` scores on the same files, answer for answer.

The model is the ``tiny`` TinyGPT-V with random weights saved once and loaded by both. Its answers are
noise, so the gold answers are made from them: every other question's gold is the model's own answer
(and the rest a word it never says), which puts both scores at a known, non-trivial value.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.evaluator import simple_evaluate  # noqa: E402
from lmms_eval.tasks import TaskManager  # noqa: E402

from minigpt.datasets.synthetic import generate_synthetic_dataset  # noqa: E402
from minigpt.evaluation.benchmarks.cli import main as eval_main  # noqa: E402
from minigpt.evaluation.benchmarks.vqa import SHORT_ANSWER_PROMPT  # noqa: E402
from minigpt.evaluation.lmms_eval_model import MiniGPTLMMS  # noqa: E402
from minigpt.models import load_model_and_preprocess  # noqa: E402
from minigpt.models.generation.chat import Chat  # noqa: E402

N = 6
MAX_NEW = 5
NEVER = "zzzzqx"

TASK_UTILS = '''
from PIL import Image

PROMPT = {prompt!r}


def doc_to_visual(doc):
    with Image.open(doc["image_path"]) as f:
        return [f.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT.format(doc["question"])
'''

TASK_YAML = """
task: minigpt_local_gqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new}
  until: ["{never}"]
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_run")
    generate_synthetic_dataset(root / "synthetic", n_train=2, n_test=N, seed=5, progress=False)
    vqa = json.loads((root / "synthetic" / "vqa" / "vqa_test.json").read_text())
    first = {}
    for q in vqa:
        first.setdefault(q["image"], q)
    qs = [first[f"test/{i:06d}.jpg"] for i in range(N)]
    images = [root / "synthetic" / "images" / q["image"] for q in qs]

    torch.manual_seed(11)
    model, _, _ = load_model_and_preprocess("tinygptv", "tiny", is_eval=True, device="cpu")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, str(ckpt / "trained.safetensors"))
    chat = Chat(model)
    prompts = [SHORT_ANSWER_PROMPT.format(q["question"]) for q in qs]
    own = chat.answer_batch([str(p) for p in images], prompts, max_new_tokens=MAX_NEW, num_beams=1)
    golds = [a if i % 2 == 0 and a.strip() else NEVER for i, a in enumerate(own)]

    # GQA testdev layout for the eval script
    gqa = root / "bench" / "gqa"
    (gqa / "images").mkdir(parents=True)
    for i, path in enumerate(images):
        (gqa / "images" / f"n{i}.jpg").write_bytes(path.read_bytes())
    (gqa / "testdev_balanced_questions.json").write_text(json.dumps({
        f"20{i:06d}": {"imageId": f"n{i}", "question": q["question"], "answer": golds[i],
                       "types": {"structural": "query"}} for i, q in enumerate(qs)}))
    # the same questions as an lmms-eval local task
    task_dir = root / "tasks" / "minigpt_local_gqa"
    task_dir.mkdir(parents=True)
    docs = task_dir / "docs.jsonl"
    docs.write_text("".join(json.dumps({"question": q["question"], "answer": golds[i],
                                        "image_path": str(gqa / "images" / f"n{i}.jpg")}) + "\n"
                            for i, q in enumerate(qs)))
    (task_dir / "utils.py").write_text(TASK_UTILS.format(prompt=SHORT_ANSWER_PROMPT))
    (task_dir / "minigpt_local_gqa.yaml").write_text(
        textwrap.dedent(TASK_YAML).format(docs=docs, max_new=MAX_NEW, never=NEVER))
    cfg = root / "eval.yaml"
    cfg.write_text(f"model: {{arch: tinygptv, model_type: tiny, ckpt: {ckpt}}}\nrun: {{evaluate_only: true, seed: 11}}\n")
    return {"root": root, "ckpt": ckpt, "cfg": cfg, "golds": golds, "own": own}


def test_lmms_eval_scores_a_local_task_as_our_eval_script_does(setup, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(setup["root"] / "hf_datasets"))
    out = setup["root"] / "ours"
    rc = eval_main("vqa", argv=[
        "--cfg-path", str(setup["cfg"]), "--dataset", "gqa", "--data-root", str(setup["root"] / "bench"),
        "--output-dir", str(out), "--batch-size", "3", "--max-new-tokens", str(MAX_NEW), "--no-progress",
        "--options", "run.num_threads=1", "run.device=cpu",
    ])
    assert rc == 0
    ours = json.loads((out / "gqa_testdev_metrics.json").read_text())["metrics"]
    our_preds = [json.loads(line)["prediction"] for line in (out / "gqa_testdev_predictions.jsonl").read_text().splitlines()]
    assert our_preds == setup["own"]

    lm = MiniGPTLMMS(pretrained="tinygptv", model_type="tiny", checkpoint=str(setup["ckpt"]), device="cpu",
                     batch_size=3, max_new_tokens=MAX_NEW)
    results = simple_evaluate(
        model=lm, tasks=["minigpt_local_gqa"], task_manager=TaskManager(include_path=str(setup["root"] / "tasks")),
        log_samples=True, bootstrap_iters=0, process_docs_parallel=1,
    )
    theirs = results["results"]["minigpt_local_gqa"]["exact_match,none"]
    samples = sorted(results["samples"]["minigpt_local_gqa"], key=lambda s: s["doc_id"])
    their_preds = [s["filtered_resps"][0] for s in samples]
    assert their_preds == our_preds
    expected = sum(g != NEVER for g in setup["golds"]) / N
    assert expected > 0
    assert theirs == pytest.approx(expected)
    assert ours["accuracy"] == pytest.approx(expected)
