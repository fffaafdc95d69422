"""Chain stage configs: each stage starts from the checkpoints of the stages before it, found by name.

The stages' folders are ``<root>/<stage name>``, where ``root`` is ``run.output_dir`` when the
options set it, else the pipeline's ``output_dir``. Each stage runs with
``run.resume_ckpt_path=auto`` (an option may say otherwise), so a rerun of the pipeline continues
an interrupted stage and passes over finished ones (they resume at their last step, train no step
and evaluate again) rather than being refused as a fresh run into a used folder; a rerun with other
settings is refused by the resume's fingerprint check, naming the keys.

A stage may instead be a command, ``{name, module, args}``: ``python -m <module> <args>`` run once (on
the main process, as a single process), e.g. feature extraction between two training stages. Its
folder is ``<root>/<name>``; it is no checkpoint, so later stages do not load it. In a command's
``args`` and in any stage's (and the eval's) options, ``{dir:NAME}`` is the folder of stage NAME,
``{output_dir}`` the command stage's own folder and ``{data_root}`` the run's data root. A training
stage's ``start_from`` (a list of earlier stage names; default: all of them) says which checkpoints it
loads: ``[]`` starts it from its preset, for a model that shares no part with the stages before it; the
eval's ``start_from`` does the same for the evaluated model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from minigpt.common import dist_utils
from minigpt.common.config import Config
from minigpt.common.constants import PIPELINE_FILE
from minigpt.runners.stage import run_stage
from minigpt.tasks.evaluation.table import format_metrics as format_table  # the one results table module

logger = logging.getLogger(__name__)

HEADLINE = ("vqa_accuracy", "hallucination_rate", "grounding_acc@0.5", "identify_accuracy", "caption_bleu4_nltk", "caption_exact",
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
              easygen=bool(s.get("easygen", False)),
              creation={k: int(v) for k, v in s.creation.items()} if s.get("creation") else None)
    if dist_utils.is_main_process():
        if is_complete(root, **kw):
            logger.info("synthetic data present at %s", root)
        else:
            logger.info("generating synthetic data at %s", root)
            generate_synthetic_dataset(root, shard_size=int(s.get("shard_size", 1000)),
                                       num_workers=int(s.get("num_workers", 2)), **kw)
    videos = s.get("videos")
    if videos:
        from minigpt.datasets.synthetic.videos import generate_synthetic_videos, videos_complete

        vkw = dict(n_train=int(videos.n_train), n_test=int(videos.n_test), seed=kw["seed"], image_size=kw["image_size"])
        if dist_utils.is_main_process() and not videos_complete(root, **vkw):
            logger.info("generating synthetic videos at %s", os.path.join(root, "videochat"))
            generate_synthetic_videos(root, **vkw)
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


_PLACEHOLDER = re.compile(r"\{(dir:[A-Za-z0-9_.-]+|output_dir|data_root)\}")


def fill_placeholders(text: str, folders: Dict[str, str], data_root: Optional[str], own: Optional[str] = None) -> str:
    """``text`` with ``{dir:NAME}``, ``{output_dir}`` and ``{data_root}`` replaced; an unknown stage name is an error."""

    def sub(match: "re.Match[str]") -> str:
        key = match.group(1)
        if key.startswith("dir:"):
            name = key[4:]
            if name not in folders:
                raise ValueError(f"{text!r}: no stage {name!r} before this one (stages so far: {', '.join(folders) or 'none'})")
            return os.path.abspath(folders[name])
        value = own if key == "output_dir" else data_root
        if value is None:
            raise ValueError(f"{text!r}: {{{key}}} is not known here")
        return os.path.abspath(value) if key == "output_dir" else str(value)

    return _PLACEHOLDER.sub(sub, str(text))


def run_module_stage(stage, folder: str, folders: Dict[str, str], data_root: Optional[str]) -> Dict[str, Any]:
    """Run a command stage, ``python -m <module> <args>``, on the main process; the others wait."""
    t0 = time.time()
    if dist_utils.is_main_process():
        args = [fill_placeholders(str(a), folders, data_root, folder) for a in (stage.get("args") or [])]
        os.makedirs(folder, exist_ok=True)
        # one process: the child must not join this run's process group
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                                                 "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")}
        command = [sys.executable, "-m", str(stage.module), *args]
        logger.info("stage %s: %s", stage.name, " ".join(command))
        done = subprocess.run(command, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"stage {stage.name}: {' '.join(command)} exited with status {done.returncode}")
    dist_utils.barrier()
    return {"stage": str(stage.name), "steps": 0, "train_seconds": round(time.time() - t0, 1), "checkpoint": None}


def start_from(stage, stage_dirs: Dict[str, str]) -> List[str]:
    """The earlier training stages whose checkpoints ``stage`` loads: its ``start_from`` list, else all of them."""
    names = stage.get("start_from")
    if names is None:
        return list(stage_dirs)
    unknown = [str(n) for n in names if str(n) not in stage_dirs]
    if unknown:
        raise ValueError(f"pipeline stage {stage.get('name', 'eval')}: start_from names {unknown}, not an earlier training stage "
                         f"({', '.join(stage_dirs) or 'none'})")
    return [str(n) for n in names]


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
    folders: Dict[str, str] = {}  # every finished stage's folder, command stages too
    data_root: Optional[str] = None
    for k, stage in enumerate(pipe.stages, 1):
        name = str(stage.name)
        if stage.get("module") is not None:
            if data_root is None:
                raise ValueError(f"pipeline stage {name}: a command stage cannot come first (it runs on the data the first stage sets up)")
            folders[name] = os.path.join(out_root, name)
            summaries.append(run_module_stage(stage, folders[name], folders, data_root))
            continue
        earlier = start_from(stage, stage_dirs)
        ckpts = [os.path.abspath(stage_dirs[n]) for n in earlier]
        # first, so that the pipeline's, the user's or the stage's options can set another resume
        own = [fill_placeholders(str(o), folders, data_root) for o in (stage.get("options") or [])]
        opts = ["run.resume_ckpt_path=auto", *base_opts, *own]
        opts += [f"run.stage_name={name}", f"run.output_dir={os.path.join(out_root, name)}",
                 f"run.progress_label={json.dumps(f'stage {k}/{len(pipe.stages)} {name}')}"]
        if ckpts:
            opts.append(f"model.ckpt={json.dumps(ckpts)}")
        cfg = Config(str(stage.cfg), opts)
        if not data_ready:
            _ensure_synthetic_data(pipe.get("data"), str(cfg.run_cfg.data_root))
            data_ready = True
        logger.info("stage %d/%d %s: %s (starts from %s)", k, len(pipe.stages), name, stage.cfg,
                    ", ".join(earlier) or "its preset")
        data_root = str(cfg.run_cfg.data_root)
        summaries.append(run_stage(cfg))
        stage_dirs[name] = folders[name] = str(cfg.run_cfg.output_dir)
        write_manifest(out_root, pipe_name, path, stage_dirs)
    metrics: Dict[str, float] = {}
    if pipe.get("eval"):
        ckpts = [os.path.abspath(stage_dirs[n]) for n in start_from(pipe.eval, stage_dirs)]
        opts = base_opts + [fill_placeholders(str(o), folders, data_root) for o in (pipe.eval.get("options") or [])]
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
