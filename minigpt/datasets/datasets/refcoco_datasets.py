"""RefCOCO / RefCOCO+ / RefCOCOg readers: the ``refs(...).p`` pickle plus COCO ``instances.json``.

The layout is the refer toolkit's (``<dataset>/refs(<splitBy>).p`` and
``<dataset>/instances.json``): ``refs(unc).p`` for RefCOCO and RefCOCO+ (splits train, val,
testA, testB), ``refs(umd).p`` for RefCOCOg (train, val, test; the older ``refs(google).p`` has
train and val only). Each ref names a COCO annotation (``ann_id``), whose ``[x, y, w, h]`` box
it refers to, and holds several sentences. One sample per (ref, sentence).

Boxes are written on MiniGPT-v2's 0-100 grid, ``{<x1><y1><x2><y2>}`` with
``x = round(px / width * 100)`` (``y`` with the height), from the COCO ``[x, y, w, h]`` box of
the ref's annotation.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from minigpt.common.io import DatasetError, load_json, load_pickle
from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    box_to_grid_text,
    check_box,
    check_size,
    pick,
    require_keys,
)


class RefCOCODataset(BaseDataset):
    """Referring expression -> box (``[refer]``): "give me the location of {expression}".

    ``ref_splits`` lists the refer-file split names read into this dataset (e.g. ``["val"]``).
    ``sentence_key`` picks the expression text of each refer sentence: ``"sent"`` (the refer
    toolkit's lower-cased, tokenised form) or ``"raw"`` (as the annotator typed it, which
    MiniGPT-v2 trains on). Samples carry ``"gt_box"`` (``[x1, y1, x2, y2]`` pixels of the
    original image) and ``"image_size"`` (``[width, height]``) for evaluation.
    """

    task = "refer"

    def __init__(
        self,
        name: str,
        refs_path: str,
        instances_path: str,
        ref_splits: Sequence[str],
        *args: Any,
        sentence_key: str = "sent",
        **kwargs: Any,
    ) -> None:
        """The refer files and splits, then :class:`BaseDataset`'s arguments (processors, images root, options)."""
        super().__init__(name, *args, **kwargs)
        if sentence_key not in ("sent", "raw"):
            raise ValueError(f"dataset {name!r}: sentence_key must be 'sent' or 'raw', got {sentence_key!r}")
        if not self.prompts:
            raise DatasetError(f"dataset {name!r}: a prompt file with '{{}}' templates is required")
        refs = load_pickle(refs_path, name)
        if not isinstance(refs, list):
            raise DatasetError(
                f"dataset {name!r}: {refs_path} must hold a list of refs, got {type(refs).__name__}"
            )
        instances = load_json(instances_path, name)
        if not isinstance(instances, dict) or "images" not in instances or "annotations" not in instances:
            raise DatasetError(
                f"dataset {name!r}: {instances_path} must hold COCO 'images' and 'annotations'"
            )
        images = {img["id"]: img for img in instances["images"] if isinstance(img, dict) and "id" in img}
        anns = {ann["id"]: ann for ann in instances["annotations"] if isinstance(ann, dict) and "id" in ann}
        wanted = set(ref_splits)
        seen_splits = set()

        def parse(i: int, ref: Any) -> List[Dict[str, Any]]:
            """The records (one per sentence) of ref ``i``; none for a ref of another split."""
            require_keys(ref, ("ref_id", "ann_id", "image_id", "split", "sentences"), name, refs_path, i)
            seen_splits.add(ref["split"])
            if ref["split"] not in wanted:
                return []
            where = f"dataset {name!r}: ref {ref['ref_id']} in {refs_path}"
            ann, image = anns.get(ref["ann_id"]), images.get(ref["image_id"])
            if ann is None or image is None:
                missing = f"annotation {ref['ann_id']}" if ann is None else f"image {ref['image_id']}"
                raise DatasetError(f"{where} names {missing}, which {instances_path} does not hold")
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise DatasetError(
                    f"{where}: annotation {ref['ann_id']} has no [x, y, w, h] bbox: {bbox!r:.100}", kind="bad_box"
                )
            check_size(image.get("width"), image.get("height"), f"{where}: image {ref['image_id']} in {instances_path}")
            if not isinstance(image.get("file_name"), str):
                raise DatasetError(f"{where}: image {ref['image_id']} has no file_name text", kind="wrong_type")
            x, y = bbox[0], bbox[1]
            box = [x, y, x + bbox[2], y + bbox[3]] if all(isinstance(v, (int, float)) for v in bbox) else bbox
            check_box(box, image["width"], image["height"], f"{where}: annotation {ref['ann_id']}")
            records = []
            for j, sentence in enumerate(ref["sentences"]):
                text = sentence.get(sentence_key) if isinstance(sentence, dict) else None
                if not isinstance(text, str):
                    raise DatasetError(f"{where}, sentence {j} lacks {sentence_key!r} text", kind="wrong_type")
                records.append(
                    {
                        "key": f"{ref['ref_id']}:{sentence.get('sent_id', j)}",
                        "image": image["file_name"],
                        "size": (image["width"], image["height"]),
                        "box": box,
                        "expression": text,
                        "ref_id": ref["ref_id"],
                    }
                )
            return records

        # a malformed ref is logged, counted and left out; a file of nothing else is an error
        self.add_records(refs_path, refs, parse)
        if not self.records:
            which = f"split {next(iter(wanted))!r}" if len(wanted) == 1 else f"splits {sorted(wanted)}"
            raise DatasetError(
                f"dataset {name!r}: no refs in {which} in {refs_path} (it has {sorted(map(str, seen_splits))})"
            )

    def load_record_image(self, record: Dict[str, Any], sample_id: str):
        if not self.read_images:
            return None
        path = self.image_path(record["image"], sample_id)

        def read():
            image = self.open_image(path, sample_id)
            if tuple(image.size) != tuple(record["size"]):
                # the box text is relative to the annotated size; a different file would misplace it
                raise DatasetError(
                    f"dataset {self.name!r}, sample {sample_id!r}: image {path} is {image.size[0]}x{image.size[1]} "
                    f"but the instances file says {record['size'][0]}x{record['size'][1]}",
                    kind="bad_size", path=path, sample_id=sample_id,
                )
            return self.process_image(image)

        # an image source (minigpt.datasets.image_source) may answer without decoding the file
        return self.image_source(path, read) if self.image_source is not None else read()

    def instruction_and_answer(self, record: Dict[str, Any], index: int) -> List[str]:
        expression = self.text(record["expression"])
        box_text = box_to_grid_text(record["box"], *record["size"])
        return [self.instruction(pick(self.prompts, index).format(expression)), box_text]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        instruction, answer = self.instruction_and_answer(record, index)
        return {
            "image": self.load_record_image(record, sample_id),
            "instruction_input": instruction,
            "answer": answer,
            "sample_id": sample_id,
            "task": self.task,
            "gt_box": list(record["box"]),
            "image_size": list(record["size"]),
        }


class InvRefCOCODataset(RefCOCODataset):
    """Box -> referring expression (``[identify]``): "what is this {<x1><y1><x2><y2>}" -> expression."""

    task = "identify"

    def instruction_and_answer(self, record: Dict[str, Any], index: int) -> List[str]:
        box_text = box_to_grid_text(record["box"], *record["size"])
        instruction = self.instruction(pick(self.prompts, index).format(box_text))
        return [instruction, self.text(record["expression"])]
