"""Lay the synthetic dataset out where the real builders' default YAMLs look for their data.

With ``generate_synthetic_dataset(root, real_layout=True)`` (``--real-layout``) the generator also
puts, under ``root``, every file the builders of TinyGPT-V's and MiniGPT-v2's published mixtures
read, at the path each builder's default YAML (``configs/datasets/<name>/defaults.yaml``,
``build_info``) names relative to the data root. So ``run.data_root=<root>`` trains the real
builders (``coco_vqa``, ``gqa``, ``refcocog``, ``flickr_grounded_caption``, ...) with their defaults.

The paths come from the YAMLs themselves, never from a copy of them here. To stay small, a file
the generator writes anyway is linked (relative symlinks; copies where links are refused): the
Karpathy captions, VQA lists, LLaVA conversations, RefCOCO files, and the caption shards, every
shard name of a default brace range linking to a real shard in turn. Each image root is a folder
holding ``train`` and ``test`` links to ``images/train`` and ``images/test``, and the annotation
rows name images ``train/000012.jpg`` under it. Formats the generator does not write otherwise
(A-OKVQA, GQA, OCR-VQA, TextCaps, LLaVA detail and reasoning, Flickr30k, Unnatural Instructions,
MiniGPT-v2's multi-task conversations, Visual Genome regions) are written from the same scenes by
:mod:`minigpt.datasets.synthetic.real_rows`; the benchmark files ``eval_scripts/`` read (OK-VQA,
VizWiz, IconQA, VSR, Hateful Memes, ScienceQA) by :mod:`minigpt.datasets.synthetic.benchmark_files`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Union

from omegaconf import DictConfig

from minigpt.common.io import as_list
from minigpt.common.registry import registry
from minigpt.datasets.synthetic import real_rows as rows
from minigpt.datasets.synthetic.benchmark_files import write_benchmark_files
from minigpt.datasets.synthetic.files import FILES, atomic_write_json, shard_name
from minigpt.datasets.synthetic.scenes import Example, iter_examples
from minigpt.datasets.synthetic.videochat_rows import write_videochat_files

SPLITS = ("train", "test")

# The builders laid out, in the order of the published mixtures (TinyGPT-V stages 1-4, MiniGPT-v2's).
REAL_LAYOUT_BUILDERS = (
    "laion",
    "cc_sbu",
    "cc_sbu_align",
    "coco_caption",
    "coco_vqa",
    "okvqa",
    "aokvqa",
    "gqa",
    "ocrvqa",
    "textcaps",
    "llava_conversation",
    "llava_detail",
    "llava_reason",
    "refcoco",
    "refcocop",
    "refcocog",
    "invrefcoco",
    "invrefcocop",
    "invrefcocog",
    "flickr_grounded_caption",
    "flickr_caption_to_phrase",
    "flickr_object_to_phrase",
    "unnatural_instruction",
    "multitask_conversation",
    "refvg",
    "llava_cc3m",
    "llava_instruct_150k",
    "videochat_instruct",
)

Rows = Callable[[Sequence[Example]], Any]


def _flickr(file: str) -> Rows:
    return lambda examples: rows.flickr_files(examples)[file]


# What each annotation-list builder's file holds, per split: a generator file (a FILES key, with
# `{split}` filled in), linked, or rows written from that split's examples.
_ANNOTATIONS: Dict[str, Union[str, Rows]] = {
    "cc_sbu_align": "cc_sbu_align",
    "coco_caption": "coco_caption_{split}",
    "coco_vqa": "vqa_{split}",
    "okvqa": "vqa_{split}",
    "llava_conversation": "llava_{split}",
    "llava_instruct_150k": "llava_{split}",
    "llava_cc3m": rows.llava_detail_rows,
    "aokvqa": rows.aokvqa_rows,
    "gqa": rows.gqa_rows,
    "textcaps": rows.textcaps_file,
    "llava_detail": rows.llava_detail_rows,
    "llava_reason": rows.llava_reason_rows,
    "unnatural_instruction": rows.unnatural_instruction_rows,
    "multitask_conversation": rows.multitask_conversation_rows,
    "flickr_grounded_caption": _flickr("groundedcaption.json"),
    "flickr_caption_to_phrase": _flickr("captiontobbox.json"),
    "flickr_object_to_phrase": _flickr("phrasetobbox.json"),
}
_SHARDS = ("laion", "cc_sbu")
_REFER = ("refcoco", "refcocop", "refcocog", "invrefcoco", "invrefcocop", "invrefcocog")


def default_build_info(name: str) -> DictConfig:
    """``build_info`` of builder ``name``'s default YAML."""
    return registry.get_builder_class(name).default_config().build_info


class _Layout:
    """Writes and links under ``root``, remembering every path it made (relative to ``root``)."""

    def __init__(self, root: Path, examples: Dict[str, List[Example]]) -> None:
        self.root = root
        self.examples = examples
        self.made: List[str] = []
        self.counts: Dict[str, int] = {}

    def link(self, target: str, link: str) -> None:
        """``root/link`` -> ``root/target`` (relative); nothing when they are the same file."""
        src, dst = self.root / target, self.root / link
        if os.path.normpath(src) == os.path.normpath(dst):
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.is_dir():
            shutil.rmtree(dst)
        try:
            os.symlink(os.path.relpath(src, dst.parent), dst, target_is_directory=src.is_dir())
        except OSError:  # no symlinks here (Windows without the privilege): copy instead
            shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)

    def write(self, rel: str, obj: Any, count_key: str) -> None:
        atomic_write_json(self.root / rel, obj)
        self.made.append(rel)
        body = obj.get("data", obj) if isinstance(obj, dict) and "data" in obj else obj
        self.counts[count_key] = len(body)

    def image_root(self, rel: str) -> None:
        """A folder at ``rel`` holding ``train`` and ``test`` links to the generated images."""
        (self.root / rel).mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            self.link(FILES[f"images_{split}"], f"{rel}/{split}")
        self.made.append(rel)


def _annotations(layout: _Layout, name: str, info: DictConfig) -> None:
    source = _ANNOTATIONS[name]
    for split, paths in info.annotations.items():
        if split not in SPLITS:
            raise ValueError(f"real layout of {name!r}: no synthetic split for its split {split!r}")
        for rel in as_list(paths):
            if isinstance(source, str):
                layout.link(FILES[source.format(split=split)], rel)
                layout.made.append(rel)
            else:
                layout.write(rel, source(layout.examples[split]), f"{name}_{split}")


def _shards(layout: _Layout, info: DictConfig, n_shards: Dict[str, int]) -> None:
    import braceexpand  # a webdataset dependency

    for split, patterns in info.shards.items():
        if not n_shards.get(split):
            raise ValueError(f"real layout: no synthetic {split} shards to stand in for {patterns}")
        for pattern in as_list(patterns):
            for k, rel in enumerate(braceexpand.braceexpand(str(pattern))):
                layout.link(shard_name(split, k % n_shards[split]), rel)


def _refer(layout: _Layout, info: DictConfig) -> None:
    layout.link(FILES["refcoco_refs"], f"{info.annotation_dir}/{info.refs_file}")
    layout.link(FILES["refcoco_instances"], f"{info.annotation_dir}/{info.instances_file}")
    layout.made += [f"{info.annotation_dir}/{info.refs_file}", f"{info.annotation_dir}/{info.instances_file}"]


def _ocrvqa(layout: _Layout, info: DictConfig) -> None:
    entries = rows.ocrvqa_entries(layout.examples["train"])
    entries.update(rows.ocrvqa_entries(layout.examples["test"]))
    layout.write(str(info.annotation_file), entries, "ocrvqa")


def _refvg(layout: _Layout, info: DictConfig, n_train: int) -> None:
    files = rows.visual_genome_files(layout.examples["train"], n_train)
    layout.write(as_list(info.annotations.train)[0], files["region_descriptions.json"], "refvg_images")
    layout.write(str(info.image_data), files["image_data.json"], "refvg_image_data")


def _videochat(layout: _Layout, info: DictConfig) -> None:
    for split, paths in info.annotations.items():
        for rel in as_list(paths):
            written = write_videochat_files(layout.root, str(info.videos), layout.examples[split])
            layout.write(rel, written, f"videochat_instruct_{split}")
    layout.made.append(str(info.videos))


def write_real_layout(
    root: Union[str, "os.PathLike[str]"],
    seed: int,
    image_size: int,
    n_train: int,
    n_test: int,
    n_shards: Dict[str, int],
    absent: bool = False,
) -> Dict[str, Any]:
    """Lay the generated dataset under ``root`` out for every builder of :data:`REAL_LAYOUT_BUILDERS`.

    ``n_shards`` maps a split to the number of caption shards the generator wrote. Returns
    ``{"files": [paths made], "counts": {rows per written file}}`` for the manifest.
    """
    examples = {
        split: list(iter_examples(n, seed, split, image_size, render=False, absent=absent))
        for split, n in (("train", n_train), ("test", n_test))
    }
    layout = _Layout(Path(root), examples)
    for name in REAL_LAYOUT_BUILDERS:
        info = default_build_info(name)
        if name in _SHARDS:
            _shards(layout, info, n_shards)
        elif name in _REFER:
            _refer(layout, info)
        elif name == "ocrvqa":
            _ocrvqa(layout, info)
        elif name == "refvg":
            _refvg(layout, info, n_train)
        elif name == "videochat_instruct":
            _videochat(layout, info)
        else:
            _annotations(layout, name, info)
        if "images" in info:
            layout.image_root(str(info.images))
    write_benchmark_files(layout, n_train, seed)
    return {"files": sorted(set(layout.made)), "counts": layout.counts}
