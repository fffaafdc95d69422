"""Command line for the synthetic shapes dataset (also installed as ``minigpt-synthetic``).

python -m minigpt.datasets.synthetic --out data/synthetic --n-train 20000 --n-test 1000 --num-workers 2
"""

from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional

from minigpt.datasets.synthetic.videos import generate_synthetic_videos, videos_complete
from minigpt.datasets.synthetic.writers import generate_synthetic_dataset, is_complete


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minigpt.datasets.synthetic",
        description="Generate the seeded synthetic shapes dataset in the real datasets' on-disk formats.",
    )
    p.add_argument("--out", required=True, help="dataset root to write (created if missing)")
    p.add_argument("--n-train", type=int, default=20000, help="training images (default 20000)")
    p.add_argument("--n-test", type=int, default=1000, help="held-out images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per webdataset shard (default 1000)")
    p.add_argument(
        "--num-workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="worker processes; the output is identical for any value (default: min(4, CPUs))",
    )
    p.add_argument(
        "--skip-if-complete", action="store_true", help="do nothing if ROOT already holds this dataset"
    )
    p.add_argument(
        "--real-layout",
        action="store_true",
        help="also lay the data out where the real builders' default YAMLs look (coco/, gqa/, refcoco/, ...) "
        "and write the benchmarks eval_scripts/ read (okvqa/, vizwiz/, scienceqa/, ...), so run.data_root=OUT "
        "trains those builders and --data-root OUT evaluates those benchmarks",
    )
    p.add_argument(
        "--absent",
        action="store_true",
        help="also ask about what each picture lacks: a VQA question answered 'there is no ...' and, in the "
        "conversations, a [refer] turn refused for half the images",
    )
    p.add_argument(
        "--easygen",
        action="store_true",
        help="also write drawing dialogues in PhotoChat's JSON (photochat/) and interleaved documents in MMC4's "
        "layout (mmc4/), for image-generation training (docs/easygen.md)",
    )
    p.add_argument(
        "--videos",
        action="store_true",
        help="also write short mp4 clips (a shape moving left/right/up/down, or changing colour) with questions in "
        "VideoChat-Instruct's JSON under OUT/videochat/ (--n-train-videos, --n-test-videos)",
    )
    p.add_argument("--n-train-videos", type=int, default=4000, help="training clips with --videos (default 4000)")
    p.add_argument("--n-test-videos", type=int, default=400, help="held-out clips with --videos (default 400)")
    p.add_argument(
        "--creation",
        type=int,
        nargs=2,
        metavar=("N_TRAIN", "N_TEST"),
        default=None,
        help="also write N_TRAIN / N_TEST drawing requests ('draw a red circle in the top left') with their target "
        "images under creation/ (DreamLLM's creation data; off by default)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    creation = {"train": args.creation[0], "test": args.creation[1]} if args.creation else None
    videos_done = not args.videos or videos_complete(
        args.out, args.n_train_videos, args.n_test_videos, args.seed, args.image_size
    )
    if args.skip_if_complete and videos_done and is_complete(
        args.out, args.n_train, args.n_test, args.seed, args.image_size, args.real_layout, args.absent,
        args.easygen, creation,
    ):
        print(f"synthetic shapes: {args.out} is already complete; nothing to do")
        return 0
    if args.videos and not videos_done:
        t0 = time.perf_counter()
        generate_synthetic_videos(args.out, args.n_train_videos, args.n_test_videos, args.seed, args.image_size)
        print(f"synthetic videos -> {args.out}/videochat: {args.n_train_videos} train / {args.n_test_videos} test clips; "
              f"{time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    manifest = generate_synthetic_dataset(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        image_size=args.image_size,
        shard_size=args.shard_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
        real_layout=args.real_layout,
        absent=args.absent,
        easygen=args.easygen,
        creation=creation,
    )
    c = manifest["counts"]
    print(
        f"synthetic shapes -> {args.out}: images {c['images_train']} train / {c['images_test']} test; "
        f"cc_sbu {c['cc_sbu_shards_train']}+{c['cc_sbu_shards_test']} shards; cc_sbu_align {c['cc_sbu_align']}; "
        f"coco_caption {c['coco_caption_train']}/{c['coco_caption_test']}; vqa {c['vqa_train']}/{c['vqa_test']}; "
        f"refcoco {c['refcoco_refs']} refs; llava {c['llava_train']}/{c['llava_test']}; "
        + (
            f"laid out for {len(manifest['files']['real_layout'])} real-builder paths; "
            if args.real_layout
            else ""
        )
        + f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
