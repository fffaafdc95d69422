"""Write MiniGPT-v2's three Flickr30k JSON files from the official Flickr30k Entities release.

MiniGPT-v2 trains its Flickr tasks on preprocessed ("filtered") JSON files it hosts itself. This
script makes files of the same schema from the public annotations
(https://github.com/BryanPlummer/flickr30k_entities: ``annotations.zip`` holds ``Sentences/``
and ``Annotations/``; ``train.txt``/``val.txt``/``test.txt`` list the image ids of each split):

* ``groundedcaption.json``: ``{"image_id", "grounded_caption"}``, one per sentence with at least
  one boxed phrase; each boxed phrase becomes ``<p>phrase</p> {<x1><y1><x2><y2>}`` (several
  boxes of one entity joined by ``<delim>``), other phrases stay plain text;
* ``captiontobbox.json``: ``{"image_id", "caption", "output"}``, the plain sentence and its boxed
  phrases in that form, in sentence order, joined by spaces;
* ``phrasetobbox.json``: ``{"image_id", "phrase", "bbox"}``, each boxed phrase once per image
  (the same wording of the same entity in several sentences is written once).

Phrases without boxes (``notvisual``, scenes, entities marked ``nobndbox``) are not grounded.
Boxes are the XML's 1-based inclusive pixel corners, made ``[xmin - 1, ymin - 1, xmax, ymax]``
and put on the 0-100 grid with :func:`minigpt.common.grounding.format_box` (``--rounding floor``
truncates as MiniGPT-v2's own code does). MiniGPT-v2's filtering rule is not published, so its
files hold fewer entries than these.

    python scripts/convert_flickr30k_entities.py --entities /path/to/flickr30k_entities \\
        --split train --out <data_root>/filtered_flickr
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from minigpt.common.grounding import box_to_grid, format_grid_box, format_phrase_boxes  # noqa: E402

OUTPUT_FILES = ("groundedcaption.json", "captiontobbox.json", "phrasetobbox.json")

# "[/EN#283585/people A young boy]": entity id, one or more types, the phrase's words
_PHRASE_RE = re.compile(r"\[/EN#(\d+)((?:/[^\s/\]]+)+)\s+([^\]]*)\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")


class Phrase(NamedTuple):
    """One marked phrase of a Flickr30k Entities sentence."""

    text: str
    entity_id: str
    types: Tuple[str, ...]


Segment = Union[str, Phrase]


def parse_sentence(line: str) -> List[Segment]:
    """A ``Sentences/<id>.txt`` line as plain-text pieces and :class:`Phrase` pieces, in order."""
    segments: List[Segment] = []
    pos = 0
    for m in _PHRASE_RE.finditer(line):
        if m.start() > pos:
            segments.append(line[pos : m.start()])
        types = tuple(t for t in m.group(2).split("/") if t)
        segments.append(Phrase(" ".join(m.group(3).split()), m.group(1), types))
        pos = m.end()
    if pos < len(line):
        segments.append(line[pos:])
    return segments


def parse_annotation(
    xml_text: Union[str, bytes], where: str = "annotation"
) -> Tuple[int, int, Dict[str, List[List[float]]]]:
    """``(width, height, {entity id: [[x1, y1, x2, y2] pixels, ...]})`` from an ``Annotations/<id>.xml``.

    A box listed under several ``<name>`` entities belongs to each of them; objects with
    ``<nobndbox>`` or ``<scene>`` and no ``<bndbox>`` give no box.
    """
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"{where}: not valid XML: {exc}") from exc
    size = root.find("size")
    try:
        width, height = int(size.findtext("width")), int(size.findtext("height"))  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: no <size><width>/<height>") from exc
    if width <= 0 or height <= 0:
        raise ValueError(f"{where}: image size {width}x{height} is not positive")
    boxes: Dict[str, List[List[float]]] = {}
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            continue
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise ValueError(f"{where}: a <bndbox> lacks a numeric xmin/ymin/xmax/ymax") from exc
        box = [xmin - 1, ymin - 1, xmax, ymax]  # 1-based inclusive corners -> continuous pixels
        for name in obj.findall("name"):
            if name.text and name.text.strip():
                boxes.setdefault(name.text.strip(), []).append(box)
    return width, height, boxes


def _detokenize(text: str) -> str:
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def convert_image(
    image_id: str,
    sentences: Sequence[str],
    xml_text: Union[str, bytes],
    rounding: str = "round",
) -> Tuple[List[dict], List[dict], List[dict]]:
    """The (grounded caption, caption-to-phrase, phrase-to-box) entries of one image."""
    width, height, pixel_boxes = parse_annotation(xml_text, f"annotation of image {image_id}")
    grid: Dict[str, List[List[int]]] = {}
    for entity, boxes in pixel_boxes.items():
        unique: List[List[int]] = []
        for box in boxes:
            g = box_to_grid(box, width, height, rounding)
            if g not in unique:
                unique.append(g)
        grid[entity] = unique
    grounded_out, caption_out, phrase_out = [], [], []
    seen_phrases = set()
    for line in sentences:
        if not line.strip():
            continue
        pieces, plain, grounded_phrases = [], [], []
        for seg in parse_sentence(line):
            if isinstance(seg, str):
                pieces.append(seg)
                plain.append(seg)
                continue
            plain.append(seg.text)
            boxes = grid.get(seg.entity_id) if seg.entity_id != "0" else None
            if not boxes or not seg.text:
                pieces.append(seg.text)
                continue
            marked = format_phrase_boxes(seg.text, boxes)
            pieces.append(marked)
            grounded_phrases.append(marked)
            key = (seg.text.lower(), seg.entity_id)
            if key not in seen_phrases:
                seen_phrases.add(key)
                phrase_out.append(
                    {
                        "image_id": image_id,
                        "phrase": seg.text,
                        "bbox": "<delim>".join(map(format_grid_box, boxes)),
                    }
                )
        if not grounded_phrases:
            continue
        grounded_out.append({"image_id": image_id, "grounded_caption": _detokenize(" ".join(pieces))})
        caption_out.append(
            {
                "image_id": image_id,
                "caption": _detokenize(" ".join(plain)),
                "output": " ".join(grounded_phrases),
            }
        )
    return grounded_out, caption_out, phrase_out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"Flickr30k Entities file not found: {path}") from None


def convert(
    entities_dir: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike],
    split: Optional[str] = "train",
    rounding: str = "round",
    limit: Optional[int] = None,
) -> Dict[str, int]:
    """Convert the images of ``split`` (``<entities_dir>/<split>.txt``; None: every sentence file).

    Writes :data:`OUTPUT_FILES` into ``out_dir`` and returns the number of entries of each.
    """
    entities = Path(entities_dir)
    if split is None:
        image_ids = sorted(p.stem for p in (entities / "Sentences").glob("*.txt"))
    else:
        image_ids = [
            line.strip() for line in _read_text(entities / f"{split}.txt").splitlines() if line.strip()
        ]
    if limit is not None:
        image_ids = image_ids[:limit]
    if not image_ids:
        raise ValueError(f"no images to convert under {entities} (split {split!r})")
    outputs: Tuple[List[dict], List[dict], List[dict]] = ([], [], [])
    for image_id in image_ids:
        sentences = _read_text(entities / "Sentences" / f"{image_id}.txt").splitlines()
        xml_text = _read_text(entities / "Annotations" / f"{image_id}.xml")
        for out, entries in zip(outputs, convert_image(image_id, sentences, xml_text, rounding)):
            out.extend(entries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, entries in zip(OUTPUT_FILES, outputs):
        tmp = out / f".{name}.tmp"
        tmp.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, out / name)  # a crash mid-write leaves the previous file, not half a file
        counts[name] = len(entries)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--entities", required=True, help="folder holding Sentences/, Annotations/ and <split>.txt"
    )
    parser.add_argument("--out", required=True, help="output folder (e.g. <data_root>/filtered_flickr)")
    parser.add_argument("--split", default="train", help="train | val | test | all (every sentence file)")
    parser.add_argument("--rounding", choices=("round", "floor"), default="round", help="grid rounding")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N images")
    args = parser.parse_args(argv)
    counts = convert(
        args.entities, args.out, None if args.split == "all" else args.split, args.rounding, args.limit
    )
    for name, n in counts.items():
        print(f"{os.path.join(args.out, name)}: {n} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
