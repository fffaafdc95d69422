"""Chain stage configs: each stage starts from the checkpoints of the stages before it, found by name.

The stages' folders are ``<root>/<stage name>``, where ``root`` is ``run.output_dir`` when the
options set it, else the pipeline's ``output_dir``. Each stage runs with
``run.resume_ckpt_path=auto`` (an option may say otherwise), so a rerun of the pipeline continues
an interrupted stage and passes over finished ones (they resume at their last step, train no step
and evaluate again) rather than being refused as a fresh run into a used folder; a rerun with other
settings is refused by the resume's fingerprint check, naming the keys.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from minigpt.common import dist_utils
from minigpt.common.config import Config
from minigpt.common.constants import PIPELINE_FILE
from minigpt.runners.stage import run_stage
from minigpt.tasks.evaluation.table import format_metrics as format_table  # the one results table module

logger = logging.getLogger(__name__)

HEADLINE = ("vqa_accuracy", "hallucination_rate", "grounding_acc@0.5", "identify_accuracy", "caption_bleu4", "caption_exact",
            "scienceqa_accuracy",  # the ScienceQA table, accuracy_img and accuracy_text_only among it
            "creation_")  # the drawing judge's figures (creation_colour_accuracy, creation_quadrant_accuracy)


def _ensure_synthetic_data(data_cfg, data_root: str) -> Optional[str]:
    if not data_cfg or not data_cfg.get("synthetic"):
        return None
    from minigpt.datasets.synthetic import generate_synthetic_dataset, is_complete

    s = data_cfg.synthetic
    root = os.path.join(data_root, str(s.get("root", "synthetic")))
    kw = dict(n_train=int(s.n_train), n_test=int(s.n_test), seed=int(s.get("seed", 0)),
              image_size=int(s.get("image_size", 64)), absent=bool(s.get("absent", False)),
              creation={k: int(v) for k, v in s.creation.items()} if s.get("creation") else None)
    if dist_utils.is_main_process():
        if is_complete(root, **kw):
            logger.info("synthetic data present at %s", root)
        else:
            logger.info("generating synthetic data at %s", root)
            generate_synthetic_dataset(root, shard_size=int(s.get("shard_size", 1000)),
                                       num_workers=int(s.get("num_workers", 2)), **kw)
    dist_utils.barrier()
    return root


def write_manifest(out_root: str, name: str, cfg_path: str, stage_dirs: Dict[str, str]) -> None:
    """``<out_root>/pipeline.json``: the stages finished so far, in order, with their folders relative
    to ``out_root``, so ``model.ckpt=<out_root>`` loads the pipeline's model (models/weights/checkpoint.py)."""
    if not dist_utils.is_main_process():
        return
    os.makedirs(out_root, exist_ok=True)
    manifest = {
        "pipeline": name,
        "config": os.path.abspath(cfg_path),
        "stages": [{"name": n, "dir": os.path.relpath(d, out_root)} for n, d in stage_dirs.items()],
    }
    path = os.path.join(out_root, PIPELINE_FILE)
    with open(path + ".tmp", "w") as fh:
        json.dump(manifest, fh, indent=2)
    os.replace(path + ".tmp", path)


def headline_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    """``dataset/split/metric`` keys flattened to ``metric`` (first dataset that reports it wins)."""
    out: Dict[str, float] = {}
    for key, value in metrics.items():
        name = key.rsplit("/", 1)[-1]
        if name.startswith(HEADLINE) and name not in out:
            out[name] = value
    return out


def output_root(pipe, options: Sequence[str]) -> str:
    """Where the stages' folders go: the last ``run.output_dir=`` of ``options``, else the pipeline's ``output_dir``."""
    given = [str(o).split("=", 1)[1] for o in options if str(o).startswith("run.output_dir=")]
    if given:
        return given[-1]
    return str(pipe.get("output_dir") or os.path.join("output", str(pipe.get("name", "pipeline"))))


def run_pipeline(path: str, options: Sequence[str] = ()) -> Dict[str, Any]:
    """Run every stage of a pipeline config in order, then its evaluation; write metrics.json."""
    t0 = time.time()
    pipe = Config.load_pipeline(path).pipeline
    base_opts: List[str] = [str(o) for o in (pipe.get("options") or [])] + list(options)
    out_root = output_root(pipe, base_opts)
    stage_dirs: Dict[str, str] = {}
    summaries = []
    data_ready = False
    pipe_name = str(pipe.get("name", "pipeline"))
    write_manifest(out_root, pipe_name, path, stage_dirs)  # a rerun starts with no finished stage
    for stage in pipe.stages:
        name = str(stage.name)
        ckpts = [os.path.abspath(stage_dirs[n]) for n in stage_dirs]
        # first, so that the pipeline's, the user's or the stage's options can set another resume
        opts = ["run.resume_ckpt_path=auto", *base_opts, *[str(o) for o in (stage.get("options") or [])]]
        opts += [f"run.stage_name={name}", f"run.output_dir={os.path.join(out_root, name)}"]
        if ckpts:
            opts.append(f"model.ckpt={json.dumps(ckpts)}")
        cfg = Config(str(stage.cfg), opts)
        if not data_ready:
            _ensure_synthetic_data(pipe.get("data"), str(cfg.run_cfg.data_root))
            data_ready = True
        logger.info("stage %s: %s (starts from %s)", name, stage.cfg, ", ".join(stage_dirs) or "random init")
        summaries.append(run_stage(cfg))
        stage_dirs[name] = str(cfg.run_cfg.output_dir)
        write_manifest(out_root, pipe_name, path, stage_dirs)
    metrics: Dict[str, float] = {}
    if pipe.get("eval"):
        ckpts = [os.path.abspath(d) for d in stage_dirs.values()]
        opts = base_opts + [str(o) for o in (pipe.eval.get("options") or [])]
        opts += ["run.evaluate_only=true", "run.stage_name=eval", f"run.output_dir={os.path.join(out_root, 'eval')}"]
        if ckpts:
            opts.append(f"model.ckpt={json.dumps(ckpts)}")
        cfg = Config(str(pipe.eval.cfg), opts)
        if not data_ready:
            _ensure_synthetic_data(pipe.get("data"), str(cfg.run_cfg.data_root))
        metrics = run_stage(cfg)["metrics"]
    wall = round(time.time() - t0, 1)
    result = {
        **headline_metrics(metrics),
        "wall_time_s": wall,
        "stages": [
            {k: s.get(k) for k in ("stage", "steps", "train_seconds", "final_loss_ema", "checkpoint")} for s in summaries
        ],
        "all_metrics": metrics,
    }
    if dist_utils.is_main_process():
        os.makedirs(out_root, exist_ok=True)
        with open(os.path.join(out_root, "metrics.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        table = {**headline_metrics(metrics), "wall_time_s": wall}
        print("\n" + format_table(table))
        print(f"\nmetrics written to {os.path.join(out_root, 'metrics.json')}")
    return result
