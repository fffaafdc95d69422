"""What every dataset reader shares: the sample schema, instruction text, prompts and boxes.

Every reader yields one dict per sample::

    {"image": FloatTensor[3, H, W] | None, "instruction_input": str | list[str],
     "answer": str | list[str], "sample_id": "<dataset>:<id>", "task": "caption" | "vqa" | ...}

plus task-specific evaluation keys documented on each reader. Instructions follow MiniGPT-v2:
the image placeholder, then the task tag (if any), then the text.

Bad data: a reader raises :class:`DatasetError` for a sample it cannot read (never returns
``None``). For training, :func:`skip_bad_samples` makes a dataset replace such samples
deterministically instead (:class:`SkippingDataset` for map-style readers; streams that support it
skip to the next sample), each replacement is logged and counted, and :class:`SkipTracker` stops
the run once a dataset's skip rate passes ``run.max_skip_rate``.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from torch.utils.data import Dataset, IterableDataset

from minigpt.common import grounding
from minigpt.common.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN, READ_STATS_KEY
from minigpt.common.io import (
    DatasetError,
    SkipRateExceeded,
    load_json,
    open_image,
    read_text_lines,
    resolve_path,
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
        # {dataset, path, index, error} of each annotation entry add_records left out as malformed
        self.malformed_records: List[Dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.records)

    def add_records(
        self, path: str, entries: Iterable[Any], parse: Callable[[int, Any], Union[Dict[str, Any], List[Dict[str, Any]]]]
    ) -> int:
        """Append ``parse(index, entry)`` (one record or a list of them) for every entry of ``path``.

        An entry ``parse`` rejects with :class:`DatasetError` is malformed: it is logged, kept in
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
                parsed = parse(index, entry)
            except DatasetError as exc:
                bad += 1
                first = first or exc
                self.malformed_records.append({"dataset": self.name, "path": path, "index": index, "error": str(exc)})
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

    def instruction(self, text: str, task_tag: Optional[str] = None) -> str:
        """``text`` behind the image placeholder (if images are read) and the task tag."""
        return make_instruction(text, self.task_tag if task_tag is None else task_tag, self.read_images)

    def load_image(self, rel_path: str, sample_id: str):
        """The processed image at ``images_root/rel_path`` (``None`` when images are not read)."""
        if not self.read_images:
            return None
        path = resolve_path(self.images_root, rel_path)
        if self.image_source is not None:
            return self.image_source(path, lambda: self.process_image(open_image(path, self.name, sample_id)))
        return self.process_image(open_image(path, self.name, sample_id))

    def process_image(self, image):
        return self.vis_processor(image) if self.vis_processor is not None else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, samples={len(self)}, images_root={self.images_root!r})"


# -- bad samples ---------------------------------------------------------------------------------
# READ_STATS_KEY: key of the read report a skipping dataset attaches to every sample it returns.
#
# Its value is ``{"dataset": name, "skipped": [skip records], "stream": (worker, epoch, position)}``
# (``stream`` only from streaming readers). :func:`minigpt.datasets.collate.collate_samples` pops
# it from the samples and sums it into the batch's ``"data_stats"``, which is how the counts made
# in DataLoader worker processes reach the training loop.
#

DEFAULT_MAX_ATTEMPTS = 20


def skip_record(dataset: str, error: Any, sample_id: Optional[str] = None) -> Dict[str, Any]:
    """One skipped read, as plain data (it travels from worker processes with the batch)."""
    return {"dataset": dataset, "sample_id": sample_id, "error": str(error)}


def replacement_index(seed: int, index: int, attempt: int, size: int) -> int:
    """The index read in place of unreadable ``index`` on replacement ``attempt`` (0, 1, ...).

    A function of its arguments only (seeded per index and attempt, never ``index`` itself when
    there is another), so a bad sample is replaced by the same one on every rank, worker and rerun.
    """
    if size <= 1:
        return 0
    j = random.Random(f"{seed}:{index}:{attempt}").randrange(size - 1)
    return j + 1 if j >= index else j


class SkippingDataset(Dataset):
    """A map-style dataset whose unreadable samples are replaced instead of stopping the run.

    Not registered; :func:`skip_bad_samples` wraps each training dataset in it. When
    ``dataset[i]`` raises :class:`DatasetError` (missing or corrupt image or video, malformed
    record) the error, which names the dataset, sample and path, is logged and
    ``dataset[replacement_index(seed, i, attempt, len)]`` is read instead, so a batch keeps its
    size and a rerun sees the same samples. Every returned sample carries :data:`READ_STATS_KEY`
    with the reads it replaced (the training loader logs them in the main process, whichever
    worker read them). ``max_attempts`` unreadable replacements in a row mean the
    dataset is unreadable as a whole (a wrong image root, say): that raises.
    """

    def __init__(
        self, dataset: Dataset, name: Optional[str] = None, seed: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> None:
        if isinstance(dataset, IterableDataset):
            raise TypeError("SkippingDataset wraps map-style datasets; streams skip bad samples themselves")
        self.dataset = dataset
        self.name = str(name or getattr(dataset, "name", type(dataset).__name__))
        self.seed = int(seed)
        self.max_attempts = int(max_attempts)

    @property
    def malformed_records(self) -> List[Dict[str, Any]]:
        return list(getattr(self.dataset, "malformed_records", []))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        skipped: List[Dict[str, Any]] = []
        candidate = index
        for attempt in range(self.max_attempts + 1):
            try:
                sample = self.dataset[candidate]
            except DatasetError as exc:
                skipped.append(skip_record(self.name, exc))
                nxt = replacement_index(self.seed, index, attempt, len(self.dataset))
                # the training loop logs the skip when the batch arrives (from any worker process)
                logger.debug("skipped unreadable sample (index %d, replaced by index %d): %s", candidate, nxt, exc)
                candidate = nxt
                continue
            if not isinstance(sample, Mapping):
                raise TypeError(
                    f"dataset {self.name!r}: index {candidate} returned {type(sample).__name__}, not a sample dict; "
                    "a reader that cannot read a sample must raise DatasetError"
                )
            sample = dict(sample)
            sample[READ_STATS_KEY] = {"dataset": self.name, "skipped": skipped}
            return sample
        raise DatasetError(
            f"dataset {self.name!r}: sample {index} and {self.max_attempts} replacements in a row were unreadable; "
            f"the dataset looks unreadable as a whole (check run.data_root and its build_info paths). "
            f"Last error: {skipped[-1]['error']}"
        )

    def __repr__(self) -> str:
        return f"SkippingDataset({self.dataset!r}, seed={self.seed})"


def skip_bad_samples(dataset: Dataset, name: Optional[str] = None, seed: int = 0) -> Dataset:
    """``dataset`` made to replace unreadable samples (see :class:`SkippingDataset`), for training.

    A stream that supports it (a ``with_skipping(name)`` method, as the webdataset reader has)
    returns a skipping copy of itself; a stream without it is returned unchanged, with a warning,
    and an unreadable sample in it stops the run.
    """
    if isinstance(dataset, SkippingDataset):
        return dataset
    if isinstance(dataset, IterableDataset):
        enable = getattr(dataset, "with_skipping", None)
        if enable is None:
            logger.warning(
                "dataset %s is a stream without bad-sample skipping: an unreadable sample in it stops the run",
                name or getattr(dataset, "name", type(dataset).__name__),
            )
            return dataset
        return enable(name)
    return SkippingDataset(dataset, name, seed)


class SkipTracker:
    """Per-dataset counts of samples delivered and reads skipped; stops the run past a skip rate.

    ``add(name, samples, skipped)`` adds a batch's counts (``skipped`` reads were replaced to
    deliver ``samples``). ``check()`` raises :class:`SkipRateExceeded` for the first dataset with
    at least ``min_reads`` reads (samples + skipped) of which more than ``max_rate`` were skipped,
    or whose malformed annotation records are more than ``max_rate`` of its records. ``max_rate``
    ``None`` (or 1) never stops.
    """

    def __init__(self, max_rate: Optional[float] = 0.1, min_reads: int = 200, names: Iterable[str] = ()) -> None:
        if max_rate is not None and not 0.0 <= float(max_rate) <= 1.0:
            raise ValueError(f"run.max_skip_rate must be between 0 and 1 (or null to never stop), got {max_rate!r}")
        if int(min_reads) < 1:
            raise ValueError(f"run.skip_rate_min_reads must be >= 1, got {min_reads!r}")
        self.max_rate = None if max_rate is None else float(max_rate)
        self.min_reads = int(min_reads)
        self.counts: Dict[str, Dict[str, int]] = {}
        self.last_error: Dict[str, str] = {}
        for name in names:
            self._entry(name)

    def _entry(self, name: str) -> Dict[str, int]:
        return self.counts.setdefault(str(name), {"samples": 0, "skipped": 0, "records": 0, "malformed": 0})

    def add(self, name: str, samples: int = 0, skipped: int = 0, last_error: Optional[str] = None) -> None:
        entry = self._entry(name)
        entry["samples"] += int(samples)
        entry["skipped"] += int(skipped)
        if last_error:
            self.last_error[str(name)] = last_error

    def set_records(self, name: str, records: int, malformed: Sequence[Mapping[str, Any]]) -> None:
        """Note a map-style dataset's record count and the malformed entries its reader dropped."""
        entry = self._entry(name)
        entry["records"], entry["malformed"] = int(records), len(malformed)
        if malformed:
            self.last_error.setdefault(str(name), str(malformed[0].get("error")))

    def total_skipped(self) -> int:
        return sum(c["skipped"] for c in self.counts.values())

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """``{dataset: {samples, skipped, skip_rate[, malformed_records]}}`` for the end-of-run report."""
        out: Dict[str, Dict[str, Any]] = {}
        for name, c in self.counts.items():
            reads = c["samples"] + c["skipped"]
            row: Dict[str, Any] = {
                "samples": c["samples"],
                "skipped": c["skipped"],
                "skip_rate": round(c["skipped"] / reads, 4) if reads else 0.0,
            }
            if c["malformed"]:
                row["malformed_records"] = c["malformed"]
            out[name] = row
        return out

    def check(self) -> None:
        if self.max_rate is None or self.max_rate >= 1.0:
            return
        for name, c in self.counts.items():
            reads = c["samples"] + c["skipped"]
            last = self.last_error.get(name, "")
            if reads >= self.min_reads and c["skipped"] > self.max_rate * reads:
                raise SkipRateExceeded(
                    f"dataset {name!r}: {c['skipped']} of {reads} reads were unreadable and skipped "
                    f"({c['skipped'] / reads:.1%}), more than run.max_skip_rate={self.max_rate:g} "
                    f"(applied once a dataset has run.skip_rate_min_reads={self.min_reads} reads). "
                    f"Last error: {last}. Find the bad files with `python -m minigpt.datasets check {name.split('/')[0]}`, "
                    "fix run.data_root / the dataset's build_info paths, or raise run.max_skip_rate"
                )
            total = c["records"] + c["malformed"]
            if total >= self.min_reads and c["malformed"] > self.max_rate * total:
                raise SkipRateExceeded(
                    f"dataset {name!r}: {c['malformed']} of {total} annotation records are malformed "
                    f"({c['malformed'] / total:.1%}), more than run.max_skip_rate={self.max_rate:g}. "
                    f"First: {last}"
                )

    def state_dict(self) -> Dict[str, Any]:
        return {"counts": {k: dict(v) for k, v in self.counts.items()}, "last_error": dict(self.last_error)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, c in (state.get("counts") or {}).items():
            entry = self._entry(name)
            entry["samples"], entry["skipped"] = int(c.get("samples", 0)), int(c.get("skipped", 0))
        self.last_error.update(state.get("last_error") or {})
