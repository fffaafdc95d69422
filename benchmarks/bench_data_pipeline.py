"""Image-pipeline throughput of the training data path, in decoded + transformed + collated samples/s.

Not a test. Writes the synthetic shapes at 224 px into a temporary folder (the generator's
webdataset shards and Karpathy JSON), then times the loader training uses
(``minigpt.runners.data.InfiniteLoader``: bad-sample wrapper, DataLoader workers, collate) over
two real builders with their default 224-px processors (random resized crop, bicubic, CLIP
normalisation):

- ``cc_sbu`` (webdataset shards, shuffle buffer of 1000) pointed at ``synthetic/cc_sbu/train-*.tar``
- ``coco_caption`` (LAVIS JSON + one JPEG file per image) pointed at ``synthetic/coco_caption``

with 0, 1 and 2 DataLoader workers, and prints one JSON object. Run from the repository root::

    python benchmarks/bench_data_pipeline.py [--n-images 2000] [--batch-size 32] [--batches 40]

Each worker and the main process use one torch thread, so the figures measure workers, not
intra-op threads. The first ``--warmup`` batches (worker start-up, shuffle-buffer fill) are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigpt.common.registry import registry  # noqa: E402
from minigpt.datasets.synthetic import generate_synthetic_dataset  # noqa: E402
from minigpt.runners.data import InfiniteLoader  # noqa: E402

BUILDERS: Dict[str, Dict[str, Any]] = {
    "cc_sbu": {"build_info": {"shards": {"train": "synthetic/cc_sbu/train-*.tar"}}},
    "coco_caption": {
        "build_info": {
            "annotations": {"train": ["synthetic/coco_caption/coco_karpathy_train.json"]},
            "images": "synthetic/images",
        }
    },
}


def measure(name: str, root: str, workers: int, batch_size: int, batches: int, warmup: int) -> Dict[str, Any]:
    dataset = registry.get_builder_class(name)(BUILDERS[name], data_root=root).build_datasets(["train"])["train"]
    loader = InfiniteLoader(dataset, batch_size, workers, seed=0, name=name, rank=0, world_size=1)
    t0 = time.perf_counter()
    for _ in range(warmup):
        batch = next(loader)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
    elapsed = time.perf_counter() - t1
    assert batch["image"].shape == (batch_size, 3, 224, 224), batch["image"].shape
    skipped = loader.take_read_counts()["skipped"]
    del loader  # stops the persistent workers before the next configuration starts its own
    return {
        "builder": name,
        "num_workers": workers,
        "samples_per_s": round(batches * batch_size / elapsed, 1),
        "timed_samples": batches * batch_size,
        "warmup_s": round(first, 2),
        "skipped": skipped,
    }


def main(argv: List[str] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-images", type=int, default=2000, help="synthetic training images (default 2000)")
    p.add_argument("--shard-size", type=int, default=250, help="samples per tar shard (default 250)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=40, help="timed batches per configuration (default 40)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--builders", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench_data_") as root:
        t0 = time.perf_counter()
        generate_synthetic_dataset(
            os.path.join(root, "synthetic"), n_train=args.n_images, n_test=8, seed=0,
            image_size=224, shard_size=args.shard_size, num_workers=0, progress=False,
        )
        generate_s = time.perf_counter() - t0
        results = [
            measure(name, root, workers, args.batch_size, args.batches, args.warmup)
            for name in args.builders
            for workers in args.workers
        ]
    report = {
        "benchmark": "data_pipeline",
        "image_size": 224,
        "batch_size": args.batch_size,
        "n_images": args.n_images,
        "generate_s": round(generate_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            # other processes' load when the run started: figures from a busy machine read low
            "load_avg_1m_before": load_before,
        },
        "results": results,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
