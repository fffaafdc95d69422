"""The synthetic generator's real layout: every builder of the published mixtures reads it with its defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest

from minigpt.common.registry import registry
from minigpt.datasets.synthetic import generate_synthetic_dataset, is_complete, iter_examples
from minigpt.datasets.synthetic.real_layout import REAL_LAYOUT_BUILDERS, default_build_info
from minigpt.datasets.synthetic.scenes import make_grounded_caption

N_TRAIN, N_TEST, SEED = 40, 10, 3

# TinyGPT-V's and MiniGPT-v2's published mixtures, builder by builder.
PUBLISHED = (
    "laion cc_sbu cc_sbu_align coco_caption coco_vqa okvqa aokvqa gqa ocrvqa textcaps llava_conversation "
    "llava_detail llava_reason refcoco refcocop refcocog invrefcoco invrefcocop invrefcocog "
    "flickr_grounded_caption flickr_caption_to_phrase flickr_object_to_phrase unnatural_instruction "
    "multitask_conversation refvg llava_cc3m llava_instruct_150k videochat_instruct"
).split()


@pytest.fixture(scope="module")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real_layout")
    generate_synthetic_dataset(
        root, n_train=N_TRAIN, n_test=N_TEST, seed=SEED, shard_size=16, progress=False, real_layout=True
    )
    return root


def _first(dataset: Any) -> Dict[str, Any]:
    return dataset[0] if hasattr(dataset, "__len__") else next(iter(dataset))


def test_every_published_builder_is_laid_out() -> None:
    assert sorted(REAL_LAYOUT_BUILDERS) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", REAL_LAYOUT_BUILDERS)
def test_builder_reads_its_default_paths(real_root: Path, name: str) -> None:
    datasets = registry.get_builder_class(name)(None, data_root=str(real_root)).build_datasets()
    assert "train" in datasets
    for split, dataset in datasets.items():
        sample = _first(dataset)
        assert sample["instruction_input"] and sample["answer"], (name, split)
        if name == "unnatural_instruction":
            assert sample["image"] is None
        elif name == "videochat_instruct":  # a clip through ImageBind's protocol: 5 clips x 3 crops, 2 frames
            assert tuple(sample["image"].shape) == (15, 3, 2, 224, 224), (name, split)
        else:
            assert tuple(sample["image"].shape) == (3, 224, 224), (name, split)


def test_manifest_and_completeness(real_root: Path, tmp_path: Path) -> None:
    manifest = json.loads((real_root / "manifest.json").read_text())
    assert manifest["real_layout"] is True
    for rel in manifest["files"]["real_layout"]:
        assert (real_root / rel).exists(), rel
    assert is_complete(real_root, N_TRAIN, N_TEST, SEED, real_layout=True)
    assert is_complete(real_root, N_TRAIN, N_TEST, SEED)  # a laid-out root also serves a plain request

    plain = tmp_path / "plain"
    generate_synthetic_dataset(plain, n_train=4, n_test=2, seed=SEED, progress=False)
    assert "real_layout" not in json.loads((plain / "manifest.json").read_text())
    assert not (plain / "coco").exists() and not (plain / "laion").exists()
    assert not is_complete(plain, 4, 2, SEED, real_layout=True)


def test_shard_ranges_link_to_real_shards(real_root: Path) -> None:
    n_shards = -(-N_TRAIN // 16)
    laion = default_build_info("laion").shards.train
    last = re.search(r"\.\.(\d+)\}", laion).group(1)
    link = real_root / "laion" / f"train-{last}.tar"
    assert link.is_symlink()
    assert link.resolve() == (real_root / "cc_sbu" / f"train-{int(last) % n_shards:05d}.tar").resolve()


def test_rows_derive_from_the_scenes(real_root: Path) -> None:
    examples = list(iter_examples(N_TRAIN, SEED, "train"))
    aokvqa = json.loads((real_root / "aokvqa/aokvqa_v1p0_train.json").read_text())
    for row in aokvqa:
        assert row["choices"][row["correct_choice_idx"]] == row["direct_answers"][0]
    assert {row["correct_choice_idx"] for row in aokvqa} == {0, 1, 2, 3}

    grounded = json.loads((real_root / "filtered_flickr/groundedcaption.json").read_text())
    for row, ex in zip(grounded, examples):
        assert row["grounded_caption"] == make_grounded_caption(ex.scene)
        plain = re.sub(r" \{[^}]*\}", "", row["grounded_caption"]).replace("<p>", "").replace("</p>", "")
        assert plain == ex.caption

    regions = json.loads((real_root / "visual_genome/region_descriptions.json").read_text())
    assert sum(len(r["regions"]) for r in regions) == sum(len(ex.scene.objects) for ex in examples)
    first = regions[0]["regions"][0]
    x1, y1, x2, y2 = examples[0].scene.objects[0]["box"]
    assert [first["x"], first["y"], first["width"], first["height"]] == [x1, y1, x2 - x1, y2 - y1]

    ocr = json.loads((real_root / "ocrvqa/dataset.json").read_text())
    assert sorted({e["split"] for e in ocr.values()}) == [1, 3]


def test_cli_real_layout_and_skip_if_complete(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from minigpt.datasets.synthetic.__main__ import main

    args = ["--out", str(tmp_path), "--n-train", "4", "--n-test", "2", "--no-progress", "--num-workers", "1"]
    assert main(args + ["--real-layout"]) == 0
    assert "real-builder paths" in capsys.readouterr().out
    assert (tmp_path / "gqa/train_balanced_questions.json").is_file()
    assert main(args + ["--real-layout", "--skip-if-complete"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_every_benchmark_reads_its_default_files(real_root: Path) -> None:
    """eval_scripts/' benchmarks (minigpt/evaluation/benchmarks) at their default paths: one record per
    held-out question (RefCOCO/+/g: split val, the only held-out split the synthetic refs have)."""
    from minigpt.evaluation.benchmarks import BENCHMARKS

    test = list(iter_examples(N_TEST, SEED, "test"))
    n_questions = sum(len(ex.questions) for ex in test)
    expected = {"okvqa": n_questions, "gqa": n_questions, "vizwiz": N_TEST, "iconvqa": N_TEST, "vsr": N_TEST,
                "hm": N_TEST, "coco_caption": N_TEST}
    # ScienceQA: the synthetic split's test problems (every fifth held-out image and its text twin are val)
    n_sqa_test = sum(1 for i in range(N_TEST) if i % 5 != 4)
    expected.update({"scienceqa": 2 * n_sqa_test, "scienceqa_img": n_sqa_test})
    refs = sum(len(ex.scene.objects) for ex in test)
    expected.update({"refcoco": refs, "refcoco+": refs, "refcocog": refs, "pope": 2 * refs})  # POPE: each shape + as many absent
    real = {name: b for name, b in BENCHMARKS.items() if not name.startswith("synthetic_")}
    assert set(real) == set(expected)
    for name, bench in real.items():
        split = "val" if bench.family == "ref" else bench.default_split  # POPE: random
        records = bench.read(bench.resolve_paths(str(real_root)), split)
        assert len(records) == expected[name], name
        assert all(Path(r.image).is_file() for r in records if r.image is not None), name  # ScienceQA: text-only
    iconqa = BENCHMARKS["iconvqa"].read(BENCHMARKS["iconvqa"].resolve_paths(str(real_root)), "val")
    assert all(r.target["answer"] in r.target["choices"] for r in iconqa)
    scienceqa = BENCHMARKS["scienceqa"].read(BENCHMARKS["scienceqa"].resolve_paths(str(real_root)), "test")
    assert {r.meta["has_text"] for r in scienceqa} == {True, False}
    vsr = BENCHMARKS["vsr"].read(BENCHMARKS["vsr"].resolve_paths(str(real_root)), "test")
    assert all(r.prompt.endswith(".") for r in vsr)
    assert {r.target["label"] for r in vsr} == {0, 1}  # true and false claims (the balanced yes/no answers)
    with open(real_root / "hateful_meme" / "img" / "10000.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_videochat_clips_move_the_way_their_answers_say(real_root: Path) -> None:
    import decord
    import numpy as np

    info = default_build_info("videochat_instruct")
    rows = json.loads((real_root / info.annotations.train[0]).read_text())
    assert rows and {row["QA"][1]["a"] for row in rows} == {"left", "right", "up", "down"}
    for row in rows:
        frames = decord.VideoReader(str(real_root / info.videos / row["video"]))
        first, last = (frames[k].asnumpy().astype(int) for k in (0, len(frames) - 1))
        centres = []
        for frame in (first, last):
            ys, xs = np.nonzero(np.abs(frame - 235).sum(-1) > 60)  # the square on the light background
            centres.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centres
        moved = {"left": x1 < x0 - 20, "right": x1 > x0 + 20, "up": y1 < y0 - 20, "down": y1 > y0 + 20}
        assert moved[row["QA"][1]["a"]], row
