"""Bad samples in training: skipped, counted by kind, logged with their sample and path, and a rate that stops a run.

A reader raises :class:`~minigpt.common.io.DatasetError` for a sample it cannot read; the error's
``kind`` (one of :data:`~minigpt.common.io.SKIP_KINDS`: ``decode_error``, ``too_large``, ``bad_box``,
``placeholder_in_text``, ...) says what was wrong. :func:`skip_bad_samples` makes a training dataset
replace such samples deterministically (:class:`SkippingDataset` for map-style readers; streams that
support it skip to the next sample); each replacement becomes a :func:`skip_record` that travels with
the batch, is logged, and is counted per dataset and kind by :class:`SkipTracker`, which stops the
run once a dataset's skip rate passes ``run.max_skip_rate``.

READ_STATS_KEY: key of the read report a skipping dataset attaches to every sample it returns.
Its value is ``{"dataset": name, "skipped": [skip records], "stream": (worker, epoch, position)}``
(``stream`` only from streaming readers). :func:`minigpt.datasets.collate.collate_samples` pops
it from the samples and sums it into the batch's ``"data_stats"``, which is how the counts made
in DataLoader worker processes reach the training loop.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from torch.utils.data import Dataset, IterableDataset

from minigpt.common.constants import IMAGE_SPECIAL_TOKENS, READ_STATS_KEY, VIDEO_TOKEN
from minigpt.common.io import DatasetError, SkipRateExceeded
from minigpt.common.sample_rng import seeded_sample
from minigpt.common.t2i import image_spans as spans_of

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 20


def skip_record(dataset: str, error: Any, sample_id: Optional[str] = None) -> Dict[str, Any]:
    """One skipped read, as plain data (it travels from worker processes with the batch).

    ``{"dataset", "kind", "sample_id", "path", "error"}``: kind, sample and path come from a
    :class:`DatasetError` when it carries them (``sample_id`` given here wins), else ``unreadable``
    and ``None``.
    """
    return {
        "dataset": dataset,
        "kind": getattr(error, "kind", "unreadable"),
        "sample_id": sample_id or getattr(error, "sample_id", None),
        "path": getattr(error, "path", None),
        "error": str(error),
    }


def check_placeholders(sample: Mapping[str, Any], dataset: str, slots_in_answers: bool = False,
                       image_spans: bool = False) -> None:
    """Raise ``placeholder_in_text`` when a sample's text holds image-slot tokens the reader did not put there.

    A reader writes one media placeholder into the instruction of a sample with an image or video and
    none into its answers; annotation text carrying ``<ImageHere>``, ``<VideoHere>`` (or ``<Img>``/``</Img>``) would give
    the model more image slots than images, which it refuses mid-step. Two kinds of reader write
    more, and say so with class attributes the skipping wrapper passes on: an interleaved reader
    (``slots_in_answers``, MMC4) puts one placeholder per image anywhere in its text, so each token
    may occur as often as the sample has images; a reader that writes images as their descriptions
    (``image_spans``, PhotoChat) puts ``<Img>description</Img>`` spans in answers, which hold no slot.
    """
    def texts(value: Any) -> List[str]:
        return [value] if isinstance(value, str) else [v for v in value or () if isinstance(v, str)]

    instructions, answers = texts(sample.get("instruction_input")), texts(sample.get("answer"))
    if image_spans:  # drop the description spans the reader wrote; a slot left inside one still counts
        answers = ["".join(_outside_spans(a)) for a in answers]
    image = sample.get("image")
    n_media = 0 if image is None else len(image) if isinstance(image, (list, tuple)) else 1
    allowed = 0 if image is None else 1
    for token in (*IMAGE_SPECIAL_TOKENS, VIDEO_TOKEN):
        in_instructions, in_answers = sum(t.count(token) for t in instructions), sum(a.count(token) for a in answers)
        too_many = (in_instructions + in_answers > n_media) if slots_in_answers else (
            in_instructions > allowed or in_answers > 0
        )
        if too_many:
            sample_id = sample.get("sample_id")
            raise DatasetError(
                f"dataset {dataset!r}, sample {sample_id!r}: the annotation text holds {token!r}, which only the "
                "reader may write (the image placeholder); remove it from the annotation",
                kind="placeholder_in_text", sample_id=sample_id,
            )


def _outside_spans(text: str) -> List[str]:
    """The pieces of ``text`` outside its ``<Img>description</Img>`` spans."""
    pieces, at = [], 0
    for span in spans_of(text):
        pieces.append(text[at : span.start])
        at = span.end
    return pieces + [text[at:]]


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
    ``dataset[i]`` raises :class:`DatasetError` (missing, oversized or corrupt image or video, a
    bad box, a placeholder in the text; see :data:`~minigpt.common.io.SKIP_KINDS`) the error, which
    names the dataset, sample and path, is recorded with its kind and
    ``dataset[replacement_index(seed, i, attempt, len)]`` is read instead, so a batch keeps its
    size and a rerun sees the same samples. Every returned sample carries :data:`READ_STATS_KEY`
    with the reads it replaced (the training loader logs them in the main process, whichever
    worker read them). ``max_attempts`` unreadable replacements in a row mean the
    dataset is unreadable as a whole (a wrong image root, say): that raises.

    Randomness: the key may be ``(epoch, index)`` (the training loader's samplers hand those out)
    or a plain index (epoch 0). Each read runs inside
    :func:`~minigpt.common.sample_rng.seeded_sample` keyed by ``(seed, name, epoch, index,
    attempt)``, so a random crop depends on the sample and epoch alone, not on the DataLoader
    worker that read it or on what that worker read before; the caller's RNG is left as it was.
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

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, Any]:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))
        skipped: List[Dict[str, Any]] = []
        candidate = index
        for attempt in range(self.max_attempts + 1):
            try:
                with seeded_sample(self.seed, self.name, epoch, index, attempt):
                    sample = self.dataset[candidate]
                if isinstance(sample, Mapping):
                    check_placeholders(sample, self.name, getattr(self.dataset, "slots_in_answers", False),
                                       getattr(self.dataset, "image_spans_in_answers", False))
            except DatasetError as exc:
                skipped.append(skip_record(self.name, exc, exc.sample_id or f"{self.name}:#{candidate}"))
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

    A stream that supports it (a ``with_skipping(name, seed)`` method, as the webdataset reader
    has) returns a skipping copy of itself, seeding each sample's processors from ``seed`` and its
    stream position; a stream without it is returned unchanged, with a warning,
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
        return enable(name, seed)
    return SkippingDataset(dataset, name, seed)


class SkipTracker:
    """Per-dataset counts of samples delivered and reads skipped; stops the run past a skip rate.

    ``add(name, samples, skipped, kinds=...)`` adds a batch's counts (``skipped`` reads were
    replaced to deliver ``samples``; ``kinds`` splits them by :data:`SKIP_KINDS`). ``check()`` raises :class:`SkipRateExceeded` for the first dataset with
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
        # per dataset: skipped reads and dropped annotation records by kind
        self.skipped_kinds: Dict[str, Counter] = {}
        self.malformed_kinds: Dict[str, Counter] = {}
        for name in names:
            self._entry(name)

    def _entry(self, name: str) -> Dict[str, int]:
        return self.counts.setdefault(str(name), {"samples": 0, "skipped": 0, "records": 0, "malformed": 0})

    def add(
        self,
        name: str,
        samples: int = 0,
        skipped: int = 0,
        last_error: Optional[str] = None,
        kinds: Optional[Mapping[str, int]] = None,
    ) -> None:
        entry = self._entry(name)
        entry["samples"] += int(samples)
        entry["skipped"] += int(skipped)
        counter = self.skipped_kinds.setdefault(str(name), Counter())
        for kind, n in (kinds or {}).items():
            if int(n):
                counter[str(kind)] += int(n)
        if last_error:
            self.last_error[str(name)] = last_error

    def set_records(self, name: str, records: int, malformed: Sequence[Mapping[str, Any]]) -> None:
        """Note a map-style dataset's record count and the malformed entries its reader dropped."""
        entry = self._entry(name)
        entry["records"], entry["malformed"] = int(records), len(malformed)
        self.malformed_kinds[str(name)] = Counter(str(m.get("kind", "unreadable")) for m in malformed)
        if malformed:
            self.last_error.setdefault(str(name), str(malformed[0].get("error")))

    def total_skipped(self) -> int:
        return sum(c["skipped"] for c in self.counts.values())

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """``{dataset: {samples, skipped, skip_rate[, skipped_by_kind][, malformed_records, malformed_by_kind]}}``.

        The end-of-run report; the ``*_by_kind`` maps (kinds of :data:`SKIP_KINDS`, sorted) appear
        when there is something to count.
        """
        out: Dict[str, Dict[str, Any]] = {}
        for name, c in self.counts.items():
            reads = c["samples"] + c["skipped"]
            row: Dict[str, Any] = {
                "samples": c["samples"],
                "skipped": c["skipped"],
                "skip_rate": round(c["skipped"] / reads, 4) if reads else 0.0,
            }
            if self.skipped_kinds.get(name):
                row["skipped_by_kind"] = dict(sorted(self.skipped_kinds[name].items()))
            if c["malformed"]:
                row["malformed_records"] = c["malformed"]
                row["malformed_by_kind"] = dict(sorted(self.malformed_kinds.get(name, Counter()).items()))
            out[name] = row
        return out

    def check(self) -> None:
        if self.max_rate is None or self.max_rate >= 1.0:
            return
        for name, c in self.counts.items():
            reads = c["samples"] + c["skipped"]
            last = self.last_error.get(name, "")
            if reads >= self.min_reads and c["skipped"] > self.max_rate * reads:
                kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.skipped_kinds.get(name, {}).items()))
                raise SkipRateExceeded(
                    f"dataset {name!r}: {c['skipped']} of {reads} reads were unreadable and skipped "
                    f"({c['skipped'] / reads:.1%}{'; ' + kinds if kinds else ''}), more than run.max_skip_rate={self.max_rate:g} "
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
        return {
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "last_error": dict(self.last_error),
            "skipped_kinds": {k: dict(v) for k, v in self.skipped_kinds.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, c in (state.get("counts") or {}).items():
            entry = self._entry(name)
            entry["samples"], entry["skipped"] = int(c.get("samples", 0)), int(c.get("skipped", 0))
        self.last_error.update(state.get("last_error") or {})
        for name, kinds in (state.get("skipped_kinds") or {}).items():
            self.skipped_kinds[str(name)] = Counter({str(k): int(n) for k, n in kinds.items()})
