"""Hub ids for pretrained paths: read from the local Hugging Face cache, in its real layout, offline."""

from __future__ import annotations

import os

import pytest
import torch

from minigpt.common.hub import parse_hub_id, resolve_pretrained
from minigpt.models import load_model

REV = "0123456789abcdef0123456789abcdef01234567"


def cached_snapshot(hf_home, repo_id: str) -> str:
    """An empty snapshot folder of ``repo_id`` in the HF cache under ``hf_home``, ``main`` pointing at it."""
    repo = os.path.join(str(hf_home), "hub", "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", REV)
    os.makedirs(snap)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as fh:
        fh.write(REV)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_parse_hub_id():
    assert parse_hub_id("org/name") == parse_hub_id("hf://org/name")
    ref = parse_hub_id("org/name/sub/file.pth@v1")
    assert (ref.repo_id, ref.subpath, ref.revision) == ("org/name", "sub/file.pth", "v1")
    for local in ("/abs/path", "./rel/dir", "~/models/x", "s3://bucket/x", "justaname"):
        assert parse_hub_id(local) is None


def test_llm_pretrained_hub_id_loads_from_the_offline_cache(offline_cache):
    torch.manual_seed(0)
    source = load_model("minigpt4", "tiny")
    snap = cached_snapshot(offline_cache, "tiny-org/tiny-llama")
    source.llm.causal_lm.save_pretrained(snap)
    source.tokenizer.save_pretrained(snap)

    model = load_model("minigpt4", "tiny", overrides={"llm": {"pretrained": "tiny-org/tiny-llama"}})
    got, want = model.llm.causal_lm.state_dict(), source.llm.causal_lm.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert len(model.tokenizer) == len(source.tokenizer)


def test_file_ids_and_revisions(offline_cache):
    snap = cached_snapshot(offline_cache, "org/weights")
    os.makedirs(os.path.join(snap, "sub"))
    torch.save({"w": torch.ones(2)}, os.path.join(snap, "sub", "eva.pth"))
    path = resolve_pretrained("org/weights/sub/eva.pth", "vision_encoder.pretrained", kind="file")
    assert os.path.samefile(path, os.path.join(snap, "sub", "eva.pth"))
    assert os.path.samefile(resolve_pretrained(f"org/weights/sub@{REV}", "k"), os.path.join(snap, "sub"))
    with pytest.raises(FileNotFoundError, match="weight file is needed"):
        resolve_pretrained("org/weights", "projector.pretrained", kind="file")


def test_a_local_path_wins_and_a_missing_id_is_a_clear_error(offline_cache, tmp_path, monkeypatch):
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_pretrained("org/name", "llm.pretrained") == "org/name"
    with pytest.raises(FileNotFoundError) as err:
        load_model("minigpt4", "tiny", overrides={"llm": {"pretrained": "nobody/absent-model"}})
    text = str(err.value)
    assert "llm.pretrained" in text and "nobody/absent-model" in text and "HF_HUB_OFFLINE" in text
    assert str(offline_cache) in text
    # a meta build needs shapes only: an id it cannot find falls back to the config block
    assert load_model("minigpt4", "tiny", device="meta", overrides={"llm": {"pretrained": "nobody/absent"}})


def test_a_minigpt_export_loads_by_hub_id(offline_cache):
    from minigpt.models.weights.export import export_model

    torch.manual_seed(0)
    source = load_model("tinygptv", "tiny", is_eval=True)
    snap = cached_snapshot(offline_cache, "tiny-org/tiny-export")
    os.rmdir(snap)
    export_model(source, snap)
    model = load_model("tiny-org/tiny-export", is_eval=True)
    got, want = model.state_dict(), source.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(FileNotFoundError, match="load_model"):
        load_model("tiny-org/absent-export")


def test_vision_encoder_weight_file_by_hub_id(offline_cache):
    toy = {"scale": "toy", "vision_encoder": {"image_size": 56}}
    torch.manual_seed(0)
    source = load_model("minigpt4", "vicuna7b", overrides=toy)
    snap = cached_snapshot(offline_cache, "org/eva")
    torch.save(source.vision_encoder.vit.state_dict(), os.path.join(snap, "eva_vit_g.pth"))
    torch.manual_seed(1)
    toy["vision_encoder"]["pretrained"] = "org/eva/eva_vit_g.pth"
    model = load_model("minigpt4", "vicuna7b", overrides=toy)
    got, want = model.vision_encoder.state_dict(), source.vision_encoder.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
