"""Command line: ``python -m minigpt.features extract --encoder ARCH[:MODEL_TYPE] --dataset NAME --out DIR``.

Under ``torchrun --nproc-per-node N`` each process computes every N-th shard. A rerun into the same
``--out`` computes only the shards that are missing (docs/video.md).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

import torch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minigpt.features", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="write one embedding per image/video of a dataset into safetensors shards")
    e.add_argument("--encoder", required=True, help="model preset whose vision encoder embeds: ARCH or ARCH:MODEL_TYPE "
                   "(e.g. vision_pretrain:tinygptv_tiny)")
    e.add_argument("--ckpt", action="append", default=[], help="checkpoint (file or stage folder) loaded into that model; repeatable")
    e.add_argument("--dataset", required=True, help="registered dataset builder (registry.list_datasets())")
    e.add_argument("--out", required=True, help="feature folder to write (created; a rerun resumes it)")
    e.add_argument("--data-root", default=None, help="run.data_root the dataset's paths hang off (default: $MINIGPT_DATA_ROOT or data)")
    e.add_argument("--splits", default=None, help="comma-separated splits to extract (default: every split the dataset lists)")
    e.add_argument("--options", nargs="*", default=[], help="dotted overrides of the dataset block, e.g. build_info.images=videos")
    e.add_argument("--frames", type=int, default=2, help="frames per clip embedding, first and last included; an image is repeated (default 2)")
    e.add_argument("--pool-grid", type=int, default=1, help="each frame's tokens pooled to a G x G grid of cells (default 1)")
    e.add_argument("--centre", action="store_true", help="give each channel relative to its mean over the clip's cells "
                   "(the background every cell shares drops out)")
    e.add_argument("--shard-size", type=int, default=512, help="media items per shard (default 512)")
    e.add_argument("--batch-size", type=int, default=64, help="media items per encoder call (default 64)")
    e.add_argument("--seed", type=int, default=0, help="torch seed set before the encoder is built (a random-init encoder is then the same every run)")
    e.add_argument("--num-threads", type=int, default=None, help="torch threads per process (default: torch's)")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from omegaconf import OmegaConf

    from minigpt.common.registry import registry
    from minigpt.features.embedding import build_embedder
    from minigpt.features.extract import extract, resolve_splits

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    _init_distributed()
    data_root = args.data_root or os.environ.get("MINIGPT_DATA_ROOT", "data")
    builder_cls = registry.get_builder_class(args.dataset)
    block = OmegaConf.from_dotlist(list(args.options)) if args.options else {}
    builder = builder_cls(block, data_root=data_root)
    splits = resolve_splits(builder.splits(), args.splits.split(",") if args.splits else None)
    datasets = builder.build_datasets(splits)
    torch.manual_seed(args.seed)
    embedder = build_embedder(args.encoder, args.ckpt, frames=args.frames, pool_grid=args.pool_grid,
                              centre=args.centre)
    describe = {
        "encoder": args.encoder,
        "checkpoints": [os.path.abspath(c) for c in args.ckpt],
        "dataset": args.dataset,
        "splits": splits,
        "embedding": {"frames": args.frames, "pool_grid": args.pool_grid, "centre": args.centre},
        "seed": args.seed,
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
    }
    summary = extract(embedder, datasets, args.out, describe, embedder.out_dim, shard_size=args.shard_size,
                      batch_size=args.batch_size, progress=not args.no_progress)
    if summary["rank"] == 0:
        print(json.dumps({"out": args.out, "dim": embedder.out_dim, **summary}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
