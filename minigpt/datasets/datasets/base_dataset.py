"""What every dataset reader shares: the sample schema, instruction text, prompts and boxes.

Every reader yields one dict per sample::

    {"image": FloatTensor[3, H, W] | None, "instruction_input": str | list[str],
     "answer": str | list[str], "sample_id": "<dataset>:<id>", "task": "caption" | "vqa" | ...}

plus task-specific evaluation keys documented on each reader. Instructions follow MiniGPT-v2:
the image placeholder, then the task tag (if any), then the text.

Bad data: a reader raises :class:`DatasetError` (with its ``kind``) for a sample it cannot read
(never returns ``None``); images are read within the dataset's :class:`ReadLimits` and only from
inside its image root. For training, :mod:`minigpt.datasets.datasets.skipping` replaces such
samples and counts them by kind (its names are re-exported here).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import Counter
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from torch.utils.data import Dataset

from minigpt.common import grounding
from minigpt.common.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN, READ_STATS_KEY  # noqa: F401  (re-exported)
from minigpt.common.feature_store import FeatureStore, media_id
from minigpt.common.io import (
    DatasetError,
    ReadLimits,
    contained_path,
    default_read_limits,
    load_json,
    open_image,
    read_text_lines,
    resolve_path,
)
from minigpt.datasets.datasets.skipping import (  # noqa: F401  (re-exported: the names readers and runners import)
    DEFAULT_MAX_ATTEMPTS,
    SkippingDataset,
    SkipTracker,
    check_placeholders,
    replacement_index,
    skip_bad_samples,
    skip_record,
)

logger = logging.getLogger(__name__)

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
        if IMAGE_PLACEHOLDER in prompt or IMAGE_TOKEN in prompt:
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


def make_instruction(
    text: str, task_tag: Optional[str] = None, with_image: bool = True, placeholder: str = IMAGE_PLACEHOLDER
) -> str:
    """``"<Img><ImageHere></Img> [tag] text"`` (placeholder and tag each optional; a video sample's
    ``placeholder`` is ``<Video><VideoHere></Video>``)."""
    parts = [placeholder] if with_image else []
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
        raise DatasetError(
            f"dataset {dataset!r}: entry {index} of {path} is not an object: {entry!r:.200}", kind="wrong_type"
        )
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(
            f"dataset {dataset!r}: entry {index} of {path} lacks key(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, sorted(entry, key=str)))})",
            kind="wrong_type",
        )


def check_box(box: Any, width: float, height: float, where: str, slack: float = 1.0) -> List[float]:
    """``box`` as ``[x1, y1, x2, y2]`` floats, or :class:`DatasetError` (``bad_box``) naming ``where``.

    Four finite numbers with ``x1 < x2``, ``y1 < y2``, inside the ``width`` x ``height`` image up to
    ``slack`` pixels (annotation tools round outward). ``width``/``height`` must already be positive.
    """
    numbers = isinstance(box, (list, tuple)) and len(box) == 4
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    if not numbers or not all(math.isfinite(v) for v in box):
        raise DatasetError(f"{where}: bad box {box!r:.100}: not four numbers [x1, y1, x2, y2]", kind="bad_box")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x1 < x2 and y1 < y2):
        raise DatasetError(f"{where}: bad box {list(box)}: empty or inverted", kind="bad_box")
    if x1 < -slack or y1 < -slack or x2 > width + slack or y2 > height + slack:
        raise DatasetError(f"{where}: bad box {list(box)}: outside the {width}x{height} image", kind="bad_box")
    return [x1, y1, x2, y2]


def check_size(width: Any, height: Any, where: str) -> None:
    """:class:`DatasetError` unless ``width`` and ``height`` are positive integers (``wrong_type`` / ``bad_size``)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
        raise DatasetError(f"{where}: width/height {width!r}x{height!r} are not integers", kind="wrong_type")
    if width <= 0 or height <= 0:
        raise DatasetError(f"{where}: image size {width}x{height} is not positive", kind="bad_size")


def parse_json_lines(lines: Iterable[str], error: Callable[[int, ValueError], Exception]) -> List[Any]:
    """The values of the non-blank ``lines`` (JSON Lines); a bad line raises ``error(line number, exc)``."""
    values = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except ValueError as exc:
                raise error(n, exc) from exc
    return values


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
    # set on a copy by the training data path (minigpt.datasets.image_source): load_image hands it the
    # image's path and a read() callable, so cached or scanned images are never decoded
    image_source: Optional[Callable[[str, Callable[[], Any]], Any]] = None
    # the dataset config's read_limits block, set by the builder; None: configs/datasets/read_limits.yaml
    read_limits: Optional[ReadLimits] = None
    # set by the builder from the dataset's features_dir (minigpt.common.feature_store): each media item
    # is then its stored embedding, looked up by media id, and no file is opened
    feature_store: Optional[FeatureStore] = None

    def __init__(
        self,
        name: str,
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        images_root: Optional[str],
        task_tag: Optional[str] = None,
        prompts: Optional[Sequence[str]] = None,
        read_images: bool = True,
        image_last: bool = False,
    ) -> None:
        self.name = name
        self.read_images = read_images
        self.image_last = bool(image_last)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.images_root = images_root
        self.task_tag = task_tag or None
        self.prompts = list(prompts or [])
        self.records: List[Dict[str, Any]] = []
        # {dataset, path, index, error} of each annotation entry add_records left out as malformed
        self.malformed_records: List[Dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.records)

    def add_records(
        self, path: str, entries: Iterable[Any], parse: Callable[[int, Any], Union[Dict[str, Any], List[Dict[str, Any]]]]
    ) -> int:
        """Append ``parse(index, entry)`` (one record or a list of them) for every entry of ``path``.

        An entry ``parse`` rejects with :class:`DatasetError` (or with ``TypeError``/``KeyError``/
        ``AttributeError``, a field of a type it did not expect: kind ``wrong_type``) is malformed: it is logged, kept in
        ``malformed_records`` (which the training run counts against ``run.max_skip_rate``) and
        left out, so one bad line does not stop a run. A file that yields no record at all while
        some of its entries are malformed is an error (its first malformed entry's): that is a
        wrong file or format, not bad data. ``parse`` may return ``[]`` for an entry it does not
        want (another split's). Returns the number of records added.
        """
        added = bad = 0
        first: Optional[DatasetError] = None
        for index, entry in enumerate(entries):
            try:
                try:
                    parsed = parse(index, entry)
                except (TypeError, KeyError, AttributeError) as exc:  # a field of a type the parser did not expect
                    raise DatasetError(
                        f"dataset {self.name!r}: entry {index} of {path} has a field of the wrong type "
                        f"({type(exc).__name__}: {exc}): {entry!r:.200}", kind="wrong_type",
                    ) from exc
            except DatasetError as exc:
                bad += 1
                first = first or exc
                # a parser that names no kind rejected the entry's fields: wrong_type
                kind = "wrong_type" if exc.kind == DatasetError.default_kind else exc.kind
                self.malformed_records.append(
                    {"dataset": self.name, "path": path, "index": index, "kind": kind, "error": str(exc)}
                )
                logger.warning("skipped malformed annotation record: %s", exc)
                continue
            parsed = parsed if isinstance(parsed, list) else [parsed]
            self.records.extend(parsed)
            added += len(parsed)
        if bad and not added:
            raise first
        return added

    def add_json_lists(self, ann_paths: Sequence[str]) -> None:
        """:meth:`add_records` of each of ``ann_paths`` (a JSON list), entry by entry through ``self._parse(path, i, entry)``."""
        for path in ann_paths:
            self.add_records(path, load_json_list(path, self.name), partial(self._parse, path))

    def sample_id(self, key: Any) -> str:
        return f"{self.name}:{key}"

    def text(self, text: str) -> str:
        return self.text_processor(text) if self.text_processor is not None else " ".join(text.split())

    # the media slot a sample's instruction starts with (a video dataset: the video placeholder)
    placeholder = IMAGE_PLACEHOLDER

    # true: the media placeholder goes after the task tag and the text (the question, then the image, so
    # the image tokens can read the question); readers set it from their config's image_last, readers
    # that skip their parent's __init__ (refvg) keep this default, MiniGPT-v2's image-first order
    image_last: bool = False

    def instruction(self, text: str, task_tag: Optional[str] = None) -> str:
        """``text`` behind the media placeholder (if media are read) and the task tag; with
        ``image_last`` the placeholder follows the text instead, so the image tokens can read it."""
        tag = self.task_tag if task_tag is None else task_tag
        if self.image_last and self.read_images:
            return f"{make_instruction(text, tag, with_image=False)} {self.placeholder}"
        return make_instruction(text, tag, self.read_images, self.placeholder)

    @property
    def limits(self) -> ReadLimits:
        """The read limits in force: the builder's, else the defaults of ``configs/datasets/read_limits.yaml``."""
        return self.read_limits or default_read_limits()

    def image_path(self, rel_path: str, sample_id: str) -> str:
        """``rel_path`` (from an annotation) under ``images_root``; ``outside_data_root`` when it leaves it."""
        if not isinstance(rel_path, str):
            raise DatasetError(
                f"dataset {self.name!r}, sample {sample_id!r}: image path {rel_path!r:.100} is not text",
                kind="wrong_type", sample_id=sample_id,
            )
        return contained_path(self.images_root, rel_path, self.limits, self.name, sample_id)

    def open_image(self, path: str, sample_id: str):
        """The image file at ``path`` decoded within this dataset's read limits (unprocessed)."""
        return open_image(path, self.name, sample_id, self.limits)

    def load_image(self, rel_path: str, sample_id: str):
        """The processed image at ``images_root/rel_path`` (``None`` when images are not read)."""
        if not self.read_images:
            return None
        path = self.image_path(rel_path, sample_id)
        if self.feature_store is not None:
            return self.stored_features(path, sample_id)
        if self.image_source is not None:
            return self.image_source(path, lambda: self.process_image(self.open_image(path, sample_id)))
        return self.process_image(self.open_image(path, sample_id))

    def media_id(self, path: str) -> str:
        """The media id of the file at ``path``: its path under this dataset's media root (feature stores' key)."""
        return media_id(path, self.images_root)

    def stored_features(self, path: str, sample_id: str):
        """The stored features of the media file at ``path`` (``feature_store`` set); an error naming the sample if absent."""
        return self.feature_store.lookup(self.media_id(path), self.name, sample_id)

    def read_video(self, path: str, sample_id: str):
        """The video at ``path`` as the dataset's video processor makes it, or its stored features.

        The byte cap and the header's frame size are checked before the decoder allocates anything; a
        processor's error gets the dataset and sample in front.
        """
        if self.feature_store is not None:
            return self.stored_features(path, sample_id)
        from minigpt.common.video_files import check_video_file

        check_video_file(path, self.limits, self.name, sample_id)
        try:
            return self.vis_processor(path)
        except DatasetError as exc:  # the processor names the path; add the dataset and sample
            raise exc.prefixed(f"dataset {self.name!r}, sample {sample_id!r}") from exc

    def process_image(self, image):
        return self.vis_processor(image) if self.vis_processor is not None else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, samples={len(self)}, images_root={self.images_root!r})"
