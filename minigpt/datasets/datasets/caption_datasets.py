"""Caption readers: COCO Karpathy JSON, the CC-SBU-Align JSON and webdataset tar shards.

A caption sample's instruction is the image placeholder, the task tag (if the builder sets one)
and a prompt drawn deterministically per sample from the prompt file; its answer is the
processed caption.
"""

from __future__ import annotations

import json
import random
from typing import Any, Dict, Iterator, List, Optional, Sequence

import webdataset as wds
from torch.utils.data import IterableDataset
from webdataset.tariterators import group_by_keys, tar_file_expander

from minigpt.datasets.datasets.base_dataset import (
    BaseDataset,
    Processor,
    load_json_list,
    make_instruction,
    pick,
    require_keys,
)
from minigpt.datasets.datasets.io import (
    IMAGE_EXTENSIONS,
    DatasetError,
    MissingDataError,
    decode_image,
    load_json,
    path_manager,
)


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
            for i, entry in enumerate(load_json_list(path, name)):
                require_keys(entry, ("image", "caption"), name, path, i)
                captions = entry["caption"]
                captions = [captions] if isinstance(captions, str) else list(captions)
                if not captions or not all(isinstance(c, str) for c in captions):
                    raise DatasetError(
                        f"dataset {name!r}: entry {i} of {path} has no caption text: {captions!r}"
                    )
                image_id = entry.get("image_id", entry["image"])
                if eval_mode:
                    self.records.append(
                        {"image": entry["image"], "captions": captions, "key": image_id, "image_id": image_id}
                    )
                else:
                    for caption in captions:
                        n = len(self.records)
                        self.records.append(
                            {
                                "image": entry["image"],
                                "captions": [caption],
                                "key": f"{image_id}#{n}",
                                "image_id": image_id,
                            }
                        )


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
            for i, entry in enumerate(data["annotations"]):
                require_keys(entry, ("image_id", "caption"), name, path, i)
                image_id = str(entry["image_id"])
                self.records.append(
                    {
                        "image": f"{image_id}.jpg",
                        "captions": [entry["caption"]],
                        "key": image_id,
                        "image_id": image_id,
                    }
                )


def _caption_of(sample: Dict[str, Any], name: str, sample_id: str, url: str) -> str:
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError as exc:
            raise DatasetError(
                f"dataset {name!r}, sample {sample_id!r}: bad JSON in shard {url}: {exc}"
            ) from exc
        caption = meta.get("caption") if isinstance(meta, dict) else None
        if isinstance(caption, str):
            return caption
    if "txt" in sample:
        return sample["txt"].decode("utf-8")
    raise DatasetError(
        f'dataset {name!r}, sample {sample_id!r}: no caption (neither .json "caption" nor .txt) in shard {url}'
    )


class CaptionWebDataset(IterableDataset):
    """Image-caption pairs from webdataset tar shards (LAION, CC3M/CC12M, SBU as MiniGPT-4 packs them).

    Each shard holds ``KEY.jpg`` and ``KEY.json`` (``{"caption": ...}``; ``KEY.txt`` is the
    fallback). Shards are split across distributed ranks (``wds.split_by_node``) and then
    across dataloader workers (``wds.split_by_worker``). For training (``repeat=True``) the
    shard order is reshuffled every epoch with the same seed on every rank (so the rank split
    is a partition), samples pass a shuffle buffer of ``shuffle_buffer``, and the stream never
    ends; otherwise the shards are read once, in order.
    """

    task = "caption"

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

    def _open(self, urls: Sequence[str]) -> Iterator[Dict[str, Any]]:
        for url in urls:
            try:
                stream = path_manager.open(url, "rb")
            except FileNotFoundError as exc:
                raise MissingDataError(f"dataset {self.name!r}: shard not found: {url}") from exc
            try:
                yield {"url": url, "stream": stream}
            finally:
                stream.close()

    def _raw_samples(self, urls: Sequence[str]) -> Iterator[Dict[str, Any]]:
        return group_by_keys(tar_file_expander(self._open(urls)))

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
                    f"({'/'.join(IMAGE_EXTENSIONS)}) in shard {url}; members: {members}"
                )
            image = decode_image(raw[ext], f"{url}:{key}.{ext}", self.name, sample_id)
            image = self.vis_processor(image) if self.vis_processor is not None else image
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
        return sample

    def _my_urls(self, epoch: int) -> List[str]:
        urls = list(self.urls)
        if self.repeat:
            random.Random(self.seed * 100_003 + epoch).shuffle(urls)
        return list(wds.split_by_worker(wds.split_by_node(urls)))

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        rank, world, worker, workers = wds.utils.pytorch_worker_info()
        epoch = 0
        while True:
            urls = self._my_urls(epoch)
            if not urls:
                if not self.repeat:
                    return  # nothing left for this worker in a single pass: an empty share is fine
                raise DatasetError(
                    f"dataset {self.name!r}: {len(self.urls)} shard(s) cannot feed rank {rank}/{world}, "
                    f"worker {worker}/{workers}; use at least world_size * num_workers shards"
                )
            raw = self._raw_samples(urls)
            if self.repeat and self.shuffle_buffer > 1:
                rng = random.Random(f"{self.seed}:{rank}:{worker}:{epoch}")
                raw = wds.shuffle(
                    bufsize=self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng
                )(raw)
            count = 0
            for item in raw:
                count += 1
                yield self.to_sample(item)
            if not self.repeat:
                return
            if count == 0:  # repeating an empty pass would spin forever without yielding
                raise DatasetError(f"dataset {self.name!r}: shards {urls} hold no samples")
            epoch += 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, shards={len(self.urls)}, repeat={self.repeat})"
