"""The vision feature cache: cached features equal computed ones, training is unchanged, stale features are never used."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from safetensors.torch import load_file

from minigpt.common.config import ConfigError
from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.image_source import IMAGE_KEY, IMAGE_PIXELS, location_identity
from minigpt.models import load_model
from minigpt.runners.data import InfiniteLoader
from minigpt.runners.stage import run_stage
from minigpt.runners.vision_cache import VisionFeatureCache

FROZEN = {"vision_encoder": {"freeze": True}, "llm": {"freeze": True}}
STAGE1 = """
model:
  arch: tinygptv
  model_type: tiny
  vision_encoder: {freeze: true}
  llm: {freeze: true}
datasets:
  synthetic_caption_wds: {sample_ratio: 1.0}
  synthetic_vqa: {sample_ratio: 1.0}
run: {stage_name: cached, warmup_steps: 0, lr_sched: constant_lr}
"""


def _frozen_model(seed: int = 0, overrides: Dict = FROZEN, name: str = "tinygptv"):
    torch.manual_seed(seed)
    model = load_model(name, "tiny", overrides=overrides)
    model.train()
    return model


@pytest.fixture(scope="module")
def vqa(data_root):
    """The synthetic VQA train split: several questions per image, so images repeat."""
    return registry.get_builder_class("synthetic_vqa")({}, data_root=str(data_root)).build_datasets(
        ["train"]
    )["train"]


def _batch(dataset, indices: List[int]) -> Dict:
    return collate_samples([dataset[i] for i in indices])


def test_cached_features_equal_computed_ones_and_the_loss_is_unchanged(vqa, monkeypatch):
    model = _frozen_model()
    cache = VisionFeatureCache(model)
    cached_ds = cache.attach("synthetic_vqa", vqa)
    assert cached_ds is not vqa and vqa.image_source is None  # the reader itself is left as it was

    first = [0, 5, 9, 14]
    plain = _batch(vqa, first)
    raw = _batch(cached_ds, first)
    keys = list(raw[IMAGE_KEY])
    assert raw["image"] is None and torch.equal(raw[IMAGE_PIXELS], plain["image"])
    cold = cache.apply(raw)
    assert IMAGE_KEY not in cold and cold["image"].dim() == 3
    with torch.no_grad():
        expected = model.vision_encoder(plain["image"])
    assert torch.equal(cold["image"], expected)  # all new: encoded together, as the model would have
    assert torch.equal(model(cold)["loss"], model(plain)["loss"])
    assert cache.stats()["rows_computed"] == 4 and len(cache) == len(set(keys))

    # again: every image is cached, none is decoded, the loss is the same
    import minigpt.datasets.datasets.base_dataset as base

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached image was decoded")

    monkeypatch.setattr(base, "open_image", no_decoding)
    raw = _batch(cached_ds, first)
    assert raw[IMAGE_PIXELS] is None and raw["image"] is None
    warm = cache.apply(raw)
    assert torch.equal(warm["image"], cold["image"])
    assert torch.equal(model(warm)["loss"], model(plain)["loss"])
    monkeypatch.undo()

    # another batch mixing cached and new images: cached rows were computed in another batch, so equal
    # up to float rounding of a different batch size; the new rows are computed now
    mixed = [5, 14, 20, 33]
    plain2 = _batch(vqa, mixed)
    out = cache.apply(_batch(cached_ds, mixed))
    with torch.no_grad():
        torch.testing.assert_close(out["image"], model.vision_encoder(plain2["image"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(out)["loss"], model(plain2)["loss"], rtol=1e-5, atol=1e-6)
    assert cache.stats()["rows_from_cache"] >= 4 + 2


def test_questions_about_one_image_share_one_entry(vqa):
    model = _frozen_model()
    cache = VisionFeatureCache(model)
    cached_ds = cache.attach("synthetic_vqa", vqa)
    by_image: Dict[str, List[int]] = {}
    for i, record in enumerate(vqa.records[:60]):
        by_image.setdefault(record["image"], []).append(i)
    same = next(ix for ix in by_image.values() if len(ix) >= 2)[:2]
    batch = _batch(cached_ds, same)
    assert batch[IMAGE_KEY][0] == batch[IMAGE_KEY][1]
    cache.apply(batch)
    assert len(cache) == 1


def test_dataloader_workers_skip_decoding_images_cached_before_they_started(vqa):
    model = _frozen_model()
    cache = VisionFeatureCache(model)
    small = copy.copy(vqa)
    small.records = vqa.records[:8]
    cached_ds = cache.attach("synthetic_vqa", small)
    cache.apply(_batch(cached_ds, list(range(8))))
    loader = InfiniteLoader(cached_ds, 4, 2, seed=0, name="synthetic_vqa", rank=0, world_size=1)
    for _ in range(3):
        batch = next(loader)
        assert batch[IMAGE_PIXELS] is None and len(batch[IMAGE_KEY]) == 4
        assert cache.apply(batch)["image"].shape == (4, 64, 128)
    del loader


def test_a_disk_cache_is_reused_by_the_next_run_and_rebuilt_for_other_weights(vqa, tmp_path):
    indices = [1, 2, 3, 4, 6]
    model = _frozen_model(seed=1)
    first = VisionFeatureCache(model, storage="disk", directory=str(tmp_path), shard_size=2)
    out = first.apply(_batch(first.attach("v", vqa), indices))
    first.flush()
    shards = sorted(Path(first.directory).glob("shard-*.safetensors"))
    assert shards and not list(Path(first.directory).glob(".tmp-*"))  # written whole, then renamed
    assert sum(len(load_file(str(p))) for p in shards) == len(first)

    # the same weights in a new process: everything comes from disk, bit for bit
    same = _frozen_model(seed=1)
    second = VisionFeatureCache(same, storage="disk", directory=str(tmp_path))
    second.open()
    assert second.directory == first.directory and second.stats()["loaded_from_disk"] == len(first)
    again = second.apply(_batch(second.attach("v", vqa), indices))
    assert torch.equal(again["image"], out["image"]) and second.stats()["rows_computed"] == 0

    # other vision weights (a fine-tuned encoder, say): a new, empty folder; nothing stale is reused
    changed = _frozen_model(seed=1)
    with torch.no_grad():
        changed.vision_encoder.norm.weight.add_(0.5)
    third = VisionFeatureCache(changed, storage="disk", directory=str(tmp_path))
    third.open()
    assert third.directory != first.directory and third.stats()["loaded_from_disk"] == 0
    fresh = third.apply(_batch(third.attach("v", vqa), indices))
    assert third.stats()["rows_computed"] == len(indices)
    assert not torch.allclose(fresh["image"], out["image"])
    with torch.no_grad():
        assert torch.equal(fresh["image"], changed.vision_encoder(_batch(vqa, indices)["image"]))

    # a shard of other weights dropped into the folder is refused, not read
    os.replace(shards[0], Path(third.directory) / shards[0].name)
    fourth = VisionFeatureCache(changed, storage="disk", directory=str(tmp_path))
    fourth.open()
    assert fourth.stats()["loaded_from_disk"] == 0


def test_a_rewritten_image_file_gets_a_new_key(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    before = location_identity(str(path))
    path.write_bytes(b"other content")
    assert location_identity(str(path)) != before
    assert location_identity("s3://bucket/a.jpg") == "s3://bucket/a.jpg"


def test_a_frozen_qformer_is_cached_with_the_encoder_and_a_frozen_projector_entirely():
    qformer = {
        "name": "qformer_linear",
        "num_query_token": 4,
        "hidden_dims": [32],
        "freeze_qformer": True,
        "qformer": {
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 24,
        },
    }
    model = _frozen_model(name="minigpt4", overrides={**FROZEN, "projector": qformer})
    assert model.vision_cache_point() == "projector_prefix"
    images = torch.randn(3, 3, 64, 64)
    samples = {
        "image": images,
        "instruction_input": ["<Img><ImageHere></Img> what is it?"] * 3,
        "answer": ["a red circle", "two squares", "a triangle"],
    }
    cache = VisionFeatureCache(model)
    feats = cache.compute(images)
    assert feats.shape == (3, 4, 16)  # the Q-Former's queries, before the trainable linear layers
    assert torch.equal(model({**samples, "image": feats})["loss"], model(samples)["loss"])
    assert torch.equal(model.encode_images(feats), model.encode_images(images))

    model.projector.requires_grad_(False)
    assert model.vision_cache_point() == "projector"
    model.vision_feature_point = "projector"
    assert torch.equal(model.encode_images(model.vision_prefix(images)), model.encode_images(images))


def test_a_trainable_encoder_or_a_random_processor_is_an_error_naming_it(vqa, stage_from_yaml, tmp_path):
    with pytest.raises(ValueError, match="frozen vision encoder"):
        VisionFeatureCache(_frozen_model(overrides={"llm": {"freeze": True}}))

    from minigpt.processors.image import ImageTrainProcessor

    random_crop = copy.copy(vqa)
    random_crop.vis_processor = ImageTrainProcessor(image_size=64)
    with pytest.raises(ValueError, match="'synthetic_vqa'.*not"):
        VisionFeatureCache(_frozen_model()).attach("synthetic_vqa", random_crop)

    on = ["run.vision_feature_cache.enabled=true"]
    with pytest.raises(ConfigError, match=r"model\.vision_encoder\.freeze"):
        stage_from_yaml(
            STAGE1.replace("vision_encoder: {freeze: true}", "vision_encoder: {freeze: false}"),
            tmp_path / "a",
            2,
            *on,
        )
    with pytest.raises(
        ConfigError, match=r"datasets\.synthetic_vqa\.vis_processor\.train\.name.*image_train"
    ):
        stage_from_yaml(
            STAGE1.replace(
                "synthetic_vqa: {sample_ratio: 1.0}",
                "synthetic_vqa: {vis_processor: {train: {name: image_train}}}",
            ),
            tmp_path / "b",
            2,
            *on,
        )
    with pytest.raises(ConfigError, match=r"run\.vision_feature_cache\.storage"):
        stage_from_yaml(STAGE1, tmp_path / "c", 2, *on, "run.vision_feature_cache.storage=ram")
    # the same config without the cache is fine
    stage_from_yaml(
        STAGE1.replace(
            "synthetic_vqa: {sample_ratio: 1.0}",
            "synthetic_vqa: {vis_processor: {train: {name: image_train}}}",
        ),
        tmp_path / "d",
        2,
    )


def _trained(out: Path, step: int) -> Dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{step:06d}" / "trained.safetensors"))


def test_training_with_the_cache_matches_training_without_and_resumes_exactly(
    stage_from_yaml, data_root, tmp_path
):
    steps = 6
    # 16 questions about 4 images: images come round again within a few steps
    questions = json.loads((data_root / "synthetic" / "vqa" / "vqa_train.json").read_text())
    few = [q for q in questions if q["image"] in {q["image"] for q in questions[:16]}][:16]
    ann = tmp_path / "few_questions.json"
    ann.write_text(json.dumps(few))

    def stage(out: Path, n: int, *extra: str) -> Dict:
        opts = [
            "run.test_splits=[]",
            "run.num_workers=0",
            "run.save_freq=3",
            f"datasets.synthetic_vqa.build_info.annotations.train=[{ann}]",
            *extra,
        ]
        return run_stage(stage_from_yaml(STAGE1, out, n, *opts))

    disk = ["run.vision_feature_cache.enabled=true", "run.vision_feature_cache.storage=disk"]
    stage(tmp_path / "plain", steps)
    cached = stage(tmp_path / "cached", steps, *disk)["vision_feature_cache"]
    assert cached["rows_from_cache"] > 0 and cached["rows_computed"] > 0  # images repeat across VQA questions
    plain_w, cached_w = _trained(tmp_path / "plain", steps), _trained(tmp_path / "cached", steps)
    for key in plain_w:  # reused rows were encoded in other batches: equal up to float rounding
        torch.testing.assert_close(cached_w[key], plain_w[key], rtol=1e-4, atol=1e-6)

    # stop after the step-3 checkpoint, resume from it: bit for bit the uninterrupted cached run
    stage(tmp_path / "split", 3, *disk)
    resumed = stage(tmp_path / "split", steps, *disk, "run.resume_ckpt_path=auto")
    assert resumed["steps"] == steps - 3 and resumed["vision_feature_cache"]["loaded_from_disk"] > 0
    split_w = _trained(tmp_path / "split", steps)
    assert all(torch.equal(split_w[k], cached_w[k]) for k in cached_w)
