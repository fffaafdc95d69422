"""Image-creation readers: a request with no input image, the answer ``<dream>``, and the image to draw."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from minigpt.common.io import DatasetError
from minigpt.datasets.datasets.base_dataset import BaseDataset, Processor, make_instruction, require_keys

DRAWING_FIELDS = ("colour", "kind", "quadrant")


class DrawingRequestDataset(BaseDataset):
    """Drawing requests ``[{image, prompt, answer, colour, kind, quadrant}]`` (the synthetic generator's
    ``creation/creation_<split>.json``).

    A sample is ``{"image": None, "instruction_input": prompt, "answer": answer, "target_image": [3, H, W],
    "drawing": {colour, kind, quadrant}, "task": "creation"}``: nothing to look at, an image to make. The
    target is read with the vision processor (mean/std 0.5: pixels in [-1, 1]); text is kept as written
    (the answer holds the ``<dream>`` token, which a text processor would mangle).
    """

    task = "creation"

    def __init__(
        self,
        name: str,
        ann_paths: Sequence[str],
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        images_root: str,
        task_tag: Optional[str] = None,
        read_images: bool = True,
    ) -> None:
        super().__init__(name, vis_processor, None, images_root, task_tag=task_tag, read_images=read_images)
        if not read_images:
            raise ValueError(f"datasets.{name}.data_type must be 'images': the target images are the data")
        self.add_json_lists(ann_paths)

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("image", "prompt", "answer"), self.name, path, i)
        for key in ("prompt", "answer"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise DatasetError(f"dataset {self.name!r}: entry {i} of {path}: {key!r} must be a non-empty string")
        return {"key": i, **{k: entry[k] for k in ("image", "prompt", "answer")},
                "drawing": {k: entry.get(k) for k in DRAWING_FIELDS}}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sid = self.sample_id(record["key"])
        # read directly, never through image_source: the vision feature cache is for input images
        path = self.image_path(record["image"], sid)
        return {
            "image": None,
            "instruction_input": make_instruction(record["prompt"], self.task_tag, with_image=False),
            "answer": record["answer"],
            "target_image": self.process_image(self.open_image(path, sid)),
            "drawing": dict(record["drawing"]),
            "sample_id": sid,
            "task": self.task,
        }
