"""MiniGPT-v2's multi-task conversations and Visual Genome regions (``multitask_conversation``, ``refvg``)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from minigpt.common.registry import registry


def test_multitask_conversation_falls_back_to_coco_names(tmp_path: Path) -> None:
    (tmp_path / "multitask_conversation").mkdir()
    images = tmp_path / "coco/images/train2014"
    images.mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(images / "COCO_train2014_000000000042.jpg")
    entry = {
        "id": "000000000042",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "[refer] where is the square?"},
            {"from": "gpt", "value": "{<0><0><100><100>}"},
        ],
    }
    (tmp_path / "multitask_conversation/multi_task_conversation.json").write_text(json.dumps([entry]))
    (dataset,) = (
        registry.get_builder_class("multitask_conversation")(None, data_root=str(tmp_path))
        .build_datasets()
        .values()
    )
    sample = dataset[0]
    assert sample["instruction_input"] == [
        "<Img><ImageHere></Img> What colour is it?",
        "[refer] where is the square?",
    ]
    assert sample["answer"] == ["Red.", "{<0><0><100><100>}"]
    assert tuple(sample["image"].shape) == (3, 224, 224)


def test_refvg_keeps_small_regions_only(tmp_path: Path) -> None:
    vg = tmp_path / "visual_genome"
    (vg / "VG_100K").mkdir(parents=True)
    Image.new("RGB", (400, 200), "white").save(vg / "VG_100K/7.jpg")
    (vg / "image_data.json").write_text(
        json.dumps([{"image_id": 7, "url": "https://x.org/rak/VG_100K/7.jpg", "width": 400, "height": 200}])
    )
    regions = [
        {
            "region_id": 1,
            "image_id": 7,
            "phrase": "a small cup",
            "x": 40,
            "y": 20,
            "width": 100,
            "height": 50,
        },
        {
            "region_id": 2,
            "image_id": 7,
            "phrase": "the whole wall",
            "x": 0,
            "y": 0,
            "width": 400,
            "height": 200,
        },
    ]
    (vg / "region_descriptions.json").write_text(json.dumps([{"id": 7, "regions": regions}]))
    (dataset,) = registry.get_builder_class("refvg")(None, data_root=str(tmp_path)).build_datasets().values()
    assert len(dataset) == 1  # 400 x 200 = 80000 pixels >= max_region_area
    sample = dataset[0]
    assert sample["answer"] == "{<10><10><35><35>}"
    assert sample["gt_box"] == [40.0, 20.0, 140.0, 70.0] and sample["image_size"] == [400, 200]
    assert "a small cup" in sample["instruction_input"]


def test_refvg_leaves_out_a_region_outside_its_image(tmp_path: Path) -> None:
    vg = tmp_path / "visual_genome"
    (vg / "VG_100K_2").mkdir(parents=True)
    Image.new("RGB", (50, 50), "white").save(vg / "VG_100K_2/3.jpg")
    (vg / "image_data.json").write_text(
        json.dumps([{"id": 3, "url": "https://x.org/VG_100K_2/3.jpg", "width": 50, "height": 50}])
    )
    regions = [
        {"region_id": 1, "phrase": "a dot", "x": 5, "y": 5, "width": 10, "height": 10},
        {"region_id": 2, "phrase": "off the edge", "x": 45, "y": 45, "width": 30, "height": 30},
    ]
    (vg / "region_descriptions.json").write_text(json.dumps([{"id": 3, "regions": regions}]))
    (dataset,) = registry.get_builder_class("refvg")(None, data_root=str(tmp_path)).build_datasets().values()
    assert [r["expression"] for r in dataset.records] == ["a dot"]
    assert len(dataset.malformed_records) == 1
