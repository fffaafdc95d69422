"""Image-pipeline throughput of the training data path, in decoded + transformed + collated samples/s.

Not a test. Writes the synthetic shapes at 224 px into a temporary folder (the generator's
webdataset shards and Karpathy JSON), then times the loader training uses
(``minigpt.runners.data.InfiniteLoader``: bad-sample wrapper, DataLoader workers, collate) over
two real builders with their default 224-px processors (random resized crop, bicubic, CLIP
normalisation):

- ``cc_sbu`` (webdataset shards, shuffle buffer of 1000) pointed at ``synthetic/cc_sbu/train-*.tar``
- ``coco_caption`` (LAVIS JSON + one JPEG file per image) pointed at ``synthetic/coco_caption``

with 0, 1 and 2 DataLoader workers, prints one JSON object in the shared results schema
(``benchmarks/bench_common.py``) and writes it to ``benchmarks/results/data_pipeline.json``
(``--out``; ``python benchmarks/report.py`` puts it in ``docs/benchmarks.md``). Run from the
repository root::

    python benchmarks/bench_data_pipeline.py [--n-images 2000] [--batch-size 32] [--batches 40]

Other benchmarks call :func:`run` for these figures.

Each worker and the main process use one torch thread, so the figures measure workers, not
intra-op threads. The first ``--warmup`` batches (worker start-up, shuffle-buffer fill) are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_common import machine_info, results, row, write_results  # noqa: E402
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
    dataset = registry.get_builder_class(name)(BUILDERS[name], data_root=root).build_datasets(["train"])[
        "train"
    ]
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


def run(
    n_images: int = 2000,
    shard_size: int = 250,
    batch_size: int = 32,
    batches: int = 40,
    warmup: int = 3,
    workers: Sequence[int] = (0, 1, 2),
    builders: Sequence[str] = tuple(BUILDERS),
) -> Dict[str, Any]:
    """Generate the images, time every (builder, workers) pair; ``{"generate_s", "results": [...]}``.

    The calling process runs with one torch thread meanwhile (restored afterwards), as do the workers.
    """
    unknown = [b for b in builders if b not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown builder(s) {unknown}; known: {', '.join(BUILDERS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_data_") as root:
            t0 = time.perf_counter()
            generate_synthetic_dataset(
                os.path.join(root, "synthetic"),
                n_train=n_images,
                n_test=8,
                seed=0,
                image_size=224,
                shard_size=shard_size,
                num_workers=0,
                progress=False,
            )
            generate_s = time.perf_counter() - t0
            measured = [
                measure(name, root, w, batch_size, batches, warmup) for name in builders for w in workers
            ]
    finally:
        torch.set_num_threads(threads)
    return {
        "image_size": 224,
        "batch_size": batch_size,
        "n_images": n_images,
        "generate_s": round(generate_s, 1),
        "results": measured,
    }


def rows_of(raw: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One table row per (builder, workers) of :func:`run`'s output."""
    return [
        row(
            f"{r['builder']}, {r['num_workers']} worker{'s' if r['num_workers'] != 1 else ''}",
            r["samples_per_s"],
            "samples/s",
            f"batch {raw['batch_size']} at {raw['image_size']} px; first batches {r['warmup_s']} s; "
            f"{r['skipped']} skipped",
        )
        for r in raw["results"]
    ]


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-images", type=int, default=2000, help="synthetic training images (default 2000)")
    p.add_argument("--shard-size", type=int, default=250, help="samples per tar shard (default 250)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=40, help="timed batches per configuration (default 40)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--builders", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/data_pipeline.json)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    machine = machine_info()
    raw = run(
        args.n_images,
        args.shard_size,
        args.batch_size,
        args.batches,
        args.warmup,
        args.workers,
        args.builders,
    )
    report = results("data_pipeline", machine, rows_of(raw), raw)
    print(json.dumps(report, indent=2))
    if not args.no_write:
        write_results(report, args.out)
    return report


if __name__ == "__main__":
    main()
