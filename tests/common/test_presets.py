"""Model presets that inherit (minigpt/common/config/presets.py): ``base:`` plus only the keys that differ.

tests/common/data/tinygptv_stage4_full.yaml is stage4.yaml as it was written in full before it
inherited from stage1_2_3.yaml; the composed model config must not have changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from minigpt.common.config import Config, ConfigError, load_model_preset, load_yaml
from minigpt.common.registry import registry

PRESETS = Path(__file__).resolve().parents[2] / "minigpt" / "configs" / "models"
FULL_STAGE4 = Path(__file__).resolve().parent / "data" / "tinygptv_stage4_full.yaml"
# every preset rewritten to inherit -> its fully written form before the change
CHANGED = {PRESETS / "tinygptv" / "stage4.yaml": FULL_STAGE4}


@pytest.mark.parametrize("preset", list(CHANGED), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_an_inheriting_preset_reads_as_its_fully_written_form(preset):
    assert "base" in load_yaml(preset)
    assert load_model_preset(preset) == load_yaml(CHANGED[preset])["model"]


def test_the_composed_stage4_model_is_unchanged_and_names_where_each_key_comes_from(tmp_path, monkeypatch):
    user = tmp_path / "stage4.yaml"
    user.write_text("model: {arch: tinygptv, model_type: stage4}\n")
    composed = Config(str(user))
    family = registry.get_model_class("tinygptv")
    monkeypatch.setitem(family.PRETRAINED_MODEL_CONFIG_DICT, "stage4", str(FULL_STAGE4))
    before = Config(str(user))
    assert OmegaConf.to_container(composed.model_cfg) == OmegaConf.to_container(before.model_cfg)

    assert composed.source_of("model.vision_encoder.image_size").endswith("tinygptv/stage4.yaml")
    assert composed.source_of("model.vision_encoder.name").endswith("tinygptv/stage1_2_3.yaml")
    assert composed.source_of("model.llm.lora_r").endswith("tinygptv/stage1_2_3.yaml")


def _preset(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


BASE = "model:\n  image_size: 224\n  lora: {r: 64, alpha: 16}\n  extra: null\n  tags: [a, b]\n"


def test_a_child_overrides_mappings_key_by_key_and_replaces_lists(tmp_path):
    _preset(tmp_path, "base.yaml", BASE)
    child = _preset(tmp_path, "child.yaml", "base: base.yaml\nmodel:\n  lora: {r: 8}\n  extra: {k: 1}\n  tags: [c]\n")
    grandchild = _preset(tmp_path, "grandchild.yaml", "base: child.yaml\nmodel:\n  image_size: 448\n")
    assert load_model_preset(child) == {"image_size": 224, "lora": {"r": 8, "alpha": 16}, "extra": {"k": 1},
                                        "tags": ["c"]}
    assert load_model_preset(grandchild)["image_size"] == 448 and load_model_preset(grandchild)["lora"]["r"] == 8


def test_a_missing_base_names_the_file_and_the_close_sibling(tmp_path):
    _preset(tmp_path, "stage1_2_3.yaml", BASE)
    child = _preset(tmp_path, "stage4.yaml", "base: stage1_23.yaml\nmodel: {image_size: 448}\n")
    with pytest.raises(ConfigError) as info:
        load_model_preset(child)
    message = str(info.value)
    assert message.startswith(f"{child}: base: preset 'stage1_23.yaml' does not exist")
    assert "did you mean 'stage1_2_3.yaml'" in message


@pytest.mark.parametrize(
    "files, start",
    [
        ({"a.yaml": "base: b.yaml\nmodel: {x: 1}\n", "b.yaml": "base: a.yaml\nmodel: {x: 2}\n"}, "a.yaml"),
        ({"self.yaml": "base: self.yaml\nmodel: {x: 1}\n"}, "self.yaml"),
    ],
    ids=["two-files", "itself"],
)
def test_a_cycle_of_bases_is_an_error_naming_the_files(tmp_path, files, start):
    for name, text in files.items():
        _preset(tmp_path, name, text)
    with pytest.raises(ConfigError, match="cycle") as info:
        load_model_preset(tmp_path / start)
    for name in files:
        assert name in str(info.value)


def test_a_key_the_base_lacks_is_a_typo_named_with_its_file(tmp_path):
    _preset(tmp_path, "base.yaml", BASE)
    child = _preset(tmp_path, "child.yaml", "base: base.yaml\nmodel:\n  lora: {rr: 8}\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: 'model\.lora\.rr' is not a key of its base preset "
                                          r"— did you mean 'model\.lora\.r'\?"):
        load_model_preset(child)
    bad = _preset(tmp_path, "bad.yaml", "base: [base.yaml]\nmodel: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: base must be the file name of a sibling preset"):
        load_model_preset(bad)
