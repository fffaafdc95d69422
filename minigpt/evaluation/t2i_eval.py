"""Text-to-image evaluation: draw a prompt file's captions, score FID and CLIP score (``eval_scripts/eval_t2i.py``).

Two routes, one loop:

* the generator alone: a registered ``t2i`` (``--t2i diffusers --t2i-option pretrained=DIR``) draws each caption;
* EasyGen's route (``--cfg-path``, an LLM eval config): the LLM answers ``--request`` filled with the
  caption, and the first ``<Img>description</Img>`` of its answer is drawn (no span: no image, counted).

The drawing runs in the evaluation loop the other eval scripts use (:mod:`minigpt.tasks.evaluation.loop`):
sharded across ``torchrun`` processes, each image saved as it is drawn
(``<output_dir>/t2i_images/<name>_<split>/``) and its path kept in the resumable predictions files,
so an interrupted run continues where it stopped. Rank 0 then scores every image: FID against
``--ref-stats`` (made from ``--ref-images`` when the file does not exist yet) with ``--features``,
and CLIP score with ``--clip-model`` (:mod:`minigpt.evaluation.t2i_metrics`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml
from PIL import Image

from minigpt.common.t2i import build_t2i, image_spans
from minigpt.evaluation.t2i_metrics import (
    ClipScorer,
    MetricInputError,
    build_features,
    feature_stats,
    features_of,
    frechet_distance,
    load_stats,
    save_stats,
)
from minigpt.tasks.evaluation.loop import EvalSettings, SplitResult, evaluate_split
from minigpt.tasks.evaluation.records import BenchmarkDataError, EvalRecord
from minigpt.tasks.evaluation.scorers import Scorer
from minigpt.tasks.evaluation.sources import RecordSource
from minigpt.tasks.evaluation.table import format_table

logger = logging.getLogger("minigpt.eval")
IMAGE_DIR = "t2i_images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def read_prompts(path: str) -> List[EvalRecord]:
    """Records of a prompt file: a JSON list of ``{"caption" | "prompt", "id" | "image_id" | "image"}``.

    LAVIS caption files (COCO Karpathy ``[{image, caption, image_id}]``) read as they are; an entry
    with a list of captions, or an id seen before, keeps its first caption only (one image per id,
    as FID protocols draw one caption per reference image).
    """
    if not os.path.isfile(path):
        raise BenchmarkDataError(f"--prompts: file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            entries = json.load(fh)
    except ValueError as exc:
        raise BenchmarkDataError(f"--prompts: {path} is not valid JSON ({exc})") from exc
    if not isinstance(entries, list):
        raise BenchmarkDataError(f"--prompts: {path} must hold a JSON list of {{caption, id}} entries")
    records, seen = [], set()
    for i, e in enumerate(entries):
        text = e.get("caption", e.get("prompt")) if isinstance(e, dict) else None
        text = text[0] if isinstance(text, list) and text else text
        if not isinstance(text, str) or not text.strip():
            raise BenchmarkDataError(f"--prompts: entry {i} of {path} has no caption text: {e!r:.200}")
        key = next((e[k] for k in ("id", "image_id", "image") if k in e), i)
        if str(key) in seen:
            continue
        seen.add(str(key))
        records.append(EvalRecord(id=str(key), image=None, prompt=text.strip(), target={"caption": text.strip()}))
    if not records:
        raise BenchmarkDataError(f"--prompts: {path} holds no entry")
    return records


def _file_name(item_id: str) -> str:
    """A file name for an id (ids may hold slashes): readable prefix + hash."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id)[:60]
    return f"{safe}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}.png"


def _option_value(item: str) -> tuple:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise BenchmarkDataError(f"--t2i-option {item!r}: expected KEY=VALUE, e.g. pretrained=/models/sd21")
    return key, yaml.safe_load(value)


def reference_stats(args: argparse.Namespace, features) -> Optional[tuple]:
    """``(mu, sigma)`` of ``--ref-stats``, first made from ``--ref-images`` if the file is not there yet."""
    if not args.ref_stats:
        return None
    if not os.path.isfile(args.ref_stats) and args.ref_images:
        names = sorted(n for n in os.listdir(args.ref_images) if n.lower().endswith(IMAGE_SUFFIXES))
        if len(names) < 2:
            raise MetricInputError(f"--ref-images {args.ref_images}: needs at least two images, found {len(names)}")
        images = [Image.open(os.path.join(args.ref_images, n)).convert("RGB") for n in names]
        save_stats(args.ref_stats, *feature_stats(features_of(images, features)))
        logger.info("FID reference statistics of %d images written to %s", len(images), args.ref_stats)
    return load_stats(args.ref_stats)


def make_scorer(args: argparse.Namespace, output_dir: str) -> Scorer:
    """Rows: ``drawn`` (1 when an image was made); aggregate: FID, CLIP score and the drawn fraction."""
    features = build_features(args.features, args.device) if args.ref_stats else None
    ref = reference_stats(args, features) if features is not None else None
    clip = ClipScorer(args.clip_model, args.device) if args.clip_model else None

    def score(record: EvalRecord, prediction: str) -> Dict[str, Any]:
        return {"score": 1.0 if prediction else 0.0}

    def aggregate(records: List[EvalRecord], rows: List[Dict[str, Any]]) -> Dict[str, float]:
        drawn = [(rec, row["prediction"]) for rec, row in zip(records, rows) if row["prediction"]]
        images = [Image.open(os.path.join(output_dir, p)).convert("RGB") for _, p in drawn]
        out: Dict[str, float] = {"drawn": len(drawn) / max(1, len(records))}
        if ref is not None:
            if len(images) < 2:
                logger.warning("FID needs at least two drawn images, got %d: not computed", len(images))
            else:
                out["fid"] = frechet_distance(*feature_stats(features_of(images, features)), *ref)
        if clip is not None:
            values = []
            for i in range(0, len(images), 32):
                values += clip.scores(images[i : i + 32], [rec.prompt for rec, _ in drawn[i : i + 32]])
            out["clip_score"] = float(np.mean(values)) if values else 0.0
        return out

    return Scorer(score, aggregate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Draw a prompt file's captions with a registered t2i generator (or an LLM and the caption "
        "bridge) and score FID and CLIP score; sharded with torchrun, resumable.",
        epilog="docs/easygen.md explains the inputs; eval_scripts/EVAL_README.md the output files.",
    )
    p.add_argument("--prompts", required=True, help="JSON list of {caption, id} (LAVIS caption files read as they are)")
    p.add_argument("--output-dir", required=True, help="where images, predictions and metrics go")
    p.add_argument("--name", default="t2i", help="the benchmark name in file names and the table (default t2i)")
    p.add_argument("--split", default="test", help="the split name in file names (default test)")
    p.add_argument("--t2i", default="synthetic_shapes", help="registered t2i generator (registry.list_t2i())")
    p.add_argument("--t2i-option", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="generator keys, e.g. pretrained=/models/sd21 num_inference_steps=25 (values read as YAML)")
    p.add_argument("--cfg-path", default=None,
                   help="an LLM eval config: draw the first <Img>...</Img> of the LLM's answer to --request")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="override keys of --cfg-path")
    p.add_argument("--request", default="draw {}", help="the LLM's prompt, '{}' the caption (with --cfg-path)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="LLM answer length (with --cfg-path)")
    p.add_argument("--ref-stats", default=None, help="FID reference statistics (.npz: mu, sigma); none: no FID")
    p.add_argument("--ref-images", default=None, help="a folder of reference images to make --ref-stats from if missing")
    p.add_argument("--features", default=None,
                   help="FID features: torchscript:PATH (Inception, local file) or random:DIM[:SEED] (offline)")
    p.add_argument("--clip-model", default=None, help="a local CLIP-like model folder for the CLIP score; none: no CLIP score")
    p.add_argument("--seed", type=int, default=0, help="drawing seed (default 0)")
    p.add_argument("--device", default="cpu", help="device of the generator and the metric networks (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="captions per drawing call (default 8)")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N prompts")
    p.add_argument("--max-batches", type=int, default=None,
                   help="stop each process after N batches without scoring (rerun the command to continue)")
    p.add_argument("--overwrite", action="store_true", help="discard saved predictions instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _llm_answerer(args: argparse.Namespace):
    """With ``--cfg-path``: the LLM's answers to requests (the model built, loaded and placed as the eval scripts do)."""
    from minigpt.common.config import Config
    from minigpt.common.registry import registry
    from minigpt.runners.stage import check_checkpoint_paths

    cfg = Config(args.cfg_path, list(args.options))
    check_checkpoint_paths(cfg)
    model = registry.get_model_class(cfg.model_cfg.arch).from_config(cfg.model_cfg).eval().to(args.device)
    if not cfg.model_cfg.get("ckpt"):
        logger.warning("model.ckpt is not set: evaluating a randomly initialised model")
    return lambda prompts: model.generate(None, prompts, max_new_tokens=args.max_new_tokens)


def evaluate(args: argparse.Namespace) -> SplitResult:
    from minigpt.common import dist_utils
    from minigpt.common.launch import init_distributed, resolve_device

    if args.ref_stats and not args.features:
        raise MetricInputError("--ref-stats needs --features (the network the statistics were made with)")
    if "{}" not in args.request:
        raise BenchmarkDataError(f"--request {args.request!r} must hold '{{}}' where the caption goes")
    args.device = str(resolve_device(args.device))  # a rank's own GPU under torchrun
    init_distributed(torch.device(args.device), "auto")
    records = read_prompts(args.prompts)
    scorer = make_scorer(args, args.output_dir) if dist_utils.is_main_process() else Scorer(lambda r, p: {}, dict)
    t2i_cfg = {"name": args.t2i, **dict(_option_value(o) for o in args.t2i_option)}
    t2i = build_t2i(t2i_cfg)
    ask = _llm_answerer(args) if args.cfg_path else None
    stem = f"{args.name}_{args.split}"
    image_dir = os.path.join(IMAGE_DIR, stem)
    os.makedirs(os.path.join(args.output_dir, image_dir), exist_ok=True)
    index = {r.id: i for i, r in enumerate(records)}

    def predict(recs: List[EvalRecord], _inputs: Sequence[Any]) -> List[str]:
        if ask is None:
            descriptions: List[Optional[str]] = [r.prompt for r in recs]
        else:
            answers = ask([args.request.format(r.prompt) for r in recs])
            descriptions = [next((s.description for s in image_spans(a)), None) for a in answers]
        todo = [(r, d) for r, d in zip(recs, descriptions) if d]
        # one seed per prompt, from its place in the prompt file: the same image whatever the batching or sharding
        images = t2i([d for _, d in todo], seed=[args.seed + index[r.id] for r, _ in todo]) if todo else []
        paths = {}
        for (r, _), im in zip(todo, images):
            rel = os.path.join(image_dir, _file_name(r.id))
            im.save(os.path.join(args.output_dir, rel))
            paths[r.id] = rel
        return [paths.get(r.id, "") for r in recs]

    settings = EvalSettings(
        output_dir=args.output_dir, batch_size=args.batch_size, num_workers=0, progress=not args.no_progress,
        max_samples=args.max_samples, max_batches=args.max_batches, overwrite=args.overwrite,
        fingerprint={"t2i": t2i_cfg, "seed": args.seed, "llm": args.cfg_path, "options": list(args.options),
                     "request": args.request if args.cfg_path else None},
    )
    result = evaluate_split(args.name, args.split, RecordSource(records, lambda p: None), predict, scorer, settings,
                            describe={"prompts": args.prompts, "features": args.features, "ref_stats": args.ref_stats,
                                      "clip_model": args.clip_model})
    if dist_utils.is_main_process():
        print(format_table([result]))
        if result.metrics is None:
            print(f"stopped after --max-batches {args.max_batches}: rerun the same command to continue")
    return result


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``eval_scripts/eval_t2i.py``; 2 on an input error."""
    from minigpt.common import dist_utils
    from minigpt.common.config import ConfigError
    from minigpt.common.logger import setup_logging
    from minigpt.common.registry import RegistryError

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        evaluate(args)
    except (ConfigError, RegistryError, BenchmarkDataError, MetricInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist_utils.is_dist():
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
