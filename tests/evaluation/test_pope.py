"""POPE: its answer reading and five figures, its released file layout, the synthetic split, and eval_pope.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest
from PIL import Image

from minigpt.evaluation.benchmarks import get_benchmark
from minigpt.evaluation.benchmarks.base import BenchmarkDataError
from minigpt.tasks.evaluation.pope import pope_answer, pope_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, read",
    [
        ("No, there is not.", "no"),
        ("no", "no"),
        ("Yes, there is a dog.", "yes"),
        ("Yes. But no, not really.", "yes"),  # only the first sentence counts
        ("There is not a cat in the image", "no"),
        ("There isn't one", "yes"),  # POPE's word list has no contractions
        ("Nope", "yes"),
        ("no,", "no"),  # commas are dropped before the words are compared
        ("", "yes"),
    ],
)
def test_answers_are_read_as_pope_reads_them(text, read):
    assert pope_answer(text) == read


def test_the_five_figures_match_a_hand_count():
    # TP 2 (0, 4), FP 1 (1), TN 1 (2), FN 1 (3)
    got = pope_metrics(["yes", "yes", "no", "no", "yes"], ["yes", "no", "no", "yes", "yes"])
    assert got == pytest.approx(
        {"accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 0.6}
    )
    never_yes = pope_metrics(["no", "no"], ["yes", "no"])
    assert never_yes == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}
    with pytest.raises(ValueError, match="'maybe'"):
        pope_metrics(["maybe"], ["yes"])
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        pope_metrics(["yes", "no"], ["yes"])


# -- the released layout ------------------------------------------------------------------------------
def _released_root(root: Path, as_list: bool = False) -> Path:
    images = root / "coco" / "images" / "val2014"
    images.mkdir(parents=True)
    rows = []
    for i, image_id in enumerate((16631, 310196)):
        name = f"COCO_val2014_{image_id:012d}.jpg"
        Image.new("RGB", (32, 24), (i * 90, 40, 200)).save(images / name)
        rows += [
            {"question_id": 2 * i + 1, "image": name, "text": "Is there a person in the image?", "label": "yes"},
            {"question_id": 2 * i + 2, "image": name, "text": "Is there a giraffe in the image?", "label": "no"},
        ]
    path = root / "pope" / "coco" / "coco_pope_adversarial.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rows) if as_list else "".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("as_list", [False, True], ids=["json-lines", "json-list"])
def test_the_released_question_files_are_read(tmp_path, as_list):
    bench = get_benchmark("pope")
    records = bench.read(bench.resolve_paths(str(_released_root(tmp_path, as_list))), "adversarial")
    assert [r.id for r in records] == ["1", "2", "3", "4"]
    assert [r.target["label"] for r in records] == ["yes", "no", "yes", "no"]
    assert records[0].prompt == (
        "[vqa] Based on the image, respond to this question with a short answer: Is there a person in the image?"
    )
    assert os.path.basename(records[2].image) == "COCO_val2014_000000310196.jpg"


def test_bad_question_files_are_errors_naming_the_culprit(tmp_path):
    bench = get_benchmark("pope")
    root = _released_root(tmp_path)
    path = root / "pope" / "coco" / "coco_pope_adversarial.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace('"no"', '"maybe"'), *lines[2:]]) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"coco_pope_adversarial.json: entry 1 has label 'maybe'"):
        bench.read(bench.resolve_paths(str(root)), "adversarial")
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(BenchmarkDataError, match=r"coco_pope_adversarial.json:2 is not valid JSON"):
        bench.read(bench.resolve_paths(str(root)), "adversarial")
    with pytest.raises(BenchmarkDataError, match="coco_pope_random.json"):
        bench.read(bench.resolve_paths(str(root)), "random")  # not written: file not found, named


# -- the synthetic split --------------------------------------------------------------------------------
def _rows(data_root: Path, split: str):
    path = data_root / "synthetic" / "pope" / f"synthetic_pope_{split}.json"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_synthetic_split_asks_about_present_and_absent_shapes_in_equal_numbers(data_root):
    scenes = {}
    for line in (data_root / "synthetic" / "scenes_test.jsonl").read_text().splitlines():
        s = json.loads(line)
        scenes[s["image"]] = {f"{o['colour']} {o['kind']}" for o in s["objects"]}
    frequency = Counter(n for names in scenes.values() for n in names)
    together = Counter()
    for names in scenes.values():
        for a, b in combinations(sorted(names), 2):
            together[a, b] += 1
            together[b, a] += 1
    negatives = {}
    for split in ("random", "popular", "adversarial"):
        rows = _rows(data_root, split)
        assert sorted({r["image"] for r in rows}) == sorted(scenes)
        for image, present in scenes.items():
            asked = {r["text"].split(" ", 3)[3][: -len(" in the image?")]: r["label"] for r in rows if r["image"] == image}
            assert {n for n, label in asked.items() if label == "yes"} == present
            no = {n for n, label in asked.items() if label == "no"}
            assert len(no) == len(present) and not no & present
            negatives[split, image] = no
            if split == "popular":  # the absent pairs most frequent in the split
                others = [n for n in frequency if n not in present | no]
                assert min(frequency[n] for n in no) >= max((frequency[n] for n in others), default=0)
            if split == "adversarial":  # the absent pairs most often seen with this image's shapes
                score = {n: sum(together[p, n] for p in present) for n in frequency}
                others = [n for n in frequency if n not in present | no]
                assert min(score[n] for n in no) >= max((score[n] for n in others), default=0)
    images = list(scenes)
    assert any(negatives["random", i] != negatives["popular", i] for i in images)
    assert any(negatives["adversarial", i] != negatives["popular", i] for i in images)


def test_the_synthetic_split_is_read_by_its_benchmark(data_root):
    bench = get_benchmark("synthetic_pope")
    records = bench.read(bench.resolve_paths(str(data_root)), "popular")
    assert len(records) == len(_rows(data_root, "popular"))
    assert records[0].prompt.startswith("[vqa] Is there ") and os.path.isfile(records[0].image)


def test_eval_pope_scores_every_split_with_the_five_figures(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [
            sys.executable, "eval_scripts/eval_pope.py", "--cfg-path", "eval_configs/quickstart_eval.yaml",
            "--dataset", "synthetic_pope", "--data-root", str(data_root), "--output-dir", str(tmp_path),
            "--max-samples", "12", "--batch-size", "6", "--max-new-tokens", "3", "--no-progress",
            "--options", "run.num_threads=1", "run.device=cpu",
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for split in ("random", "popular", "adversarial"):
        saved = json.loads((tmp_path / f"synthetic_pope_{split}_metrics.json").read_text())
        assert set(saved["metrics"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
        rows = [json.loads(line) for line in (tmp_path / f"synthetic_pope_{split}_predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 12
        said = [pope_answer(r["prediction"]) for r in rows]
        assert saved["metrics"] == pytest.approx(pope_metrics(said, [r["target"]["label"] for r in rows]))
    assert "synthetic_pope" in proc.stdout and "yes_ratio" in proc.stdout
