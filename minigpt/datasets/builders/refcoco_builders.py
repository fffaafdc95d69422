"""Builders of the referring-expression datasets (refs pickle + COCO instances).

RefCOCO, RefCOCO+ and RefCOCOg share one reader and one builder; the registered names differ
only in their default YAML (which refer folder and pickle, which splits) and in the direction
of the task: ``refcoco*`` ask for the box of an expression (``[refer]``), ``invrefcoco*`` for
the expression of a box (``[identify]``).
"""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from minigpt.common.io import as_list
from minigpt.datasets.builders.base_builder import BaseDatasetBuilder, declare_builder, default_yaml
from minigpt.datasets.datasets.refcoco_datasets import InvRefCOCODataset, RefCOCODataset

_REFER_FORMAT = "refer toolkit: {refs} + instances.json, COCO train2014 images"


class RefCOCOBuilder(BaseDatasetBuilder):
    """RefCOCO expression -> box (``[refer]``), registered as ``refcoco``.

    ``build_info.annotation_dir`` holds ``refs_file`` (``refs(unc).p``; ``refs(umd).p`` for
    RefCOCOg) and ``instances_file``; ``build_info.splits`` maps each of our splits to the
    refer-file splits it reads (``train: [train]``, ``test: [val]``). ``sentence_key`` picks the
    refer sentence text (``raw`` as typed, ``sent`` lower-cased and tokenised).
    """

    TASK = "refer"
    FORMAT = _REFER_FORMAT.format(refs="refs(unc).p")
    APPROX_SIZE = "142k expressions / 50k objects / 20k images"
    DATASET_CONFIG_DICT = default_yaml("refcoco")
    dataset_cls = RefCOCODataset
    SPLITS_KEY = "splits"

    def build_split(self, split: str) -> Dataset:
        info = self.build_info
        return self.annotation_dataset(
            self.dataset_cls,
            split,
            self.path(os.path.join(info.annotation_dir, info.refs_file)),
            self.path(os.path.join(info.annotation_dir, info.instances_file)),
            as_list(info.splits[split]),
            prompts=self.prompts(slot=True),
            # YAMLs written before the key existed read the toolkit's `sent`
            sentence_key=self.config.get("sentence_key", "sent"),
            image_last=bool(self.config.image_last),
        )


InvRefCOCOBuilder = declare_builder(__name__, "InvRefCOCOBuilder", RefCOCOBuilder, "invrefcoco", "RefCOCO box -> expression (``[identify]``)", TASK="identify", dataset_cls=InvRefCOCODataset)
# RefCOCO+ has RefCOCO's layout (refcoco+/refs(unc).p; train, val, testA, testB); its expressions were
# collected without words of absolute location ("left", "top").
RefCOCOPlusBuilder = declare_builder(__name__, "RefCOCOPlusBuilder", RefCOCOBuilder, "refcocop", "RefCOCO+ expression -> box (``[refer]``; no location words)")
InvRefCOCOPlusBuilder = declare_builder(__name__, "InvRefCOCOPlusBuilder", RefCOCOPlusBuilder, "invrefcocop", "RefCOCO+ box -> expression (``[identify]``)", TASK="identify", dataset_cls=InvRefCOCODataset)
# RefCOCOg: the UMD split (refcocog/refs(umd).p: train, val, test), as MiniGPT-v2 reads it; the Google split
# (refs(google).p: train, val) reads the same way with `refs_file` changed.
RefCOCOgBuilder = declare_builder(__name__, "RefCOCOgBuilder", RefCOCOBuilder, "refcocog", "RefCOCOg expression -> box (``[refer]``; longer expressions)", FORMAT=_REFER_FORMAT.format(refs="refs(umd).p"), APPROX_SIZE="95k expressions / 50k objects / 26k images (UMD split)")
InvRefCOCOgBuilder = declare_builder(__name__, "InvRefCOCOgBuilder", RefCOCOgBuilder, "invrefcocog", "RefCOCOg box -> expression (``[identify]``)", TASK="identify", dataset_cls=InvRefCOCODataset)
