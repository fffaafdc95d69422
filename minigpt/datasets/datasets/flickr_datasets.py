"""Flickr30k Entities as MiniGPT-v2 trains on it: its three preprocessed ("filtered") JSON files.

Each file is a JSON list; every entry names its image by ``image_id`` (the Flickr photo id, the
image being ``<image_id>.jpg``) and holds its boxes as text already on MiniGPT-v2's 0-100 grid:

* ``groundedcaption.json``: ``{"image_id", "grounded_caption"}``, a caption in which each
  grounded phrase is written ``<p>phrase</p> {<x1><y1><x2><y2>}`` (several boxes of one phrase
  joined by ``<delim>``);
* ``captiontobbox.json``: ``{"image_id", "caption", "output"}``, a plain caption and, as
  ``output``, the grounded phrases it mentions in that same ``<p>..</p> {..}`` form;
* ``phrasetobbox.json``: ``{"image_id", "phrase", "bbox"}``, one phrase and its box(es)
  (``{<..><..><..><..>}``, joined by ``<delim>``).

``scripts/convert_flickr30k_entities.py`` writes these files from the official release
(``Sentences/*.txt`` + ``Annotations/*.xml``). Entries are checked as they are read, box text
included: a malformed entry is logged, counted and left out (``add_records``); a file with no
good entry is an error naming its first bad one.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple

from minigpt.common.grounding import GRID, format_phrase_boxes
from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    pick,
    require_keys,
)

_BOX_RE = re.compile(r"\{<(\d{1,3})><(\d{1,3})><(\d{1,3})><(\d{1,3})>\}")


def parse_box_list(text: str) -> List[List[int]]:
    """``"{<a><b><c><d>}<delim>{...}"`` -> grid boxes; ``ValueError`` naming what is wrong."""
    boxes = []
    for part in text.split("<delim>"):
        m = _BOX_RE.fullmatch(part.strip())
        if m is None:
            raise ValueError(f"{part.strip()!r} is not a box {{<x1><y1><x2><y2>}}")
        box = [int(v) for v in m.groups()]
        if max(box) > GRID or box[0] > box[2] or box[1] > box[3]:
            raise ValueError(f"box {part.strip()!r} is off the 0-{GRID} grid or has its corners swapped")
        boxes.append(box)
    return boxes


def check_grounded_text(text: str) -> int:
    """The number of boxes in grounded text (``<p>phrase</p> {box}...``); ``ValueError`` if malformed.

    The text must mark at least one phrase, open and close its ``<p>`` tags in pairs, and hold
    at least one box, every box on the 0-100 grid.
    """
    opened, closed = text.count("<p>"), text.count("</p>")
    if opened == 0 or opened != closed:
        raise ValueError(f"expected <p>phrase</p> pairs, found {opened} <p> and {closed} </p>")
    boxes = [[int(v) for v in m.groups()] for m in _BOX_RE.finditer(text)]
    if not boxes:
        raise ValueError("no box {<x1><y1><x2><y2>} in the text")
    bad = [b for b in boxes if max(b) > GRID]
    if bad:
        raise ValueError(f"box {bad[0]} is off the 0-{GRID} grid")
    return len(boxes)


class _FlickrEntitiesDataset(BaseDataset):
    """Shared reading of MiniGPT-v2's Flickr30k JSON lists; subclasses check and phrase the entries."""

    fields: Tuple[str, ...] = ()
    needs_prompts = False

    def __init__(self, name: str, ann_paths: Sequence[str], *args: Any, **kwargs: Any) -> None:
        """``ann_paths``, then :class:`BaseDataset`'s arguments (processors, images root, options)."""
        super().__init__(name, *args, **kwargs)
        if self.needs_prompts and not self.prompts:
            raise DatasetError(f"dataset {name!r}: a prompt file is required (prompt_file)")
        self.add_json_lists(ann_paths)

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("image_id",) + self.fields, self.name, path, i)
        where = f"dataset {self.name!r}: entry {i} of {path}"
        for field in self.fields:
            if not isinstance(entry[field], str) or not entry[field].strip():
                raise DatasetError(f"{where}: {field!r} must be non-empty text, got {entry[field]!r:.200}")
        try:
            record = self.parse_fields(entry)
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from exc
        image_id = str(entry["image_id"])
        record.update(key=f"{len(self.records)}:{image_id}", image_id=image_id, image=f"{image_id}.jpg")
        return record

    def parse_fields(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        """The record's task fields from a JSON entry; ``ValueError`` for malformed box text."""
        raise NotImplementedError

    def templated(self, text: str, index: int) -> str:
        """``text`` put into a prompt template (``{}`` slot) when a prompt file is set, else as is."""
        return pick(self.prompts, index).format(text) if self.prompts else text

    def instruction_and_answer(self, record: Dict[str, Any], index: int) -> Tuple[str, str]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        instruction, answer = self.instruction_and_answer(record, index)
        return {
            "image": self.load_image(record["image"], sample_id),
            "instruction_input": instruction,
            "answer": answer,
            "sample_id": sample_id,
            "task": self.task,
            "image_id": record["image_id"],
        }


class FlickrGroundedCaptionDataset(_FlickrEntitiesDataset):
    """Grounded captioning (``[grounding]``): a prompt in, the caption with ``<p>phrase</p> {box}`` out.

    Reads ``groundedcaption.json``. The prompt comes from the prompt file (no ``{}`` slot); the
    answer is the grounded caption with its whitespace collapsed. No text processor touches the
    answer: cutting it at ``max_words`` would cut a box in half.
    """

    task = "grounded_caption"
    fields = ("grounded_caption",)
    needs_prompts = True

    def parse_fields(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        caption = " ".join(entry["grounded_caption"].split())
        check_grounded_text(caption)
        return {"grounded_caption": caption}

    def instruction_and_answer(self, record: Dict[str, Any], index: int) -> Tuple[str, str]:
        return self.instruction(pick(self.prompts, index)), record["grounded_caption"]


class FlickrCaptionToPhraseDataset(_FlickrEntitiesDataset):
    """Caption -> its grounded phrases (MiniGPT-v2's ``[detection]``): reads ``captiontobbox.json``.

    The instruction is the (text-processed) caption, in a prompt template when a prompt file is
    set; the answer is ``output``, each phrase of the caption as ``<p>phrase</p> {box}``.
    """

    task = "detection"
    fields = ("caption", "output")

    def parse_fields(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        output = " ".join(entry["output"].split())
        check_grounded_text(output)
        return {"caption": entry["caption"], "output": output}

    def instruction_and_answer(self, record: Dict[str, Any], index: int) -> Tuple[str, str]:
        return self.instruction(self.templated(self.text(record["caption"]), index)), record["output"]


class FlickrObjectToPhraseDataset(_FlickrEntitiesDataset):
    """Phrase -> its boxes (MiniGPT-v2's ``[detection]``): reads ``phrasetobbox.json``.

    The instruction is the (text-processed) phrase, in a prompt template when a prompt file is
    set; the answer is ``<p>phrase</p> {box}<delim>{box}...``. Samples also carry
    ``"grid_boxes"``, the boxes as ``[x1, y1, x2, y2]`` on the 0-100 grid, for evaluation.
    """

    task = "detection"
    fields = ("phrase", "bbox")

    def parse_fields(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        return {"phrase": entry["phrase"], "grid_boxes": parse_box_list(entry["bbox"])}

    def instruction_and_answer(self, record: Dict[str, Any], index: int) -> Tuple[str, str]:
        phrase = self.text(record["phrase"])
        answer = format_phrase_boxes(phrase, record["grid_boxes"])
        return self.instruction(self.templated(phrase, index)), answer

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = super().__getitem__(index)
        sample["grid_boxes"] = [list(box) for box in self.records[index]["grid_boxes"]]
        return sample
