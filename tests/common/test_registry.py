"""The registry: lazy built-ins, clear errors for unknown or taken names, entry-point plugins."""

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from minigpt.common.registry import _BUILTIN, KINDS, Registry, RegistryError, registry


def test_every_builtin_name_resolves_to_the_class_the_table_names():
    for kind, table in _BUILTIN.items():
        for name, target in table.items():
            module, _, attr = target.partition(":")
            cls = registry.get_class(kind, name)
            assert cls is getattr(importlib.import_module(module), attr), (kind, name)
            assert cls._registry_name == name
            assert registry.name_of(cls) == name


def test_built_in_names_are_listed_once_in_the_table_and_nowhere_else():
    import pathlib
    import re

    package = pathlib.Path(importlib.import_module("minigpt").__file__).parent
    pattern = re.compile(r"registry\.register(_[a-z_]+)?\(")
    hits = [
        f"{p.relative_to(package)}:{n}"
        for p in package.rglob("*.py")
        if p.name != "registry.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []  # decorators are for plugins; built-ins are the table's


def test_name_of_a_subclass_is_its_own_not_its_bases():
    from minigpt.datasets.builders.caption_builders import COCOCaptionBuilder

    class Mine(COCOCaptionBuilder):
        pass

    assert registry.name_of(COCOCaptionBuilder) == "coco_caption" and registry.name_of(Mine) is None


def test_families_listed_and_typo_suggests_the_right_name():
    assert {"tinygptv", "minigpt4", "minigpt_v2"} <= set(registry.list_models())
    with pytest.raises(RegistryError) as err:
        registry.get_model_class("tinygtpv")
    msg = str(err.value)
    assert "tinygtpv" in msg and "Did you mean: tinygptv" in msg


def test_unknown_kind_and_list_per_kind():
    with pytest.raises(RegistryError, match="unknown registry kind"):
        registry.get_class("widget", "x")
    assert "linear_warmup_cosine_lr" in registry.list_lr_schedulers()
    assert "runner_iter" in registry.list_runners()
    assert "image_text_pretrain" in registry.list_tasks()
    assert "synthetic_vqa" in registry.list_datasets()
    assert "image_eval" in registry.list_processors()
    assert set(KINDS) >= {"vision_encoder", "projector", "llm"}


def test_registering_a_taken_name_is_an_error_unless_overridden():
    reg = Registry()

    @reg.register_task("mine")
    class A:
        pass

    class B:
        pass

    with pytest.raises(RegistryError, match="already registered"):
        reg.register_task("mine")(B)
    reg.register_task("mine", override=True)(B)
    assert reg.get_task_class("mine") is B
    # a built-in name is reserved for the class the lazy table names
    with pytest.raises(RegistryError, match="reserved by the built-in"):
        reg.register_model("tinygptv")(B)


def test_import_minigpt_does_not_import_models():
    code = "import sys, minigpt; print(any(m.startswith('minigpt.models') for m in sys.modules), 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_third_party_plugin_is_found_through_its_entry_point(tmp_path):
    pkg = tmp_path / "plugin"
    (pkg / "minigpt_demo_plugin").mkdir(parents=True)
    (pkg / "minigpt_demo_plugin" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from minigpt.common.registry import registry

            @registry.register_model("demo_plugin_model")
            class DemoPluginModel:
                PRETRAINED_MODEL_CONFIG_DICT = {}
            """
        )
    )
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "minigpt-demo-plugin"
            version = "0.0.1"

            [project.entry-points."minigpt.plugins"]
            demo = "minigpt_demo_plugin"

            [tool.setuptools]
            packages = ["minigpt_demo_plugin"]
            """
        )
    )
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(pkg)],
        check=True,
        capture_output=True,
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), repo])}
    code = (
        "from minigpt import registry; cls = registry.get_model_class('demo_plugin_model'); "
        "print(cls.__module__, 'demo_plugin_model' in registry.list_models())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["minigpt_demo_plugin", "True"]


def test_a_new_kind_is_served_like_the_built_in_ones():
    reg = Registry()
    with pytest.raises(RegistryError, match="unknown registry kind 'reward'"):
        reg.get_class("reward", "brevity")
    reg.add_kind("reward")
    reg.add_kind("reward")  # twice is harmless

    @reg.register("reward", "brevity")
    class Brevity:
        pass

    assert reg.get_class("reward", "brevity") is Brevity and reg.list("reward") == ["brevity"]
    with pytest.raises(RegistryError, match="Did you mean: brevity"):
        reg.get_class("reward", "brevty")
    with pytest.raises(RegistryError, match="identifier"):
        reg.add_kind("not a kind")


def test_adapters_and_heads_are_kinds():
    assert "bottleneck" in registry.list_adapters()
    assert registry.list_heads() == [] or all(isinstance(n, str) for n in registry.list_heads())
