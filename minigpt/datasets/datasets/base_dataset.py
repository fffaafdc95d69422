"""What every dataset reader shares: the sample schema, instruction text, prompts and boxes.

Every reader yields one dict per sample::

    {"image": FloatTensor[3, H, W] | None, "instruction_input": str | list[str],
     "answer": str | list[str], "sample_id": "<dataset>:<id>", "task": "caption" | "vqa" | ...}

plus task-specific evaluation keys documented on each reader. Instructions follow MiniGPT-v2:
the image placeholder, then the task tag (if any), then the text.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from torch.utils.data import Dataset

from minigpt.common import grounding
from minigpt.datasets.datasets.io import DatasetError, load_json, open_image, read_text_lines, resolve_path

IMAGE_PLACEHOLDER = "<Img><ImageHere></Img>"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Processor = Callable[[Any], Any]


def load_prompts(prompt_file: Optional[str], slot: bool = False) -> List[str]:
    """The templates in a prompt file, one per line (blank and ``#`` lines skipped).

    A relative ``prompt_file`` is relative to the ``minigpt`` package (``prompts/refer.txt``).
    With ``slot=True`` every template must hold exactly one ``{}``, which the reader fills.
    """
    if prompt_file is None:
        return []
    path = resolve_path(PACKAGE_DIR, prompt_file)
    prompts = read_text_lines(path, "prompt file")
    if not prompts:
        raise DatasetError(f"prompt file {path} holds no prompts")
    for n, prompt in enumerate(prompts, 1):
        if IMAGE_PLACEHOLDER in prompt or "<ImageHere>" in prompt:
            raise DatasetError(
                f"prompt file {path}, prompt {n}: {prompt!r} contains the image placeholder; "
                "the dataset adds it, prompt files hold only the text"
            )
        if slot and prompt.count("{}") != 1:
            raise DatasetError(f"prompt file {path}, prompt {n}: {prompt!r} must contain exactly one '{{}}'")
    return prompts


def pick(options: Sequence[str], key: Union[int, str]) -> str:
    """One of ``options`` chosen by an RNG seeded with ``key``: the same sample, the same choice.

    ``random.Random`` seeds strings through SHA-512, so the choice does not depend on
    ``PYTHONHASHSEED`` or on the process that asks.
    """
    return random.Random(key).choice(list(options))


def make_instruction(text: str, task_tag: Optional[str] = None, with_image: bool = True) -> str:
    """``"<Img><ImageHere></Img> [tag] text"`` (placeholder and tag each optional)."""
    parts = [IMAGE_PLACEHOLDER] if with_image else []
    if task_tag:
        parts.append(task_tag)
    if text:
        parts.append(text)
    return " ".join(parts)


def box_to_grid_text(box: Sequence[float], width: float, height: float) -> str:
    """An ``[x1, y1, x2, y2]`` pixel box as MiniGPT-v2's ``{<x1><y1><x2><y2>}`` on a 0-100 grid (rounded, clipped)."""
    return grounding.format_box(box, width, height)


def most_frequent(answers: Sequence[str]) -> str:
    """The most common answer; on a tie, the one that comes first in ``answers``."""
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def require_keys(entry: Any, keys: Sequence[str], dataset: str, path: str, index: int) -> None:
    """Raise naming the file and entry when an annotation lacks one of ``keys``."""
    if not isinstance(entry, dict):
        raise DatasetError(f"dataset {dataset!r}: entry {index} of {path} is not an object: {entry!r:.200}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(
            f"dataset {dataset!r}: entry {index} of {path} lacks key(s) {', '.join(missing)} "
            f"(has {', '.join(sorted(entry))})"
        )


def load_json_list(path: str, dataset: str) -> List[Any]:
    """A JSON annotation file that must hold a list."""
    data = load_json(path, dataset)
    if not isinstance(data, list):
        raise DatasetError(f"dataset {dataset!r}: {path} must hold a JSON list, got {type(data).__name__}")
    return data


class BaseDataset(Dataset):
    """Map-style reader base: holds the processors, the image root and the instruction options.

    Subclasses fill ``self.records`` and implement ``__getitem__``; ``load_image`` reads and
    processes one image, raising an error that names the dataset, sample and path. With
    ``read_images=False`` (a ``data_type: text`` dataset) no image is read: ``"image"`` is
    ``None`` and instructions carry no image placeholder.
    """

    task: str = ""

    def __init__(
        self,
        name: str,
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        images_root: Optional[str],
        task_tag: Optional[str] = None,
        prompts: Optional[Sequence[str]] = None,
        read_images: bool = True,
    ) -> None:
        self.name = name
        self.read_images = read_images
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.images_root = images_root
        self.task_tag = task_tag or None
        self.prompts = list(prompts or [])
        self.records: List[Dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.records)

    def sample_id(self, key: Any) -> str:
        return f"{self.name}:{key}"

    def text(self, text: str) -> str:
        return self.text_processor(text) if self.text_processor is not None else " ".join(text.split())

    def instruction(self, text: str, task_tag: Optional[str] = None) -> str:
        """``text`` behind the image placeholder (if images are read) and the task tag."""
        return make_instruction(text, self.task_tag if task_tag is None else task_tag, self.read_images)

    def load_image(self, rel_path: str, sample_id: str):
        """The processed image at ``images_root/rel_path`` (``None`` when images are not read)."""
        if not self.read_images:
            return None
        image = open_image(resolve_path(self.images_root, rel_path), self.name, sample_id)
        return self.process_image(image)

    def process_image(self, image):
        return self.vis_processor(image) if self.vis_processor is not None else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, samples={len(self)}, images_root={self.images_root!r})"
