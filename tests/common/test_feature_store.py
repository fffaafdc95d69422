"""FeatureStore: safetensors shards keyed by media id; clear errors for a missing manifest, shard or id."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from minigpt.common.feature_store import FEATURES_FORMAT, FeatureStore, media_id, shard_file_name
from minigpt.common.io import DatasetError, MissingDataError


def _store(tmp_path, shards):
    names = [shard_file_name(i, len(shards)) for i in range(len(shards))]
    for name, tensors in zip(names, shards):
        save_file(tensors, str(tmp_path / name))
    (tmp_path / "features.json").write_text(json.dumps({"format": FEATURES_FORMAT, "dataset": "toy", "shards": names}))
    return FeatureStore(str(tmp_path))


def test_lookup_by_media_id_across_shards(tmp_path):
    store = _store(tmp_path, [{"a/1.mp4": torch.ones(4)}, {"b.jpg": torch.zeros(2, 4)}])
    assert sorted(store.ids) == ["a/1.mp4", "b.jpg"] and "b.jpg" in store and len(store) == 2
    assert torch.equal(store["a/1.mp4"], torch.ones(4)) and store.lookup("b.jpg", "toy", "toy:0").shape == (2, 4)
    with pytest.raises(MissingDataError, match=r"dataset 'toy', sample 'toy:3': no stored features for media 'c.jpg'"):
        store.lookup("c.jpg", "toy", "toy:3")
    import pickle

    again = pickle.loads(pickle.dumps(store))  # DataLoader workers get a copy without the loaded tensors
    assert torch.equal(again["a/1.mp4"], torch.ones(4))


def test_a_folder_without_manifest_or_with_a_missing_shard_is_refused(tmp_path):
    with pytest.raises(MissingDataError, match=r"no features.json .*python -m minigpt.features extract"):
        FeatureStore(str(tmp_path))
    (tmp_path / "features.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DatasetError, match="is not a minigpt.features/1 manifest"):
        FeatureStore(str(tmp_path))
    _store(tmp_path, [{"x": torch.ones(1)}, {"y": torch.ones(1)}])
    (tmp_path / shard_file_name(1, 2)).unlink()
    with pytest.raises(MissingDataError, match=r"1 of 2 shards missing \(first: features-00001-of-00002"):
        FeatureStore(str(tmp_path))


def test_media_ids_are_paths_under_the_media_root(tmp_path):
    assert media_id(str(tmp_path / "videos" / "train" / "000001.mp4"), str(tmp_path / "videos")) == "train/000001.mp4"
    assert media_id("/data/cc/train-00001.tar#000004.jpg", "/data/cc") == "train-00001.tar#000004.jpg"
    assert media_id("/elsewhere/x.jpg", str(tmp_path)) == "x.jpg"
