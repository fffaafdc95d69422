"""Stage 0: per-token region labels for a random-init vision encoder, and handing the encoder on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from shared_helpers import stage0_model

from minigpt.common.registry import registry
from minigpt.datasets.collate import collate_samples
from minigpt.datasets.datasets.base_dataset import DatasetError
from minigpt.datasets.datasets.region_label_datasets import SceneRegionDataset
from minigpt.models.grid_code import grid_value_code
from minigpt.models.vision_pretrain import BACKGROUND, region_targets, scene_targets
from minigpt.models.weights.checkpoint import save_trained
from minigpt.models.weights.names import canonical_name

FIELDS = {"kind": ["circle", "square"], "colour": ["red", "blue"]}



def test_region_targets_label_tokens_whose_centre_is_inside_the_box():
    # 4x4 grid: token centres at 0.125, 0.375, 0.625, 0.875 on each axis
    regions = [[{"box": [0.0, 0.0, 0.5, 0.5], "kind": "square", "colour": "red"},
                {"box": [0.6, 0.3, 1.0, 0.7], "kind": "circle", "colour": "blue"}], []]
    t = region_targets(regions, FIELDS, grid=4)
    kind = t["kind"].view(2, 4, 4)
    assert kind[0, :2, :2].eq(2).all()  # square = class 2 (classes start at 1)
    assert kind[0, 1:3, 2:4].eq(1).all()  # circle: rows 0.375/0.625, columns 0.625/0.875
    assert kind[0, 3].eq(BACKGROUND).all() and kind[0, 0, 2:].eq(BACKGROUND).all()
    assert t["colour"].view(2, 4, 4)[0, 2, 3] == 2  # blue
    assert kind[1].eq(BACKGROUND).all()  # an image without boxes is all background


def test_region_targets_reject_an_unknown_class_naming_the_sample():
    with pytest.raises(ValueError, match=r"sample s7: .*kind='hexagon'"):
        region_targets([[{"box": [0, 0, 1, 1], "kind": "hexagon", "colour": "red"}]], FIELDS, 4, ["s7"])


def test_scene_targets_mark_present_combinations_count_and_centres():
    regions = [[{"box": [0.0, 0.0, 0.5, 0.5], "kind": "square", "colour": "red"},
                {"box": [0.6, 0.2, 1.0, 0.6], "kind": "circle", "colour": "blue"}], []]
    t = scene_targets(regions, FIELDS, max_objects=3)
    # combinations in product order: circle-red, circle-blue, square-red, square-blue
    assert t["present"].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert t["count"].tolist() == [2, 0]
    assert t["centre"][0, 2].tolist() == pytest.approx([0.25, 0.25])
    assert t["centre"][0, 1].tolist() == pytest.approx([0.8, 0.4])
    with pytest.raises(ValueError, match=r"sample s3: 2 labelled boxes, more than model.max_objects=1"):
        scene_targets(regions, FIELDS, max_objects=1, sample_ids=["s3"])
    with pytest.raises(ValueError, match=r"sample #0: region label colour='pink'"):
        scene_targets([[{"box": [0, 0, 1, 1], "kind": "circle", "colour": "pink"}]], FIELDS, 3)


def test_objective_is_checked_against_the_encoder():
    with pytest.raises(ValueError, match=r"model.objective must be one of .*'boxes'"):
        stage0_model(objective="boxes")
    with pytest.raises(ValueError, match=r"scene\+patches needs an encoder with class-token states .*TinyViT"):
        stage0_model(objective="scene+patches")
    with pytest.raises(ValueError, match="'present' names a head"):
        stage0_model(**{"label_fields.present": ["yes"]})


def test_scene_stage0_teaches_the_lavin_class_token_states_and_hands_the_tower_on(
    tmp_path: Path, data_root: Path, caplog
):
    """objective scene+patches: LaVIN's visual input (class-token states) gets a loss of its own."""
    cls = registry.get_model_class("vision_pretrain")
    ours = OmegaConf.load(cls.default_config_path("lavin_tiny_scene")).model
    lavin_cls = registry.get_model_class("lavin")
    theirs = OmegaConf.load(lavin_cls.default_config_path("tiny")).model
    for key in ("name", "pretrained", "config", "image_size", "every", "precision"):
        assert OmegaConf.to_container(ours.vision_encoder)[key] == OmegaConf.to_container(theirs.vision_encoder)[key]
    torch.manual_seed(0)
    model = cls.from_config(ours)
    assert model.n_tokens == 4 and model.grid == 8  # 4 class-token states; the 8x8 patch grid
    builder = registry.get_builder_class("synthetic_scene_labels")(None, data_root=str(data_root))
    batch = collate_samples([builder.build_datasets(["train"])["train"][i] for i in range(32)])
    probe = torch.randn(2, 3, 64, 64)
    before = model.vision_encoder(probe).detach()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):  # one fixed batch: the loss must fall well below where it started
        out = model(batch)
        losses.append(out["loss"].item())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert losses[-1] < 0.6 * losses[0]
    assert {"acc_present", "acc_count", "centre_l1", "acc_kind", "box_l1"} <= set(out)
    assert float(out["acc_count"]) > 0.5
    assert int(out["n_tokens"]) == 32 * 64
    assert not torch.allclose(before, model.vision_encoder(probe))  # the class-token states moved

    saved = load_file(save_trained(model, str(tmp_path / "ck")))
    assert {k for k in saved if k.startswith("heads.")} >= {"heads.present.weight", "heads.count.weight",
                                                           "heads.centre.weight", "heads.kind.weight"}
    theirs.ckpt = str(tmp_path / "ck")
    with caplog.at_level(logging.INFO):
        lavin = lavin_cls.from_config(theirs)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the heads are expected extras
    tower = lavin.vision_encoder.model.state_dict()
    for name, value in model.vision_encoder.model.state_dict().items():
        assert torch.equal(value, tower[name]), name


def test_preset_encoder_block_is_the_tinygptv_tiny_encoder():
    """Stage 1 loads the stage-0 encoder by name and shape: the two presets must describe one encoder."""
    ours = OmegaConf.load(registry.get_model_class("vision_pretrain").default_config_path("tinygptv_tiny"))
    theirs = OmegaConf.load(registry.get_model_class("tinygptv").default_config_path("tiny"))
    assert OmegaConf.to_container(ours.model.vision_encoder) == OmegaConf.to_container(theirs.model.vision_encoder)


def test_lavin_stage0_preset_is_the_lavin_tiny_tower_and_hands_it_on(tmp_path: Path, caplog):
    """The LaVIN quickstart's stage 0 trains the tiny LaVIN's CLIP tower read as patch tokens; LaVIN loads it."""
    ours = OmegaConf.load(registry.get_model_class("vision_pretrain").default_config_path("lavin_tiny")).model
    lavin_cls = registry.get_model_class("lavin")
    theirs = OmegaConf.load(lavin_cls.default_config_path("tiny")).model
    assert ours.vision_encoder.name == "clip_vit" and theirs.vision_encoder.name == "clip_vit_cls"
    for key in ("pretrained", "config", "image_size", "precision"):
        assert OmegaConf.to_container(ours.vision_encoder)[key] == OmegaConf.to_container(theirs.vision_encoder)[key]
    torch.manual_seed(0)
    stage0 = registry.get_model_class("vision_pretrain").from_config(ours)
    assert stage0.grid == 8  # 64 px / patch 8: every patch token is labelled
    saved = load_file(save_trained(stage0, str(tmp_path / "ck")))
    assert "vision_encoder.model.encoder.layers.0.self_attn.q_proj.weight" in saved
    assert set(saved) <= {canonical_name(k) for k in stage0.state_dict()}  # CLIP's non-persistent position_ids stay out
    theirs.ckpt = str(tmp_path / "ck")
    with caplog.at_level(logging.INFO):
        lavin = lavin_cls.from_config(theirs)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the label heads are expected extras
    tower = lavin.vision_encoder.model.state_dict()
    for name, value in stage0.vision_encoder.model.state_dict().items():
        assert torch.equal(value, tower[name]), name


def test_scene_dataset_reads_regions_and_rejects_a_bad_box(tmp_path: Path, data_root: Path):
    builder = registry.get_builder_class("synthetic_scene_labels")(None, data_root=str(data_root))
    train = builder.build_datasets(["train"])["train"]
    scene = json.loads((data_root / "synthetic" / "scenes_train.jsonl").read_text().splitlines()[0])
    sample = train[0]
    assert sample["image"].shape == (3, 64, 64)
    assert [r["kind"] for r in sample["regions"]] == [o["kind"] for o in scene["objects"]]
    x1, y1, x2, y2 = scene["objects"][0]["box"]
    assert sample["regions"][0]["box"] == pytest.approx([x1 / 64, y1 / 64, x2 / 64, y2 / 64])

    bad = tmp_path / "scenes.jsonl"
    good = dict(scene)
    broken = dict(scene, objects=[dict(scene["objects"][0], box=[10, 10, 5, 20])])
    bad.write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n")
    ds = SceneRegionDataset("scenes", [str(bad)], None, str(data_root / "synthetic" / "images"))
    assert len(ds) == 1 and ds.malformed_records[0]["index"] == 1  # the bad line is skipped and counted
    bad.write_text(json.dumps(broken) + "\n")
    with pytest.raises(DatasetError, match=r"entry 0 of .*scenes.jsonl, object 0: bad box"):
        SceneRegionDataset("scenes", [str(bad)], None, str(data_root / "synthetic" / "images"))


def test_stage0_learns_and_stage1_loads_the_encoder(tmp_path: Path, data_root: Path, caplog):
    torch.manual_seed(0)
    builder = registry.get_builder_class("synthetic_scene_labels")(None, data_root=str(data_root))
    train = builder.build_datasets(["train"])["train"]
    batch = collate_samples([train[i] for i in range(32)])
    model = stage0_model()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = first_code = None
    for _ in range(25):  # one fixed batch: the loss must fall well below where it started
        out = model(batch)
        first = first if first is not None else out["loss"].item()
        first_code = first_code if first_code is not None else out["box_code_mse"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()  # BatchNorm running statistics, as the next stage will use them
    with torch.no_grad():
        out = model(batch)
    assert out["loss"].item() < 0.6 * first
    assert out["box_code_mse"].item() < 0.6 * first_code  # the preset's box-code head learns the corners' code
    assert float(out["acc_colour"]) > 0.5
    assert int(out["n_tokens"]) == 32 * model.grid**2  # every visual token is labelled: tokens/s is not 0

    save_trained(model, str(tmp_path / "ck"))
    family = registry.get_model_class("tinygptv")
    cfg = OmegaConf.load(family.default_config_path("tiny")).model
    cfg.ckpt = str(tmp_path / "ck")
    with caplog.at_level(logging.INFO):
        tiny = family.from_config(cfg)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the label heads are expected extras
    for (name, a), (_, b) in zip(model.vision_encoder.state_dict().items(), tiny.vision_encoder.state_dict().items()):
        assert torch.equal(a, b), name


def test_forward_without_regions_is_a_clear_error():
    with pytest.raises(KeyError, match="'image' and 'regions'"):
        stage0_model()({"image": torch.zeros(1, 3, 64, 64)})


def test_box_code_head_targets_the_grid_tokens_code_of_each_corner():
    """A token inside a box is scored against grid_value_code of that box's corners, nothing else."""
    model = stage0_model(box_loss_weight=0.0)
    assert model.box_code_dim == 16 and model.heads["box_code"].out_features == 4 * 16
    box = [0.25, 0.5, 0.75, 1.0]
    samples = {"image": torch.zeros(1, 3, 64, 64), "regions": [[{"box": box, "kind": "circle", "colour": "red"}]]}
    with torch.no_grad():  # make the head write exactly the target code on every token
        head = model.heads["box_code"]
        head.weight.zero_()
        head.bias.copy_(grid_value_code(torch.tensor(box), 16).flatten())
    assert model(samples)["box_code_mse"].item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        head.bias.copy_(grid_value_code(torch.tensor([0.25, 0.5, 0.75, 0.9]), 16).flatten())  # one corner off
    assert model(samples)["box_code_mse"].item() > 1e-3


def test_box_code_settings_are_checked():
    with pytest.raises(ValueError, match="box_code_dim must be at least 2"):
        stage0_model(box_code_dim=1)
    with pytest.raises(ValueError, match="'box_code' names a head"):
        stage0_model(**{"label_fields": {"box_code": ["a"]}})
    assert "box_code" not in stage0_model(box_code_loss_weight=0.0).heads  # weight 0: no head, no loss


def test_grid_code_peaks_where_values_agree_and_is_the_grid_tokens_embedding():
    values = torch.arange(101) / 100
    code = grid_value_code(values, 16)  # [101, 16]
    sims = code @ code.T
    assert torch.equal(sims.argmax(1), torch.arange(101))  # each value is closest to itself
    family = registry.get_model_class("tinygptv")
    cfg = OmegaConf.load(family.default_config_path("tiny")).model
    llm = family.from_config(cfg).llm
    tok = llm.tokenizer
    ids = [tok.convert_tokens_to_ids(f"<{i}>") for i in range(101)]
    emb = llm.causal_lm.get_input_embeddings().weight[ids].detach()  # [101, dim], set by init_grid_embeddings
    full = grid_value_code(values, emb.shape[1])
    assert torch.allclose(emb / emb.std(), full / full.std(), atol=1e-5)


def test_centre_bins_classify_each_present_combination_into_stripes():
    """centre_bins N: the class-token states classify each present combination's x and y into N stripes."""
    cls = registry.get_model_class("vision_pretrain")
    cfg = OmegaConf.load(cls.default_config_path("lavin_tiny_scene")).model
    cfg.centre_bins = 4
    torch.manual_seed(0)
    model = cls.from_config(cfg)
    n_combos = 18
    assert model.heads["centre"].bias.shape[-1] == n_combos * 2 * 4
    # one red circle whose centre (0.1, 0.9) lies in stripe 0 along x and stripe 3 along y
    samples = {"image": torch.randn(2, 3, 64, 64),
               "regions": [[{"box": [0.0, 0.8, 0.2, 1.0], "kind": "circle", "colour": "red"}]] * 2}
    head = model.heads["centre"]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        logits = head.bias.view(model.n_tokens, n_combos, 2, 4)  # a view: writes reach the head
        logits[:, 0, 0, 0] = 20.0  # circle x red is the first combination (kind-major order)
        logits[:, 0, 1, 3] = 20.0
    right = model(samples)
    assert right["acc_centre"].item() == 1.0
    with torch.no_grad():
        logits[:, 0, 1, 3] = 0.0
        logits[:, 0, 1, 2] = 20.0  # y now one stripe too high
    wrong = model(samples)
    assert wrong["acc_centre"].item() == 0.5  # x right, y wrong
    assert wrong["loss"].item() > right["loss"].item() + 5.0
    assert "centre_l1" not in right
    with pytest.raises(ValueError, match="model.centre_bins must be 0 .* or at least 2, got 1"):
        cfg.centre_bins = 1
        cls.from_config(cfg)


def test_presence_head_makes_background_tokens_name_the_pictures_pairs():
    """Every background token is scored on which (kind, colour) pairs the whole picture holds; shape tokens are not."""
    assert "presence" not in stage0_model().heads  # off in the preset
    model = stage0_model(presence_loss_weight=0.2)
    n_pairs = 3 * 6  # tinygptv_tiny's kinds x colours
    assert model.heads["presence"].out_features == n_pairs
    regions = [[{"box": [0.0, 0.0, 0.25, 0.25], "kind": "square", "colour": "blue"}]]
    samples = {"image": torch.zeros(1, 3, 64, 64), "regions": regions}
    present = scene_targets(regions, model.label_fields, 3)["present"][0]  # [18], one pair on
    assert present.sum() == 1
    with torch.no_grad():  # every token writes a confident, exact answer: the loss term vanishes
        head = model.heads["presence"]
        head.weight.zero_()
        head.bias.copy_((present * 2 - 1) * 30)
    exact = model(samples)
    assert exact["acc_presence"].item() == 1.0
    with torch.no_grad():
        head.bias[0] = 30.0  # a pair the picture lacks (circle, red) said to be there
    wrong = model(samples)
    assert wrong["acc_presence"].item() == 0.0
    # one pair wrong by 30 on every token: the loss grows by the head's weight times 30
    assert wrong["loss"].item() - exact["loss"].item() == pytest.approx(model.presence_loss_weight * 30.0, rel=1e-3)
    # the 4 tokens on the square (2x2 of the 8x8 grid) are not scored: wrong there, exact elsewhere
    inside = region_targets(regions, model.label_fields, model.grid)["kind"] != BACKGROUND  # [1, 64]
    assert int(inside.sum()) == 4
    logits = ((present * 2 - 1) * 30).expand(1, 64, n_pairs).clone()
    logits[inside] = -logits[inside]
    out = {}
    assert model._presence_loss(logits, samples, ~inside, out).item() == pytest.approx(0.0, abs=1e-9)
    assert out["acc_presence"].item() == 1.0
    with pytest.raises(ValueError, match="presence_loss_weight is for objective patches"):
        stage0_model(objective="scene", presence_loss_weight=1.0)
