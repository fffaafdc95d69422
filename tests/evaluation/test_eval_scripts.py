"""The per-benchmark eval scripts (eval_scripts/eval_{vqa,ref,caption,scienceqa}.py) end to end.

A data root is written in each benchmark's released annotation format (OK-VQA's question and
annotation pair, VizWiz val.json, IconQA as MiniGPT-v2 ships it, GQA's testdev dict, VSR jsonl,
Hateful Memes jsonl, RefCOCO's refer pickle, LAVIS's Karpathy test, ScienceQA's problems.json and
pid_splits.json) around synthetic shape images, plus the quickstart's own synthetic test split.
The model is the `tiny` preset with random weights (seeded the same in every process): the
figures are meaningless but must be identical however the run is split or interrupted.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from PIL import Image

from minigpt.evaluation.benchmarks import BENCHMARKS, get_benchmark
from minigpt.evaluation.benchmarks.base import BenchmarkDataError, EvalRecord
from minigpt.evaluation.benchmarks.runner import (
    EvalSettings,
    PredictionWriter,
    part_files,
    read_predictions,
    run_split,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL_CFG = REPO_ROOT / "eval_configs" / "quickstart_eval.yaml"
N = 8  # records per benchmark
VQA_SETS = "okvqa,vizwiz,iconvqa,gqa,vsr,hm,synthetic_vqa"
REF_SETS = "refcoco,synthetic_refcoco"


# -- a data root in the released formats ------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".png":
        Image.open(src).save(dst)
    else:
        shutil.copyfile(src, dst)


def build_benchmark_root(root: Path) -> Path:
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(root / "synthetic", n_train=2, n_test=N, seed=3, progress=False)
    syn = root / "synthetic"
    imgs = [syn / "images" / "test" / f"{i:06d}.jpg" for i in range(N)]
    vqa = json.loads((syn / "vqa" / "vqa_test.json").read_text())
    one_q = {}  # the first synthetic question of each image: real questions with known answers
    for q in vqa:
        one_q.setdefault(q["image"], q)
    qs = [one_q[f"test/{i:06d}.jpg"] for i in range(N)]

    # OK-VQA: the official questions/annotations pair, COCO val2014 file names
    _write_json(root / "okvqa" / "OpenEnded_mscoco_val2014_questions.json", {"questions": [
        {"image_id": 100 + i, "question": q["question"], "question_id": 1000 + i} for i, q in enumerate(qs)]})
    _write_json(root / "okvqa" / "mscoco_val2014_annotations.json", {"annotations": [
        {"question_id": 1000 + i, "image_id": 100 + i, "answer_type": "other", "question_type": "what",
         "answers": [{"answer": a, "answer_id": k + 1, "raw_answer": a, "answer_confidence": "yes"}
                     for k, a in enumerate(q["answer"])]} for i, q in enumerate(qs)]})
    for i in range(N):
        _copy(imgs[i], root / "coco" / "images" / "val2014" / f"COCO_val2014_{100 + i:012d}.jpg")
    # VizWiz val.json
    _write_json(root / "vizwiz" / "val.json", [
        {"image": f"VizWiz_val_{i:08d}.jpg", "question": q["question"], "answerable": 1, "answer_type": "other",
         "answers": [{"answer": a, "answer_confidence": "yes"} for a in q["answer"]]} for i, q in enumerate(qs)])
    for i in range(N):
        _copy(imgs[i], root / "vizwiz" / "val" / f"VizWiz_val_{i:08d}.jpg")
    # IconQA choose_txt as MiniGPT-v2's choose_text_val.json (answer given as the choice index in half of them)
    icon = []
    for i in range(N):
        choices = ["circle", "square", "triangle"]
        icon.append({"image_id": str(5000 + i), "question": "Which shape is shown?", "choices": choices,
                     "answer": i % 3 if i % 2 else choices[i % 3]})
        _copy(imgs[i], root / "iconvqa" / "iconvqa_images" / str(5000 + i) / "image.png")
    _write_json(root / "iconvqa" / "choose_text_val.json", icon)
    # GQA testdev balanced: the release's {qid: {imageId, question, answer}}
    _write_json(root / "gqa" / "testdev_balanced_questions.json", {
        f"20{i:06d}": {"imageId": f"n{i}", "question": q["question"], "answer": q["answer"][0],
                       "types": {"structural": "query" if i % 2 else "verify"}} for i, q in enumerate(qs)})
    for i in range(N):
        _copy(imgs[i], root / "gqa" / "images" / f"n{i}.jpg")
    # VSR zero-shot test.jsonl; images under train2017/ (the reader looks there too)
    _write_jsonl(root / "vsr" / "test.jsonl", [
        {"image": f"{i:012d}.jpg", "caption": "The circle is left of the square.", "label": i % 2,
         "relation": "left of"} for i in range(N)])
    for i in range(N):
        _copy(imgs[i], root / "vsr" / "images" / "train2017" / f"{i:012d}.jpg")
    # Hateful Memes dev.jsonl
    _write_jsonl(root / "hateful_meme" / "dev.jsonl", [
        {"id": 42000 + i, "img": f"img/{42000 + i}.png", "label": i % 2, "text": "shapes everywhere"}
        for i in range(N)])
    for i in range(N):
        _copy(imgs[i], root / "hateful_meme" / "img" / f"{42000 + i}.png")
    # RefCOCO: the refer pickle + instances.json, the synthetic refs spread over val / testA / testB
    refs = pickle.loads((syn / "refcoco" / "refs(unc).p").read_bytes())
    inst = json.loads((syn / "refcoco" / "instances.json").read_text())
    test_refs = [r for r in refs if r["split"] == "val"]
    images = {im["id"]: im for im in inst["images"]}
    for k, r in enumerate(test_refs):
        r["split"] = ("val", "testA", "testB")[k % 3]
    coco_images = []
    for im in images.values():
        if not im["file_name"].startswith("test/"):
            continue
        name = f"COCO_train2014_{im['id']:012d}.jpg"
        _copy(syn / "images" / im["file_name"], root / "coco" / "images" / "train2014" / name)
        coco_images.append({**im, "file_name": name})
    ref_dir = root / "refcoco" / "refcoco"
    ref_dir.mkdir(parents=True)
    (ref_dir / "refs(unc).p").write_bytes(pickle.dumps(test_refs, protocol=2))
    _write_json(ref_dir / "instances.json", {**inst, "images": coco_images})
    # COCO Karpathy test (LAVIS's list form, no image_id: it comes from the file name)
    caps = json.loads((syn / "coco_caption" / "coco_karpathy_test.json").read_text())
    _write_json(root / "coco" / "annotations" / "coco_karpathy_test.json", [
        {"image": f"val2014/COCO_val2014_{100 + i:012d}.jpg", "caption": c["caption"] + ["some shapes."]}
        for i, c in enumerate(caps)])
    # ScienceQA: problems.json + pid_splits.json; every third problem has no image (a text-only question)
    problems, test_pids = {}, []
    for i in range(N + N // 2):
        pid = str(700 + i)
        has_image = i % 3 != 2
        problems[pid] = {
            "question": "Which shape is in the picture?", "choices": ["circle", "square", "triangle"][: 2 + i % 2],
            "answer": i % 2, "hint": "Look closely." if i % 2 else "", "image": "image.png" if has_image else None,
            "subject": ("natural science", "social science")[i % 2], "grade": f"grade{3 + i}", "split": "test",
            "lecture": "", "solution": "",
        }
        test_pids.append(pid)
        if has_image:
            _copy(imgs[i % N], root / "scienceqa" / "images" / "test" / pid / "image.png")
    _write_json(root / "scienceqa" / "problems.json", problems)
    _write_json(root / "scienceqa" / "pid_splits.json", {"test": test_pids, "val": []})
    return root


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory) -> Path:
    return build_benchmark_root(tmp_path_factory.mktemp("benchmarks"))


# -- running the scripts ----------------------------------------------------------------------------
def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("MINIGPT_DATA_ROOT", None)
    return env


def _args(script: str, data_root: Path, out: Path, *extra: str, max_new_tokens: int = 6) -> List[str]:
    return [
        f"eval_scripts/{script}", "--cfg-path", str(EVAL_CFG), "--data-root", str(data_root),
        "--output-dir", str(out), "--batch-size", "3", "--max-new-tokens", str(max_new_tokens), "--no-progress", *extra,
        "--options", "run.num_threads=1", "run.dist_backend=gloo", "run.device=cpu",
    ]


def run_script(script: str, data_root: Path, out: Path, *extra: str, nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    proc = subprocess.run(
        [*launcher, *_args(script, data_root, out, *extra)],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def figures(out: Path) -> Dict[str, dict]:
    """``{"<benchmark>_<split>": metrics}`` from every metrics file an evaluation wrote."""
    return {
        p.name[: -len("_metrics.json")]: json.loads(p.read_text())["metrics"]
        for p in sorted(out.glob("*_metrics.json"))
    }


def merged_predictions(out: Path, stem: str) -> List[dict]:
    return [json.loads(line) for line in (out / f"{stem}_predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def vqa_single(bench_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqa1")
    proc = run_script("eval_vqa.py", bench_root, out, "--dataset", VQA_SETS)
    return out, proc


@pytest.fixture(scope="module")
def ref_single(bench_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref1")
    proc = run_script("eval_ref.py", bench_root, out, "--dataset", REF_SETS, "--split", "val,testA,testB")
    return out, proc


# -- readers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, split, count, prompt_start",
    [
        ("okvqa", "val", N, "[vqa] Based on the image, respond to this question with a short answer: "),
        ("vizwiz", "val", N, "[vqa] The question is '"),
        ("iconvqa", "val", N, "[vqa] Based on the image, respond to this question with a short answer: "),
        ("gqa", "testdev", N, "[vqa] Based on the image, respond to this question with a short answer: "),
        ("vsr", "test", N, "[vqa] Based on the image, is this statement true or false? "),
        ("hm", "dev", N, "This is an image writting 'shapes everywhere'. Is this image hateful?"),
        ("synthetic_vqa", "test", None, "[vqa] "),
        ("refcoco", "testA", None, "[refer] give me the location of "),
        ("synthetic_refcoco", "val", None, "[refer] give me the location of "),
        ("coco_caption", "test", N, "[caption] please describe this image?"),
        ("synthetic_coco_caption", "test", N, "[caption] please describe this image?"),
        ("scienceqa", "test", N + N // 2, "Question: Which shape is in the picture?\nContext: "),
        ("scienceqa_img", "test", N, "Question: Which shape is in the picture?\nContext: "),
    ],
)
def test_readers_take_the_released_formats(bench_root, name, split, count, prompt_start):
    bench = get_benchmark(name)
    records = bench.read(bench.resolve_paths(str(bench_root)), split)
    assert records and all(isinstance(r, EvalRecord) for r in records)
    if count is not None:
        assert len(records) == count
    assert len({r.id for r in records}) == len(records)
    assert all(r.prompt.startswith(prompt_start) for r in records), records[0].prompt
    assert all(os.path.isfile(r.image) for r in records if r.image is not None)  # ScienceQA: text-only ones have none
    json.dumps([r.target for r in records])  # the ground truth goes into the predictions file


def test_reader_ground_truth_details(bench_root):
    def read(name: str, split: str) -> List[EvalRecord]:
        b = get_benchmark(name)
        return b.read(b.resolve_paths(str(bench_root)), split)

    ok = read("okvqa", "val")[0]
    assert ok.id == "1000" and len(ok.target["answers"]) == 10
    icon = read("iconvqa", "val")
    assert [r.target["answer"] for r in icon[:4]] == ["circle", "square", "triangle", "circle"]  # index -> text
    # RefCOCO: the COCO xywh box becomes xyxy in pixels, one record per sentence of the split
    refs = pickle.loads((bench_root / "refcoco" / "refcoco" / "refs(unc).p").read_bytes())
    anns = {a["id"]: a for a in json.loads((bench_root / "refcoco" / "refcoco" / "instances.json").read_text())["annotations"]}
    test_a = read("refcoco", "testA")
    assert len(test_a) == sum(len(r["sentences"]) for r in refs if r["split"] == "testA")
    first = next(r for r in refs if r["split"] == "testA")
    x, y, w, h = anns[first["ann_id"]]["bbox"]
    assert test_a[0].target["box"] == [x, y, x + w, y + h]
    assert test_a[0].prompt == f"[refer] give me the location of {first['sentences'][0]['sent']}"
    # Karpathy test without image_id: the id is the COCO id in the file name
    assert read("coco_caption", "test")[0].id == "100"
    # ScienceQA asks every problem (text-only ones without an image), scienceqa_img only those with one;
    # LaVIN's prompt: context N/A without a hint
    problems = json.loads((bench_root / "scienceqa" / "problems.json").read_text())
    every = read("scienceqa", "test")
    assert [r.id for r in every] == list(problems)
    assert [r.image is None for r in every] == [p["image"] is None for p in problems.values()]
    assert every[2].meta == {"subject": "natural science", "grade": "G1-6", "has_text": False,
                             "has_image": False, "no_context": True}
    sqa = read("scienceqa_img", "test")
    assert [r.id for r in sqa] == [pid for pid, p in problems.items() if p["image"]]
    assert sqa[0].prompt == (
        "Question: Which shape is in the picture?\nContext: N/A\nOptions: (A) circle (B) square\nResponse:"
    )
    assert "Context: Look closely." in sqa[1].prompt and "(C) triangle" in sqa[1].prompt


def test_reader_errors_name_the_culprit(bench_root, tmp_path):
    b = get_benchmark("refcoco")
    with pytest.raises(BenchmarkDataError, match="no refs in split 'test'.*testA"):
        b.read(b.resolve_paths(str(bench_root)), "test")
    gqa = get_benchmark("gqa")
    paths = gqa.resolve_paths(str(bench_root), {"images": str(tmp_path / "nowhere")})
    with pytest.raises(BenchmarkDataError, match=r"nowhere.*n0\.jpg"):
        gqa.read(paths, "testdev")
    with pytest.raises(BenchmarkDataError, match="did you mean okvqa"):
        get_benchmark("okvq")


def test_every_benchmark_has_a_prompt_and_known_split():
    for name, b in BENCHMARKS.items():
        assert b.default_split in b.splits, name
        assert b.prompt.count("{}") <= 1, name


# -- prediction files -------------------------------------------------------------------------------
def test_prediction_files_survive_a_kill_mid_line(tmp_path):
    path = tmp_path / "predictions" / "x_val.rank0-of-1.jsonl"
    w = PredictionWriter(str(path))
    w.write([{"id": "a", "prediction": "one"}, {"id": "b", "prediction": "two"}])
    w.close()
    with open(path, "a") as fh:
        fh.write('{"id": "c", "predic')  # what a SIGKILL in the middle of a write leaves
    assert read_predictions([str(path)]) == {"a": "one", "b": "two"}
    w = PredictionWriter(str(path))  # reopening drops the unfinished line before appending
    w.write([{"id": "c", "prediction": "three"}])
    w.close()
    assert read_predictions([str(path)]) == {"a": "one", "b": "two", "c": "three"}
    assert part_files(str(tmp_path / "predictions"), "x", "val") == [str(path)]


# -- the runner in process, with a stand-in for the model --------------------------------------------
def _fake_model(calls: List[str]):
    def answer(images, prompts):
        assert all(img is not None and tuple(img.shape) == (3, 4, 4) for img in images)
        calls.extend(prompts)
        return ["yes" if len(p) % 2 else "no" for p in prompts]  # a deterministic answer per prompt

    return answer


def _load_image(path: str) -> torch.Tensor:
    return torch.zeros(3, 4, 4)


def test_run_split_resumes_and_refuses_other_settings(bench_root, tmp_path):
    bench = get_benchmark("hm")
    records = bench.read(bench.resolve_paths(str(bench_root)), "dev")
    settings = dict(output_dir=str(tmp_path / "a"), batch_size=3, progress=False, fingerprint={"max_new_tokens": 6})
    calls: List[str] = []
    whole = run_split(bench, "dev", records, _fake_model(calls), _load_image, EvalSettings(**settings))
    assert whole.metrics is not None and whole.predicted_now == N and len(calls) == N

    settings["output_dir"] = str(tmp_path / "b")
    calls.clear()
    stopped = run_split(bench, "dev", records, _fake_model(calls), _load_image, EvalSettings(**settings, max_batches=2))
    assert stopped.metrics is None and len(calls) == 6
    assert not (tmp_path / "b" / "hm_dev_metrics.json").exists()
    calls.clear()
    resumed = run_split(bench, "dev", records, _fake_model(calls), _load_image, EvalSettings(**settings))
    assert (resumed.reused, resumed.predicted_now, len(calls)) == (6, N - 6, N - 6)
    assert resumed.metrics == whole.metrics
    assert json.loads((tmp_path / "b" / "hm_dev_metrics.json").read_text())["metrics"] == whole.metrics

    other = EvalSettings(**{**settings, "fingerprint": {"max_new_tokens": 9}})
    with pytest.raises(BenchmarkDataError, match=r"max_new_tokens differ.*--overwrite"):
        run_split(bench, "dev", records, _fake_model(calls), _load_image, other)
    calls.clear()
    other.overwrite = True
    again = run_split(bench, "dev", records, _fake_model(calls), _load_image, other)
    assert again.reused == 0 and len(calls) == N


# -- end to end: single process, torchrun, resume ----------------------------------------------------
def test_eval_vqa_single_process(vqa_single):
    out, proc = vqa_single
    got = figures(out)
    assert set(got) == {
        "okvqa_val", "vizwiz_val", "iconvqa_val", "gqa_testdev", "vsr_test", "hm_dev", "synthetic_vqa_test"
    }
    assert all(0.0 <= v <= 1.0 for m in got.values() for v in m.values())
    assert set(got["synthetic_vqa_test"]) >= {"accuracy", "accuracy_color"}
    assert "accuracy_query" in got["gqa_testdev"] and "accuracy_other" in got["okvqa_val"]
    rows = merged_predictions(out, "okvqa_val")
    assert [r["id"] for r in rows] == [str(1000 + i) for i in range(N)]  # annotation order
    assert all(len(r["target"]["answers"]) == 10 and "score" in r for r in rows)
    assert "okvqa" in proc.stdout and "accuracy" in proc.stdout  # the final table
    summary = json.loads((out / "okvqa_val_metrics.json").read_text())
    assert summary["samples"] == N and summary["prompt"].startswith("[vqa] Based on the image")
    # a per-question-type chart for each split with types (VSR and Hateful Memes have none)
    chart = out / "synthetic_vqa_test_question_types.png"
    assert "pictures written to" in proc.stdout and str(chart) in proc.stdout
    assert Image.open(chart).size[0] > 200 and (out / "gqa_testdev_question_types.png").is_file()
    assert not (out / "vsr_test_question_types.png").exists()


def test_eval_vqa_torchrun_gives_identical_figures(vqa_single, bench_root, tmp_path):
    out1, _ = vqa_single
    out2 = tmp_path / "vqa2"
    run_script("eval_vqa.py", bench_root, out2, "--dataset", VQA_SETS, nproc=2)
    assert figures(out2) == figures(out1)
    for stem in ("okvqa_val", "hm_dev", "synthetic_vqa_test"):
        assert merged_predictions(out2, stem) == merged_predictions(out1, stem)
        # each rank wrote its own share of the predictions
        parts = part_files(str(out2 / "predictions"), *stem.rsplit("_", 1))
        assert len(parts) == 2 and all(read_predictions([p]) for p in parts)


def test_eval_ref_single_process(ref_single):
    out1, proc = ref_single
    got = figures(out1)
    # synthetic_refcoco has only "val": testA/testB are skipped for it, run for refcoco
    assert set(got) == {"refcoco_val", "refcoco_testA", "refcoco_testB", "synthetic_refcoco_val"}
    assert set(got["refcoco_val"]) == {"acc@0.5", "mean_iou", "box_parsed"}
    assert all(0.0 <= v <= 1.0 for m in got.values() for v in m.values())
    assert "synthetic_refcoco has no split 'testA'" in proc.stderr
    rows = merged_predictions(out1, "refcoco_val")
    assert all(set(r["target"]) == {"box", "width", "height"} and "iou" in r for r in rows)
    # box overlays for a sample of each split's predictions
    for stem in got:
        assert Image.open(out1 / f"{stem}_boxes.png").size[0] > 200, stem


@pytest.mark.slow  # ~30 s; test_eval_vqa_torchrun_gives_identical_figures covers torchrun in the default suite
def test_eval_ref_torchrun_gives_identical_figures(ref_single, bench_root, tmp_path):
    out1, _ = ref_single
    got = figures(out1)
    out2 = tmp_path / "ref2"
    run_script("eval_ref.py", bench_root, out2, "--dataset", REF_SETS, "--split", "val,testA,testB", nproc=2)
    assert figures(out2) == got
    assert merged_predictions(out2, "refcoco_testB") == merged_predictions(out1, "refcoco_testB")


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_interrupted_evaluation_resumes_with_the_same_figures(vqa_single, bench_root, tmp_path, nproc):
    out1, _ = vqa_single
    out = tmp_path / "resume"
    sets = "okvqa,synthetic_vqa"
    # stopped after one batch of 3: predictions saved, nothing scored
    proc = run_script("eval_vqa.py", bench_root, out, "--dataset", sets, "--max-batches", "1")
    assert "rerun the same command to continue" in proc.stdout
    assert figures(out) == {}
    first = read_predictions(part_files(str(out / "predictions"), "okvqa", "val"))
    assert len(first) == 3
    with open(part_files(str(out / "predictions"), "okvqa", "val")[0], "a") as fh:
        fh.write('{"id": "1003", "predi')  # and killed in the middle of writing the next line
    # the rerun (also on another number of processes) predicts only the rest
    proc = run_script("eval_vqa.py", bench_root, out, "--dataset", sets, nproc=nproc)
    assert "3 of 8 predictions already saved" in proc.stderr
    files = part_files(str(out / "predictions"), "okvqa", "val")
    if nproc == 1:
        assert len(read_predictions(files)) == N  # the unfinished line was dropped and then rewritten whole
    else:
        new = [p for p in files if p.endswith("-of-2.jsonl")]
        assert sum(len(read_predictions([p])) for p in new) == N - 3
    got = figures(out)
    assert got == {k: v for k, v in figures(out1).items() if k in got}
    assert set(got) == {"okvqa_val", "synthetic_vqa_test"}
    assert merged_predictions(out, "okvqa_val") == merged_predictions(out1, "okvqa_val")


def test_eval_caption_end_to_end(bench_root, tmp_path):
    out = tmp_path / "cap"
    run_script("eval_caption.py", bench_root, out, "--dataset", "coco_caption,synthetic_coco_caption")
    got = figures(out)
    assert set(got) == {"coco_caption_test", "synthetic_coco_caption_test"}
    assert set(got["coco_caption_test"]) >= {"CIDEr", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"}
    rows = merged_predictions(out, "coco_caption_test")
    assert [r["id"] for r in rows] == [str(100 + i) for i in range(N)]


def test_eval_scienceqa_end_to_end(bench_root, tmp_path):
    out = tmp_path / "sqa"
    run_script("eval_scienceqa.py", bench_root, out)
    got = figures(out)["scienceqa_test"]
    # the official table's columns the fixture fills (it has no language science, and grades 1-14)
    assert {"accuracy", "accuracy_nat", "accuracy_soc", "accuracy_txt", "accuracy_img", "accuracy_no",
            "accuracy_g1_6", "accuracy_g7_12", "accuracy_text_only"} <= set(got)
    assert "accuracy_lan" not in got
    rows = merged_predictions(out, "scienceqa_test")
    assert len(rows) == N + N // 2 and sum(r["image"] is None for r in rows) == N // 2


def test_wrong_family_dataset_is_an_error(bench_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, *_args("eval_ref.py", bench_root, tmp_path / "x", "--dataset", "okvqa")],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2 and "okvqa is not a referring expression" in proc.stderr


@pytest.mark.slow  # ~40 s: two evaluations on two processes
@pytest.mark.parametrize(
    "script, extra",
    [("eval_caption.py", ("--dataset", "coco_caption,synthetic_coco_caption")), ("eval_scienceqa.py", ())],
)
def test_caption_and_scienceqa_torchrun_give_identical_figures(bench_root, tmp_path, script, extra):
    run_script(script, bench_root, tmp_path / "one", *extra)
    run_script(script, bench_root, tmp_path / "two", *extra, nproc=2)
    assert figures(tmp_path / "one") and figures(tmp_path / "two") == figures(tmp_path / "one")


def test_sigkilled_evaluation_resumes_with_the_same_figures(vqa_single, bench_root, tmp_path):
    """A real ``kill -9`` once some predictions are on disk; the rerun predicts only the rest."""
    import signal
    import time

    out1, _ = vqa_single
    out = tmp_path / "killed"
    sets = "okvqa,vizwiz,iconvqa,gqa"
    cmd = [sys.executable, *_args("eval_vqa.py", bench_root, out, "--dataset", sets)]
    cmd[cmd.index("--batch-size") + 1] = "1"  # one record per batch: many flushes to land the kill between
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved: Dict[str, str] = {}
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "predictions").is_dir():
                saved = read_predictions([str(p) for p in (out / "predictions").glob("*.jsonl")])
                if len(saved) >= 2:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the evaluation ended before it could be killed"
    assert figures(out) == {}  # killed before any split was scored
    before = read_predictions([str(p) for p in (out / "predictions").glob("*.jsonl")])
    assert 2 <= len(before) < 4 * N
    rerun = run_script("eval_vqa.py", bench_root, out, "--dataset", sets)
    assert "predictions already saved" in rerun.stderr
    got = figures(out)
    assert set(got) == {"okvqa_val", "vizwiz_val", "iconvqa_val", "gqa_testdev"}
    assert got == {k: v for k, v in figures(out1).items() if k in got}
    for stem in got:
        assert merged_predictions(out, stem) == merged_predictions(out1, stem)
