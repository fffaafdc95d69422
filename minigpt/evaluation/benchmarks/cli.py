"""The command line the eval scripts share: compose the config, load the model once, run each split.

    python eval_scripts/eval_vqa.py --cfg-path eval_configs/tinygptv_benchmark_eval.yaml --dataset okvqa,gqa
    torchrun --nproc-per-node 4 eval_scripts/eval_ref.py --cfg-path ... --dataset refcoco --split val,testA

The config supplies ``model:`` (arch, model_type, ckpt, template) and ``run:`` (data_root,
batch_size_eval, eval_max_new_tokens, eval_num_beams, output_dir, device, precision, seed,
num_workers, dist_backend); its ``datasets:`` section is not used here. Benchmark files are found
under ``run.data_root`` (``--data-root``) at the places ``EVAL_README.md`` lists; ``--path
NAME.KEY=PATH`` moves one of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch

from minigpt.common.config.shipped import cfg_path_arg
from minigpt.evaluation.benchmarks import BENCHMARKS, benchmarks_of, format_table, get_benchmark
from minigpt.evaluation.benchmarks.base import BenchmarkDataError
from minigpt.evaluation.benchmarks.runner import EvalSettings, SplitResult, run_split

logger = logging.getLogger("minigpt.eval")

FAMILY_TITLES = {
    "vqa": "visual question answering",
    "ref": "referring expression comprehension",
    "caption": "COCO captioning",
    "scienceqa": "ScienceQA (image and text-only questions)",
    "pope": "POPE object hallucination",
}
# the benchmark run when --dataset is not given (families without one require it)
DEFAULT_DATASETS = {"caption": "coco_caption", "scienceqa": "scienceqa", "pope": "pope"}


def _comma_list(text: str) -> List[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. okvqa,gqa")
    return items


def build_parser(family: str, default_datasets: Optional[str]) -> argparse.ArgumentParser:
    names = ", ".join(benchmarks_of(family))
    p = argparse.ArgumentParser(
        description=f"Evaluate a minigpt checkpoint on {FAMILY_TITLES[family]} benchmarks ({names}).",
        epilog="Data layout, metrics and resuming: eval_scripts/EVAL_README.md",
    )
    p.add_argument("--cfg-path", required=True, type=cfg_path_arg, help="an eval config (eval_configs/*.yaml): model and run settings")
    p.add_argument(
        "--dataset", type=_comma_list, default=_comma_list(default_datasets) if default_datasets else None,
        required=default_datasets is None, help=f"comma-separated benchmarks: {names}",
    )
    p.add_argument("--split", type=_comma_list, default=None,
                   help="comma-separated splits (default: the benchmark's standard evaluation split(s))")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. model.ckpt=output/quickstart run.batch_size_eval=32")
    p.add_argument("--data-root", default=None, help="benchmark data root (default: run.data_root)")
    p.add_argument("--path", nargs="+", action="extend", default=[], metavar="NAME.KEY=PATH",
                   help="move one benchmark file, e.g. okvqa.images=/data/coco/val2014 (relative to the data root)")
    p.add_argument("--output-dir", default=None, help="where predictions and metrics go (default: run.output_dir)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per generate call (default: run.batch_size_eval)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: run.eval_max_new_tokens")
    p.add_argument("--num-beams", type=int, default=None, help="default: run.eval_num_beams")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples of each split")
    p.add_argument("--max-batches", type=int, default=None,
                   help="stop each process after N batches without scoring (rerun the command to continue)")
    p.add_argument("--overwrite", action="store_true", help="discard saved predictions instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-pictures", action="store_true",
                   help="do not draw box overlays (ref) or the per-question-type chart (vqa) next to the metrics")
    return p


def _path_overrides(items: Sequence[str]) -> Dict[str, Dict[str, str]]:
    out: Dict[str, Dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, sub = key.rpartition(".")
        if not sep or not dot or not value:
            raise BenchmarkDataError(f"--path {item!r}: expected NAME.KEY=PATH, e.g. okvqa.images=/data/coco/val2014")
        bench = get_benchmark(name)
        if sub not in bench.paths:
            raise BenchmarkDataError(f"--path {item!r}: {name} has no path {sub!r}; its paths are {', '.join(bench.paths)}")
        out.setdefault(name, {})[sub] = value
    return out


def _splits_for(name: str, requested: Optional[List[str]], family: str) -> List[str]:
    bench = get_benchmark(name)
    if requested is None:
        # RefCOCO (val, testA, testB) and POPE (random, popular, adversarial) are reported on every
        # split; the other benchmarks on one.
        return list(bench.splits) if family in ("ref", "pope") else [bench.default_split]
    usable = [s for s in requested if s in bench.splits]
    if not usable:
        raise BenchmarkDataError(f"{name} has none of the splits {', '.join(requested)}; its splits are {', '.join(bench.splits)}")
    for s in requested:
        if s not in usable:
            logger.warning("%s has no split %r (its splits: %s): skipped", name, s, ", ".join(bench.splits))
    return usable


class _ImageLoader:
    """Path -> processed ``[3, H, W]`` tensor with the model's eval image processor.

    Read within the default read limits (``configs/datasets/read_limits.yaml``): a corrupt, empty or
    oversized image raises :class:`~minigpt.common.io.DatasetError`, which the evaluation loop
    turns into a skipped, counted sample.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, path: str) -> torch.Tensor:
        from minigpt.common.io import open_image

        return self.processor(open_image(path, "benchmark images"))


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def evaluate(family: str, args: argparse.Namespace) -> List[SplitResult]:
    """Run every requested benchmark split of ``family``; returns one result per split."""
    from minigpt.common import dist_utils
    from minigpt.common.config import Config
    from minigpt.common.launch import init_distributed, resolve_device, seed_everything
    from minigpt.common.precision import autocast, check_precision_device
    from minigpt.common.registry import registry
    from minigpt.models.generation.chat import Chat
    from minigpt.runners.stage import check_checkpoint_paths

    for name in args.dataset:
        if get_benchmark(name).family != family:
            raise BenchmarkDataError(
                f"{name} is not a {FAMILY_TITLES[family]} benchmark; this script runs {', '.join(benchmarks_of(family))}"
            )
    overrides = _path_overrides(args.path)
    cfg = Config(args.cfg_path, list(args.options))
    rc, mc = cfg.run_cfg, cfg.model_cfg
    data_root = args.data_root or str(rc.data_root)
    plan = [(name, split) for name in args.dataset for split in _splits_for(name, args.split, family)]
    check_checkpoint_paths(cfg)

    device = resolve_device(str(rc.device))
    init_distributed(device, str(rc.dist_backend))
    if rc.get("num_threads"):
        torch.set_num_threads(int(rc.num_threads))
    # The same seed on every rank: a model with randomly initialised parts must be one model everywhere.
    seed_everything(int(rc.seed))
    model = registry.get_model_class(mc.arch).from_config(mc)
    model.eval().to(device)
    if not mc.get("ckpt"):
        logger.warning("model.ckpt is not set: evaluating a randomly initialised model")
    chat = Chat(model)
    if chat.vis_processor is None:
        raise BenchmarkDataError(f"{args.cfg_path}: the model config names no eval image processor (model.preprocess)")

    max_new_tokens = int(args.max_new_tokens or rc.eval_max_new_tokens)
    num_beams = int(args.num_beams or rc.eval_num_beams)
    precision = str(rc.precision)
    check_precision_device(precision, device)  # before any work

    @torch.no_grad()
    def answer(images: List[Optional[torch.Tensor]], prompts: List[str]) -> List[str]:
        with autocast(precision, device):
            return chat.answer_batch(images, prompts, max_new_tokens=max_new_tokens, num_beams=num_beams)

    settings = EvalSettings(
        output_dir=args.output_dir or str(rc.output_dir),
        batch_size=int(args.batch_size or rc.batch_size_eval),
        num_workers=int(rc.num_workers),
        progress=bool(rc.progress) and not args.no_progress,
        max_samples=args.max_samples,
        max_batches=args.max_batches,
        overwrite=args.overwrite,
        fingerprint={
            "arch": str(mc.arch),
            "model_type": str(mc.get("model_type")),
            "ckpt": _plain(mc.get("ckpt")),
            "template": str(mc.get("template")),
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
        },
    )
    load_image = _ImageLoader(chat.vis_processor)
    results = []
    for name, split in plan:
        bench = BENCHMARKS[name]
        records = bench.read(bench.resolve_paths(data_root, overrides.get(name)), split)
        results.append(run_split(bench, split, records, answer, load_image, settings))
    if dist_utils.is_main_process():
        print(format_table(results))
        written = [r.metrics_path for r in results if r.metrics_path]
        if written:
            print("\nmetrics written to " + ", ".join(written))
        if not args.no_pictures:
            from minigpt.evaluation.pictures import write_split_pictures

            pictures = write_split_pictures(family, results, settings.output_dir)
            if pictures:
                print("pictures written to " + ", ".join(pictures))
        if any(r.metrics is None for r in results):
            print(f"stopped after --max-batches {args.max_batches}: rerun the same command to continue")
    return results


def main(family: str, default_datasets: Optional[str] = None, argv: Optional[List[str]] = None) -> int:
    """Entry point of ``eval_scripts/eval_<family>.py``; returns the exit status (2 on a config/data error)."""
    from minigpt.common import dist_utils
    from minigpt.common.config import ConfigError
    from minigpt.common.logger import setup_logging
    from minigpt.common.registry import RegistryError

    args = build_parser(family, default_datasets).parse_args(argv)
    setup_logging()
    try:
        evaluate(family, args)
    except (ConfigError, RegistryError, BenchmarkDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist_utils.is_dist():
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
