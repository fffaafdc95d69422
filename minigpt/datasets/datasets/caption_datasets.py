"""Caption readers: COCO Karpathy JSON, the CC-SBU-Align JSON and webdataset tar shards.

A caption sample's instruction is the image placeholder, the task tag (if the builder sets one)
and a prompt drawn deterministically per sample from the prompt file; its answer is the
processed caption.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import webdataset as wds
from torch.utils.data import IterableDataset
from webdataset.tariterators import group_by_keys, tar_file_expander

from minigpt.common.io import (
    IMAGE_EXTENSIONS,
    DatasetError,
    MissingDataError,
    decode_image,
    load_json,
    path_manager,
)
from minigpt.common.sample_rng import seeded_sample
from minigpt.datasets.datasets.base_dataset import (
    READ_STATS_KEY,
    BaseDataset,
    Processor,
    check_placeholders,
    load_json_list,
    make_instruction,
    pick,
    require_keys,
    skip_record,
)

logger = logging.getLogger(__name__)


class CaptionDataset(BaseDataset):
    """Map-style caption reader over ``self.records`` of ``{"image", "captions", "key"}``.

    In eval mode a sample also carries ``"captions"`` (all references, unprocessed) and
    ``"image_id"``, and its answer is the first caption.
    """

    task = "caption"

    def __init__(self, *args: Any, eval_mode: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_mode = eval_mode

    def __getitem__(self, index: int) -> Dict[str, Any]:
        record = self.records[index]
        sample_id = self.sample_id(record["key"])
        prompt = pick(self.prompts, index) if self.prompts else ""
        sample = {
            "image": self.load_image(record["image"], sample_id),
            "instruction_input": self.instruction(prompt),
            "answer": self.text(record["captions"][0]),
            "sample_id": sample_id,
            "task": self.task,
        }
        if self.eval_mode:
            sample["captions"] = list(record["captions"])
            sample["image_id"] = record["image_id"]
        return sample


class COCOCaptionDataset(CaptionDataset):
    """COCO Karpathy captions in LAVIS's JSON: a list of ``{"image", "caption", "image_id"}``.

    Training files hold one caption per entry (a list of captions is split into one sample
    each); in eval mode (``coco_karpathy_test.json``) one sample per entry keeps every caption.
    """

    def __init__(
        self, name: str, ann_paths: Sequence[str], *args: Any, eval_mode: bool = False, **kwargs: Any
    ):
        super().__init__(name, *args, eval_mode=eval_mode, **kwargs)
        for path in ann_paths:
            self.add_records(path, load_json_list(path, name), lambda i, e, p=path: self._parse(p, i, e))

    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        require_keys(entry, ("image", "caption"), self.name, path, i)
        captions = [entry["caption"]] if isinstance(entry["caption"], str) else entry["caption"]
        texts = isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions)
        if not texts or not isinstance(entry["image"], str):
            raise DatasetError(f"dataset {self.name!r}: entry {i} of {path} needs an image path and caption text: "
                               f"{entry!r:.200}", kind="wrong_type")
        image_id = entry.get("image_id", entry["image"])
        if self.eval_mode:
            return [{"image": entry["image"], "captions": captions, "key": image_id, "image_id": image_id}]
        n = len(self.records)  # the key numbers the training records
        return [{"image": entry["image"], "captions": [c], "key": f"{image_id}#{n + k}", "image_id": image_id}
                for k, c in enumerate(captions)]


class CCSBUAlignDataset(CaptionDataset):
    """MiniGPT-4's cc_sbu_align: ``{"annotations": [{"image_id", "caption"}]}``, images at ``{image_id}.jpg``."""

    def __init__(
        self, name: str, ann_paths: Sequence[str], *args: Any, eval_mode: bool = False, **kwargs: Any
    ):
        super().__init__(name, *args, eval_mode=eval_mode, **kwargs)
        for path in ann_paths:
            data = load_json(path, name)
            if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
                raise DatasetError(f'dataset {name!r}: {path} must hold {{"annotations": [...]}}')
            self.add_records(path, data["annotations"], lambda i, e, p=path: self._parse(p, i, e))

    def _parse(self, path: str, i: int, entry: Any) -> Dict[str, Any]:
        require_keys(entry, ("image_id", "caption"), self.name, path, i)
        if not isinstance(entry["caption"], str) or not isinstance(entry["image_id"], (str, int)):
            raise DatasetError(f"dataset {self.name!r}: entry {i} of {path} needs an image_id and caption text: "
                               f"{entry!r:.200}", kind="wrong_type")
        image_id = str(entry["image_id"])
        return {"image": f"{image_id}.jpg", "captions": [entry["caption"]], "key": image_id, "image_id": image_id}


class TextCapsDataset(CaptionDataset):
    """TextCaps (``TextCaps_0.1_{train,val}.json``): ``{"data": [{"image_id", "caption_str", ...}]}``.

    Each ``data`` entry is one caption of one image; the image is ``{image_id}.jpg`` in the
    image root (TextVQA's ``train_images/``, which holds TextCaps' train and val images). Training
    gives one sample per entry, keyed ``{image_id}#{caption_id}``. In eval mode one sample per
    image keeps every reference: the entry's ``reference_strs`` when present, else the
    ``caption_str`` of every entry of that image. An entry without ``caption_str`` (all of the
    caption-free test file) is malformed: there is nothing to train on or score against.
    """

    def __init__(
        self, name: str, ann_paths: Sequence[str], *args: Any, eval_mode: bool = False, **kwargs: Any
    ):
        super().__init__(name, *args, eval_mode=eval_mode, **kwargs)
        self._by_image: Dict[str, Dict[str, Any]] = {}
        for path in ann_paths:
            data = load_json(path, name)
            if not isinstance(data, dict) or not isinstance(data.get("data"), list):
                raise DatasetError(f'dataset {name!r}: {path} must hold TextCaps\' {{"data": [...]}}')
            self.add_records(path, data["data"], lambda i, entry, path=path: self._parse(path, i, entry))
        del self._by_image
        for record in self.records:
            record.pop("from_references", None)

    def _parse(self, path: str, i: int, entry: Any) -> List[Dict[str, Any]]:
        require_keys(entry, ("image_id", "caption_str"), self.name, path, i)
        caption = entry["caption_str"]
        if not isinstance(caption, str) or not caption.strip():
            raise DatasetError(
                f"dataset {self.name!r}: entry {i} (image_id {entry['image_id']!r}) of {path} has no "
                f"caption text: {caption!r:.200}"
            )
        image_id = str(entry["image_id"])
        if not self.eval_mode:
            key = f"{image_id}#{entry.get('caption_id', i)}"
            return [{"image": f"{image_id}.jpg", "captions": [caption], "key": key, "image_id": image_id}]
        record = self._by_image.get(image_id)
        if record is not None:  # a further caption of an image already read
            if not record["from_references"]:
                record["captions"].append(caption)
            return []
        references = entry.get("reference_strs")
        from_references = isinstance(references, list) and bool(references)
        record = {
            "image": f"{image_id}.jpg",
            "captions": [str(r) for r in references] if from_references else [caption],
            "key": image_id,
            "image_id": image_id,
            "from_references": from_references,
        }
        self._by_image[image_id] = record
        return [record]


def _caption_of(sample: Dict[str, Any], name: str, sample_id: str, url: str) -> str:
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError as exc:
            raise DatasetError(
                f"dataset {name!r}, sample {sample_id!r}: bad JSON in shard {url}: {exc}",
                kind="bad_text_encoding" if isinstance(exc, UnicodeDecodeError) else "decode_error",
                path=url, sample_id=sample_id,
            ) from exc
        caption = meta.get("caption") if isinstance(meta, dict) else None
        if isinstance(caption, str):
            return caption
    if "txt" in sample:
        try:
            return sample["txt"].decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"dataset {name!r}, sample {sample_id!r}: .txt caption in shard {url}"
            raise DatasetError(f"{where} is not UTF-8: {exc}", "bad_text_encoding", url, sample_id) from exc
    raise DatasetError(
        f'dataset {name!r}, sample {sample_id!r}: no caption (neither .json "caption" nor .txt) in shard {url}',
        kind="wrong_type", path=url, sample_id=sample_id,
    )


class CaptionWebDataset(IterableDataset):
    """Image-caption pairs from webdataset tar shards (LAION, CC3M/CC12M, SBU as MiniGPT-4 packs them).

    Each shard holds ``KEY.jpg`` and ``KEY.json`` (``{"caption": ...}``; ``KEY.txt`` is the
    fallback). Shards are split across distributed ranks (``wds.split_by_node``) and then
    across dataloader workers (as ``wds.split_by_worker`` does, by a worker id that
    :meth:`resume_from` may rotate). For training (``repeat=True``) the
    shard order is reshuffled every epoch with the same seed on every rank (so the rank split
    is a partition), samples pass a shuffle buffer of ``shuffle_buffer``, and the stream never
    ends; otherwise the shards are read once, in order.

    Bad data (a copy made by :meth:`with_skipping`, which training uses): a sample that cannot
    be read (corrupt image, malformed ``.json``, a member missing) is logged and replaced by the
    next sample of the stream; a shard that is missing or truncated/corrupt is logged and the
    stream goes on with the next shard. Each skip is counted in the read report
    (``READ_STATS_KEY``) of the next sample yielded, along with the stream's position
    ``(worker, epoch, position)``, from which :meth:`resume_from` continues a stream exactly.
    Each sample is processed inside :func:`~minigpt.common.sample_rng.seeded_sample` keyed by
    that position (and the rank), so its random crop is the same in a resumed run.
    Without skipping, each of these raises :class:`DatasetError` naming the dataset and path.
    """

    task = "caption"
    # set on a copy by the training data path (minigpt.datasets.image_source): to_sample hands it
    # "<shard>#<member>" and a read() callable, so cached or scanned images are never decoded
    image_source = None
    read_limits = None  # the dataset config's read_limits (set by the builder); None: the YAML defaults

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        vis_processor: Optional[Processor],
        text_processor: Optional[Processor],
        task_tag: Optional[str] = None,
        prompts: Optional[Sequence[str]] = None,
        repeat: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        eval_mode: bool = False,
        read_images: bool = True,
    ) -> None:
        super().__init__()
        self.read_images = read_images
        if not urls:
            raise MissingDataError(f"dataset {name!r}: no tar shards")
        self.name = name
        self.urls = list(urls)
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.task_tag = task_tag or None
        self.prompts = list(prompts or [])
        self.repeat = repeat
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.eval_mode = eval_mode
        self.skip_bad = False
        self.stats_name = name
        # with stats_name, rank, logical worker, epoch and position: the key of a sample's random processing
        self.sample_seed = self.seed
        # logical worker -> (epoch, position) to continue from, and the logical id of physical worker 0
        self.start_positions: Dict[int, Tuple[int, int]] = {}
        self.worker_rotation = 0
        # in-process only (no DataLoader workers): every skip record is also appended here
        self.skip_log: Optional[List[Dict[str, Any]]] = None

    def with_skipping(self, name: Optional[str] = None, seed: Optional[int] = None) -> "CaptionWebDataset":
        """A copy that skips unreadable samples and shards and reports them (see the class notes).

        ``seed`` (the training run's, per dataset) keys each sample's processor randomness, with
        the name and the stream position; ``None`` keeps ``shuffle_seed``.
        """
        other = copy.copy(self)
        other.skip_bad = True
        other.stats_name = str(name or self.name)
        if seed is not None:
            other.sample_seed = int(seed)
        other.start_positions = dict(self.start_positions)
        return other

    def resume_from(self, positions: Mapping[int, Sequence[int]], next_worker: int = 0) -> None:
        """Continue each stream worker after the ``(epoch, position)`` it had reached.

        ``positions`` maps a logical worker id to the furthest ``(epoch, position)`` its samples
        reached; ``next_worker`` is the logical worker whose batch was due next, which becomes
        DataLoader worker 0 (the DataLoader takes batches from its workers in turn, starting at 0).
        The samples before a position are read from the shards again but not decoded.
        """
        self.start_positions = {int(w): (int(p[0]), int(p[1])) for w, p in positions.items()}
        self.worker_rotation = int(next_worker)

    def _skip(self, pending: List[Dict[str, Any]], error: Exception, sample_id: Optional[str] = None) -> None:
        record = skip_record(self.stats_name, error, sample_id)
        pending.append(record)
        if self.skip_log is not None:
            self.skip_log.append(record)
        # the training loop logs the skip as a warning when the batch arrives (from any worker process)
        logger.debug("skipped unreadable data (the stream goes on with the next sample): %s", error)

    def _raw_samples(self, urls: Sequence[str], pending: List[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        state: Dict[str, Any] = {"url": None, "failed": set()}

        def opened() -> Iterator[Dict[str, Any]]:
            for url in urls:
                state["url"] = url
                try:
                    stream = path_manager.open(url, "rb")
                except OSError as exc:
                    missing = isinstance(exc, FileNotFoundError)
                    error = (MissingDataError if missing else DatasetError)(
                        f"dataset {self.name!r}: shard {'not found' if missing else 'unreadable'}: {url}"
                        + ("" if missing else f" ({exc})"),
                        path=url,
                    )
                    if not self.skip_bad:
                        raise error from exc
                    self._skip(pending, error)
                    continue
                try:
                    yield {"url": url, "stream": stream}
                finally:
                    stream.close()

        def on_tar_error(exc: Exception) -> bool:
            # webdataset's handler protocol: True goes on. A truncated shard fails once on the member
            # being read and again on the next header; the shard is counted once.
            url = state["url"]
            # webdataset appends " @ <stream object>" to the message; the url says it better
            reason = str(exc.args[0] if exc.args else exc).split(" @ <")[0]
            error = DatasetError(
                f"dataset {self.name!r}: shard {url} is truncated or corrupt ({reason}); the rest of it is skipped",
                kind="decode_error", path=url,
            )
            if not self.skip_bad:
                raise error from exc
            if url not in state["failed"]:
                state["failed"].add(url)
                self._skip(pending, error)
            return True

        return group_by_keys(tar_file_expander(opened(), handler=on_tar_error), handler=on_tar_error)

    def to_sample(self, raw: Dict[str, Any]) -> Dict[str, Any]:
        """A schema sample from one grouped tar sample (``__key__``, ``__url__``, ``jpg``, ``json``...)."""
        key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
        sample_id = f"{self.name}:{key}"
        image = None
        if self.read_images:
            ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
            if ext is None:
                members = sorted(k for k in raw if not k.startswith("__"))
                raise DatasetError(
                    f"dataset {self.name!r}, sample {sample_id!r}: no image member "
                    f"({'/'.join(IMAGE_EXTENSIONS)}) in shard {url}; members: {members}", "missing_file", url, sample_id
                )

            def read():
                image = decode_image(raw[ext], f"{url}:{key}.{ext}", self.name, sample_id, self.read_limits)
                return self.vis_processor(image) if self.vis_processor is not None else image

            image = self.image_source(f"{url}#{key}.{ext}", read) if self.image_source is not None else read()
        caption = _caption_of(raw, self.name, sample_id, url)
        prompt = pick(self.prompts, sample_id) if self.prompts else ""
        answer = (
            self.text_processor(caption) if self.text_processor is not None else " ".join(caption.split())
        )
        sample = {
            "image": image,
            "instruction_input": make_instruction(prompt, self.task_tag, self.read_images),
            "answer": answer,
            "sample_id": sample_id,
            "task": self.task,
        }
        if self.eval_mode:
            sample["captions"] = [caption]
            sample["image_id"] = key
        check_placeholders(sample, self.name)
        return sample

    def _my_urls(self, epoch: int, worker: int, workers: int) -> List[str]:
        urls = list(self.urls)
        if self.repeat:
            random.Random(self.seed * 100_003 + epoch).shuffle(urls)
        # wds.split_by_worker's slicing, by the logical worker id (see resume_from)
        return list(wds.split_by_node(urls))[worker::workers]

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        rank, world, physical, workers = wds.utils.pytorch_worker_info()
        worker = (physical + self.worker_rotation) % workers
        epoch, resume_at = self.start_positions.get(worker, (0, 0))
        pending: List[Dict[str, Any]] = []
        while True:
            urls = self._my_urls(epoch, worker, workers)
            if not urls:
                if not self.repeat:
                    return  # nothing left for this worker in a single pass: an empty share is fine
                raise DatasetError(
                    f"dataset {self.name!r}: {len(self.urls)} shard(s) cannot feed rank {rank}/{world}, "
                    f"worker {worker}/{workers}; use at least world_size * num_workers shards"
                )
            raw = self._raw_samples(urls, pending)
            if self.repeat and self.shuffle_buffer > 1:
                rng = random.Random(f"{self.seed}:{rank}:{worker}:{epoch}")
                raw = wds.shuffle(
                    bufsize=self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng
                )(raw)
            position = good = 0
            for item in raw:
                position += 1
                if position <= resume_at:  # replaying up to a checkpointed position: read, not decoded
                    continue
                try:
                    # the same crop for the same stream position, whichever worker process reads it
                    with seeded_sample(self.sample_seed, self.stats_name, rank, worker, epoch, position):
                        sample = self.to_sample(item)
                except DatasetError as exc:
                    if not self.skip_bad:
                        raise
                    self._skip(pending, exc, f"{self.name}:{item.get('__key__', '?')}")
                    continue
                good += 1
                if self.skip_bad:
                    sample[READ_STATS_KEY] = {
                        "dataset": self.stats_name,
                        "skipped": list(pending),
                        "stream": (worker, epoch, position),
                    }
                    pending.clear()
                yield sample
            if not self.repeat:
                return
            if position == 0:  # repeating an empty pass would spin forever without yielding
                raise DatasetError(f"dataset {self.name!r}: shards {urls} hold no samples")
            if good == 0 and resume_at == 0:
                last = pending[-1]["error"] if pending else "?"
                raise DatasetError(
                    f"dataset {self.name!r}: no readable sample in a whole pass over shards {urls}; last error: {last}"
                )
            resume_at = 0
            epoch += 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shards={len(self.urls)}, repeat={self.repeat})"
