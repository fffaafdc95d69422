"""Images with labelled boxes, for stage-0 pretraining of a random-init vision encoder."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from minigpt.datasets.datasets.base_dataset import BaseDataset, Processor, check_box, check_size, require_keys
from minigpt.datasets.datasets.text_datasets import load_json_records


class SceneRegionDataset(BaseDataset):
    """The synthetic generator's scene file: one JSON line per image, ``{image, width, height, objects}``.

    Each object is ``{"kind", "colour", "box": [x1, y1, x2, y2]}`` in pixels. A sample is the image
    and its ``regions``: every object's box in fractions of the image size with its label fields
    (``fields``), as :class:`minigpt.models.vision_pretrain.VisionPretrain` reads them.
    """

    task = "region_labels"

    def __init__(
        self,
        name: str,
        paths: Sequence[str],
        vis_processor: Optional[Processor],
        images_root: str,
        fields: Sequence[str] = ("kind", "colour"),
    ) -> None:
        super().__init__(name, vis_processor, None, images_root)
        self.fields = list(fields)
        for path in paths:
            self.add_records(path, load_json_records(path, name), lambda i, e, p=path: self._parse(p, i, e))

    def _parse(self, path: str, index: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("image", "width", "height", "objects"), self.name, path, index)
        where = f"dataset {self.name!r}: entry {index} of {path}"
        check_size(entry["width"], entry["height"], where)
        w, h = float(entry["width"]), float(entry["height"])
        regions: List[Dict[str, Any]] = []
        for k, obj in enumerate(entry["objects"] if isinstance(entry["objects"], list) else [entry["objects"]]):
            require_keys(obj, ("box", *self.fields), self.name, path, index)
            box = check_box(obj["box"], w, h, f"{where}, object {k}")
            region = {"box": [box[0] / w, box[1] / h, box[2] / w, box[3] / h]}
            region.update({f: obj[f] for f in self.fields})
            regions.append(region)
        return {"image": entry["image"], "regions": regions, "key": entry["image"]}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        return {
            "image": self.load_image(record["image"], sample_id),
            "regions": [dict(r) for r in record["regions"]],
            "sample_id": sample_id,
            "task": self.task,
        }
