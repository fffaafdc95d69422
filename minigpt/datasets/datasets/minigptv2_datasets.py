"""Readers of two MiniGPT-v2 stage-3 sources: its multi-task conversations and Visual Genome regions.

* ``multi_task_conversation.json`` (MiniGPT-v2's own file): a JSON list of
  ``{"id", "conversations": [{"from": "human" | "gpt", "value"}, ...]}``, LLaVA's turn layout;
  MiniGPT-v2's loader opens ``COCO_train2014_{id}.jpg`` in the image root. An entry's
  ``"image"`` (a path under the image root), when present, is used instead: the synthetic
  generator names its images that way.
* Visual Genome 1.2's ``region_descriptions.json`` (``[{"id": image id, "regions": [{"region_id",
  "image_id", "phrase", "x", "y", "width", "height"}]}]``) with ``image_data.json``
  (``[{"image_id" | "id", "url", "width", "height"}]``), read as MiniGPT-v2's ``refvg`` does
  (through the ``visual_genome`` package there): each region is a referring expression whose
  answer is its box; the image is the last two parts of its URL (``VG_100K/1.jpg``) under the
  image root; only regions smaller than ``max_region_area`` pixels are kept (OFA's rule, 16384).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from minigpt.common.io import DatasetError, load_json
from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    check_box,
    check_size,
    load_json_list,
    require_keys,
)
from minigpt.datasets.datasets.llava_datasets import LlavaConversationDataset
from minigpt.datasets.datasets.refcoco_datasets import RefCOCODataset


class MultiTaskConversationDataset(LlavaConversationDataset):
    """MiniGPT-v2's multi-task conversations: multi-turn samples like ``llava_conversation``'s.

    The image is the entry's ``"image"`` or else ``COCO_train2014_{id}.jpg`` (MiniGPT-v2's rule).
    """

    def _parse(self, entry: Any, path: str, index: int) -> Dict[str, Any]:
        record = super()._parse(entry, path, index)
        if record["image"] is None:
            record["image"] = f"COCO_train2014_{entry['id']}.jpg"
        return record


class RefVGDataset(RefCOCODataset):
    """Visual Genome region descriptions as ``[refer]`` samples (phrase -> box), RefCOCO's sample schema.

    ``region_paths`` are ``region_descriptions.json`` files, ``image_data_path`` Visual Genome's
    ``image_data.json`` (image sizes and URLs). Samples carry ``"gt_box"`` and ``"image_size"``.
    """

    task = "refer"

    def __init__(
        self,
        name: str,
        region_paths: Sequence[str],
        image_data_path: str,
        *args: Any,
        max_region_area: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        """The annotation files, then :class:`BaseDataset`'s arguments (processors, images root, options)."""
        BaseDataset.__init__(self, name, *args, **kwargs)  # RefCOCODataset's own reads refer files
        if not self.prompts:
            raise DatasetError(f"dataset {name!r}: a prompt file with '{{}}' templates is required")
        self.max_region_area = max_region_area
        self._images = self._read_image_data(image_data_path)
        for path in region_paths:
            # one record per region, so a malformed region is left out alone, not with its image
            self.add_records(
                path, list(_regions(load_json_list(path, name))), partial(self._parse_region, path)
            )
        del self._images
        if not self.records:
            raise DatasetError(
                f"dataset {name!r}: no region under {max_region_area} pixels in {', '.join(region_paths)}"
            )

    def _read_image_data(self, path: str) -> Dict[Any, Dict[str, Any]]:
        data = load_json(path, self.name)
        if not isinstance(data, list):
            raise DatasetError(f"dataset {self.name!r}: {path} must hold Visual Genome's image list")
        images = {}
        for entry in data:
            if isinstance(entry, dict) and ("image_id" in entry or "id" in entry):
                images[entry.get("image_id", entry.get("id"))] = entry
        return images

    def _parse_region(self, path: str, n: int, item: Tuple[int, Any, int, Any]) -> List[Dict[str, Any]]:
        i, entry, k, region = item
        require_keys(entry, ("id", "regions"), self.name, path, i)
        where = f"dataset {self.name!r}: image {entry['id']!r} (entry {i}) of {path}"
        if region is None:
            raise DatasetError(f"{where}: 'regions' must be a non-empty list", kind="wrong_type")
        image = self._images.get(entry["id"])
        if image is None or not isinstance(image.get("url"), str):
            raise DatasetError(f"{where}: image_data.json has no url for it", kind="wrong_type")
        width, height = image.get("width"), image.get("height")
        check_size(width, height, where)
        require_keys(region, ("phrase", "x", "y", "width", "height"), self.name, path, f"{i} region {k}")
        if self.max_region_area is not None and region["width"] * region["height"] >= self.max_region_area:
            return []
        x, y = region["x"], region["y"]
        box = check_box(
            [x, y, x + region["width"], y + region["height"]], width, height, f"{where}, region {k}"
        )
        return [
            {
                "key": f"{entry['id']}:{region.get('region_id', k)}",
                "image": "/".join(urlparse(image["url"]).path.split("/")[-2:]),
                "size": (width, height),
                "box": box,
                "expression": str(region["phrase"]).strip(),
                "ref_id": region.get("region_id", k),
            }
        ]


def _regions(data: List[Any]) -> Iterator[Tuple[int, Any, int, Any]]:
    """``(entry index, image entry, region index, region)`` for every region; ``region`` None for an entry without any."""
    for i, entry in enumerate(data):
        regions = entry.get("regions") if isinstance(entry, dict) else None
        if isinstance(regions, list) and regions:
            for k, region in enumerate(regions):
                yield i, entry, k, region
        else:
            yield i, entry, -1, None
