"""Training-speed options, each before/after on the same machine: vision feature cache, length grouping, checkpointing.

Not a test. Writes synthetic shapes into a temporary data root, then times real training runs
(``minigpt.runners.stage.run_stage``, the path ``train.py`` takes: data loading, the cache, forward,
backward, optimizer step), each in a fresh subprocess so that peak memory is per run, the two
settings of each option alternating, ``--repeats`` times. A step is the interval between two
requests for a batch (data loading included), in wall-clock time and in the process's CPU time (on
a busy machine the CPU time is the steadier of the two); a run's figure is the mean of its steps
after ``--warmup`` (a mixture's steps differ by dataset, and the mean is what throughput sees; both
settings draw the same datasets in the same order), a setting's figure the median over its runs.

1. ``run.vision_feature_cache`` on a stage-1 tiny step (TinyGPT-V's stage-1 recipe on the tiny
   preset: vision encoder and LLM frozen, the projector trained, caption webdataset shards).
   "warm": every image's features already on disk from an earlier run (disk storage), so no image
   is decoded and the encoder does not run. Also the parts of a step without the cache (data,
   vision encoder, the rest), and the same for a heavier-vision shape of the tiny preset.
   Then the same step counted in FLOPs (``torch.utils.flop_counter``), without and with the cache, on
   the tiny preset and on real-size TinyGPT-V stage 1 (counted at one and two encoder blocks and
   LLM layers, and extended to the real depths): the no-cache / warm-cache FLOP ratio is the most the
   cache can speed a step up on a machine where every FLOP costs the same.
2. ``run.group_by_length`` on the synthetic stage-4 mixture (quickstart stage 4's datasets, ratios
   and template): the batches' padding fraction and the step time.
3. ``run.grad_checkpointing`` on the same stage-4 training: step time and peak RSS (and the peak
   above the RSS when training starts, which is what the step's activations add).

Run from the repository root (``nice`` on a shared machine)::

    python benchmarks/bench_training_opts.py [--repeats 3] [--steps 16] [--only cache,flops,grouping,ckpt]

prints the results object and writes ``benchmarks/results/bench_training_opts.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_common import (  # noqa: E402
    machine_info,
    model_overrides,
    peak_rss_mb,
    results,
    row,
    write_results,
)

STAGE1 = """
model:
  arch: tinygptv
  model_type: tiny
  vision_encoder: {freeze: true}
  llm: {freeze: true}
datasets:
  synthetic_caption_wds:
    sample_ratio: 1.0
    build_info: {shuffle_buffer: 200}
run: {stage_name: bench_stage1, warmup_steps: 0, lr_sched: constant_lr, init_lr: 1.0e-3}
"""
STAGE4 = (REPO / "train_configs" / "quickstart_stage4.yaml").read_text()

# a shape of the tiny preset whose encoder costs more than its LLM: 128 px images through a 4-conv stem
# (still an 8x8 grid, so the LLM sees the same 16 image tokens), 4 ViT blocks of width 256
HEAVY_VISION = [
    "model.vision_encoder.image_size=128",
    "model.vision_encoder.patch_size=16",
    "model.vision_encoder.width=256",
    "model.vision_encoder.depth=4",
    "datasets.synthetic_caption_wds.vis_processor.train.image_size=128",
]
PARTS = ("cache", "flops", "grouping", "ckpt")
THREADS: List[str] = []  # ["run.num_threads=N"] when --threads is given


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _clocks() -> tuple:
    return time.perf_counter(), time.process_time()


def _write_stage(spec: Dict[str, Any]) -> Path:
    path = Path(spec["out"]) / "stage.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec["yaml"])
    return path


# -- in a subprocess: one training run ---------------------------------------------------------------
def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one stage as ``spec`` says; each step's wall/CPU time, memory and (optionally) the batches' padding."""
    import torch

    from minigpt.common.config import Config
    from minigpt.runners.data import MixedLoader
    from minigpt.runners.runner_iter import RunnerIter
    from minigpt.runners.stage import run_stage
    from minigpt.tasks.base_task import BaseTask

    cfg_path = _write_stage(spec)
    texts: List[Any] = []
    seen: Dict[str, Any] = {}
    if spec.get("padding"):
        original_step = BaseTask.train_step

        def recording(self, model, samples):
            seen["model"] = model
            texts.append((list(samples["instruction_input"]), list(samples["answer"])))
            return original_step(self, model, samples)

        BaseTask.train_step = recording
    # each request for a batch ends the step before it: data, cache, forward, backward, optimizer, logging
    marks: List[tuple] = []
    original_next = MixedLoader.__next__

    def timed_next(self):
        marks.append(_clocks())
        return original_next(self)

    MixedLoader.__next__ = timed_next
    entry: Dict[str, float] = {}
    original_train = RunnerIter.train

    def train(self):
        entry["rss_mb"] = _rss_mb()
        return original_train(self)

    RunnerIter.train = train
    summary = run_stage(Config(cfg_path, spec["options"]))
    peak = peak_rss_mb()  # VmHWM: ru_maxrss would carry the parent's peak over into this child
    out: Dict[str, Any] = {
        "step_ms": [round(1000 * (b[0] - a[0]), 2) for a, b in zip(marks, marks[1:])],
        "step_cpu_ms": [round(1000 * (b[1] - a[1]), 2) for a, b in zip(marks, marks[1:])],
        "rss_at_train_start_mb": round(entry["rss_mb"], 1),
        "peak_rss_mb": round(peak, 1),
        "vision_feature_cache": summary.get("vision_feature_cache"),
        "torch_threads": torch.get_num_threads(),
    }
    if texts:
        model = getattr(seen["model"], "module", seen["model"])
        fractions, tokens = [], []
        for instructions, answers in texts:
            mask = model.build_inputs(instructions, answers, model.num_image_tokens())["attention_mask"]
            fractions.append(1.0 - mask.sum().item() / mask.numel())
            tokens.append(mask.numel())
        out["padding_fraction"] = round(statistics.mean(fractions), 4)
        out["padded_tokens_per_batch"] = round(statistics.mean(tokens), 1)
    return out


def breakdown(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The stage-1 step's parts without the cache, one after the other: data, vision encoder, the rest."""
    import torch

    from minigpt.common.config import Config
    from minigpt.common.registry import registry
    from minigpt.runners.data import build_train_loader

    cfg = Config(_write_stage(spec), spec["options"])
    rc = cfg.run_cfg
    if rc.get("num_threads"):
        torch.set_num_threads(int(rc.num_threads))
    task = registry.get_task_class(rc.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    model.train()
    model.vision_feature_point = "vision_encoder"  # the model takes the encoder's output as its images
    loader = build_train_loader(datasets, {n: 1.0 for n in datasets}, rc)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    parts: Dict[str, List[List[float]]] = {"data": [[], []], "vision_encoder": [[], []], "rest": [[], []]}
    for i in range(int(spec["steps"])):
        c0 = _clocks()
        batch = next(loader)
        c1 = _clocks()
        with torch.no_grad():
            feats = model.vision_encoder(batch["image"])
        c2 = _clocks()
        loss = model({**batch, "image": feats})["loss"]  # projector, LLM forward and backward
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        c3 = _clocks()
        if i >= int(spec["warmup"]):
            for name, (a, b) in zip(parts, ((c0, c1), (c1, c2), (c2, c3))):
                parts[name][0].append(b[0] - a[0])
                parts[name][1].append(b[1] - a[1])
    out: Dict[str, Any] = {}
    for name, (wall, cpu) in parts.items():
        out[f"{name}_ms"] = round(1000 * statistics.median(wall), 2)
        out[f"{name}_cpu_ms"] = round(1000 * statistics.median(cpu), 2)
    out.update(
        vision_params=sum(p.numel() for p in model.vision_encoder.parameters()),
        llm_params=sum(p.numel() for p in model.llm.parameters()),
        image_tokens=model.num_image_tokens(),
        torch_threads=torch.get_num_threads(),
    )
    return out


# -- FLOPs: the most the cache can save --------------------------------------------------------------
# a stage-1 sample: the first alignment prompt and a caption of a typical length (for the tiny preset,
# a synthetic caption: its tokenizer is fitted to the synthetic vocabulary)
FLOP_PROMPT = "Describe this image in detail."
FLOP_CAPTION = "a brown dog runs across a grassy field with a red frisbee in its mouth on a sunny afternoon"
REAL_STAGE1 = REPO / "train_configs" / "tinygptv_stage1.yaml"
# real-size parts built without weight files and in float32 (a FLOP count does not depend on precision)
NO_WEIGHTS = {
    "vision_encoder": {"pretrained": None, "precision": "fp32"},
    "projector": {"pretrained": None},
    "llm": {"pretrained": None, "torch_dtype": "float32"},
}


def step_flops(
    model_type: str, overrides: Dict[str, Any], caption: str = FLOP_CAPTION, batch: int = 2
) -> Dict[str, Any]:
    """FLOPs per sample of one training step (forward + backward) of ``tinygptv`` at ``model_type``.

    Counted by torch's ``FlopCounterMode`` (matrix products, convolutions, attention) over a real
    step on random weights, random pixels and ``caption``: ``no_cache`` from pixels; ``warm_cache`` from what
    the vision feature cache stores (``vision_prefix`` at the model's ``vision_cache_point``);
    ``prefix``, the work that a warm cache skips.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from minigpt.datasets.datasets.base_dataset import make_instruction
    from minigpt.models import load_model

    torch.manual_seed(0)
    model = load_model("tinygptv", model_type, overrides=overrides)
    model.train()
    point = model.vision_cache_point()
    if point is None:
        raise ValueError(
            f"tinygptv {model_type} with {overrides}: the vision encoder trains, nothing to cache"
        )
    size = model.vision_encoder.image_size
    pixels = torch.randn(batch, 3, size, size)
    samples = {"instruction_input": [make_instruction(FLOP_PROMPT)] * batch, "answer": [caption] * batch}

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / batch

    def step(images) -> None:
        model({**samples, "image": images})["loss"].backward()

    feats = model.vision_prefix(pixels, point)
    out: Dict[str, Any] = {
        "no_cache": count(lambda: step(pixels)),
        "prefix": count(lambda: model.vision_prefix(pixels, point)),
    }
    model.vision_feature_point = point
    out["warm_cache"] = count(lambda: step(feats))
    ids = model.build_inputs(samples["instruction_input"], samples["answer"], model.num_image_tokens())
    out.update(
        point=point,
        feature_shape=list(feats.shape[1:]),
        seq_len=int(ids["input_ids"].shape[1]),
        label_tokens=int((ids["labels"][0] != -100).sum()),
        image_tokens=model.num_image_tokens(),
    )
    return out


def extrapolated_step_flops(
    model_type: str, overrides: Dict[str, Any], vision_depth: int, llm_layers: int, batch: int = 2
) -> Dict[str, Any]:
    """:func:`step_flops` at ``vision_depth`` encoder blocks and ``llm_layers`` LLM layers, from small builds.

    Every encoder block (and every LLM layer) does the same work whatever the depth, so each count
    is linear in the two depths: counted at 1 and 2 blocks of each and extended exactly. This is how
    a real-size model is counted on a CPU without building its billions of parameters.
    """
    from omegaconf import OmegaConf

    def at(vision: int, llm: int) -> Dict[str, Any]:
        depths = {"vision_encoder": {"depth": vision}, "llm": {"config": {"num_hidden_layers": llm}}}
        merged = OmegaConf.to_container(OmegaConf.merge(overrides, depths))
        return step_flops(model_type, merged, batch=batch)

    base, vision2, llm2 = at(1, 1), at(2, 1), at(1, 2)
    out = dict(base, vision_depth=vision_depth, llm_layers=llm_layers)
    for key in ("no_cache", "warm_cache", "prefix"):
        per_block, per_layer = vision2[key] - base[key], llm2[key] - base[key]
        out[key] = base[key] + (vision_depth - 1) * per_block + (llm_layers - 1) * per_layer
        out[f"{key}_per_vision_block"], out[f"{key}_per_llm_layer"] = per_block, per_layer
    return out


def bench_flops() -> Dict[str, Any]:
    """Stage-1 step FLOPs without and with the cache: the tiny preset, and real-size TinyGPT-V stage 1."""
    from minigpt.datasets.synthetic.scenes import make_example
    from minigpt.models import load_model

    tiny = step_flops("tiny", model_overrides(STAGE1), make_example(0, "train", 0, render=False).caption)
    real = model_overrides(REAL_STAGE1.read_text(), NO_WEIGHTS)
    shapes = load_model("tinygptv", "stage1_2_3", device="meta", overrides=real)
    depth, layers = shapes.vision_encoder.depth, shapes.llm.model.config.num_hidden_layers
    del shapes
    return {
        "tiny": tiny,
        "real_size_stage1": extrapolated_step_flops("stage1_2_3", real, depth, layers),
    }


# -- driver ----------------------------------------------------------------------------------------
def _subprocess(kind: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("MINIGPT_DATA_ROOT", None)
    proc = subprocess.run(
        [sys.executable, __file__, f"--{kind}", json.dumps(spec)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _options(root: str, out: str, steps: int, batch_size: int, extra: Sequence[str] = ()) -> List[str]:
    return [
        *THREADS,
        f"run.max_iters={steps}",
        f"run.batch_size_train={batch_size}",
        f"run.data_root={root}",
        f"run.output_dir={out}",
        "run.progress=false",
        "run.log_freq=1",
        "run.test_splits=[]",
        "run.num_workers=0",
        *extra,
    ]


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(list(values)), 2)


def _mean_after(values: Sequence[float], skip: int) -> float:
    values = list(values)
    return round(statistics.mean(values[skip:] or values), 2)


def compare(
    name: str, yaml: str, settings: Dict[str, List[str]], root: str, work: str, args, padding: bool = False
) -> Dict[str, Any]:
    """Alternate the settings' runs ``args.repeats`` times; per setting its runs and their medians."""
    runs: Dict[str, List[Dict[str, Any]]] = {s: [] for s in settings}
    for r in range(args.repeats):
        for setting in list(settings) if r % 2 == 0 else list(reversed(settings)):
            out = os.path.join(work, name, f"{setting}_{r}")
            spec = {
                "yaml": yaml,
                "out": out,
                "padding": padding,
                "options": _options(root, out, args.steps, args.batch_size, settings[setting]),
            }
            result = _subprocess("worker", spec)
            result["mean_step_ms"] = _mean_after(result["step_ms"], args.warmup)
            result["mean_step_cpu_ms"] = _mean_after(result["step_cpu_ms"], args.warmup)
            runs[setting].append(result)
            print(
                f"[{name}] {setting} run {r}: {result['mean_step_ms']} ms/step, "
                f"{result['mean_step_cpu_ms']} ms CPU",
                file=sys.stderr,
            )
    summary: Dict[str, Dict[str, Any]] = {}
    for setting, rs in runs.items():
        summary[setting] = {
            "step_ms": _median(x["mean_step_ms"] for x in rs),
            "step_cpu_ms": _median(x["mean_step_cpu_ms"] for x in rs),
            "peak_rss_mb": _median(x["peak_rss_mb"] for x in rs),
            "rss_above_train_start_mb": _median(x["peak_rss_mb"] - x["rss_at_train_start_mb"] for x in rs),
        }
        if padding:
            summary[setting]["padding_fraction"] = round(
                statistics.median(x["padding_fraction"] for x in rs), 4
            )
            summary[setting]["padded_tokens_per_batch"] = _median(x["padded_tokens_per_batch"] for x in rs)
    return {"settings": settings, "summary": summary, "runs": runs}


def bench_cache(root: str, work: str, args) -> Dict[str, Any]:
    cache_dir = os.path.join(work, "feature_cache")
    out: Dict[str, Any] = {}
    for shape, extra in {"tiny": [], "tiny_heavy_vision": HEAVY_VISION}.items():
        warm = [
            "run.vision_feature_cache.enabled=true",
            "run.vision_feature_cache.storage=disk",
            f"run.vision_feature_cache.dir={cache_dir}",
            *extra,
        ]
        # fill the cache with one pass over every training image (not timed)
        fill_out = os.path.join(work, "cache_fill", shape)
        fill_steps = -(-args.n_images // args.batch_size) + 2
        filled = _subprocess(
            "worker",
            {
                "yaml": STAGE1,
                "out": fill_out,
                "options": _options(root, fill_out, fill_steps, args.batch_size, warm),
            },
        )
        result = compare(
            f"cache_{shape}", STAGE1, {"no_cache": list(extra), "warm_cache": warm}, root, work, args
        )
        for run in result["runs"]["warm_cache"]:
            if run["vision_feature_cache"]["rows_computed"]:
                raise RuntimeError(f"{shape}: a warm-cache run computed features; the cache was not filled")
        where = os.path.join(work, "breakdown", shape)
        parts = _subprocess(
            "breakdown",
            {
                "yaml": STAGE1,
                "out": where,
                "steps": args.steps,
                "warmup": args.warmup,
                "options": _options(root, where, args.steps, args.batch_size, extra),
            },
        )
        result.update(fill=filled["vision_feature_cache"], breakdown=parts, extra_options=extra)
        out[shape] = result
    return out


def bench_grouping(root: str, work: str, args) -> Dict[str, Any]:
    settings = {"ungrouped": [], "grouped": ["run.group_by_length=true"]}
    return compare("grouping", STAGE4, settings, root, work, args, padding=True)


def bench_ckpt(root: str, work: str, args) -> Dict[str, Any]:
    return compare(
        "grad_checkpointing", STAGE4, {"off": [], "on": ["run.grad_checkpointing=true"]}, root, work, args
    )


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def _trained(yaml_text: str) -> str:
    """Which parts of the tiny preset (where every part trains by default) a stage YAML freezes."""
    model = model_overrides(yaml_text)
    frozen = [
        part for part in ("vision_encoder", "projector", "llm") if (model.get(part) or {}).get("freeze")
    ]
    return f"{' and '.join(frozen)} frozen, the rest trains" if frozen else "every part trains"


def _gflop(flops: float) -> float:
    return float(f"{flops / 1e9:.4g}")


def rows_of(raw: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The docs-table figures of a run of :func:`main`."""
    rows: List[Dict[str, Any]] = []
    bs = raw["batch_size"]
    threads = f"{raw['threads']} torch thread(s)" if raw.get("threads") else "torch's default threads"
    for shape, res in (raw.get("cache") or {}).items():
        s, p = res["summary"], res["breakdown"]
        before, after = s["no_cache"], s["warm_cache"]
        what = (
            "tiny tinygptv" if shape == "tiny" else "tiny tinygptv with " + " ".join(res["extra_options"][:4])
        )
        note = f"stage 1 (encoder + LLM frozen, projector trains), batch {bs}, {what}, {threads}"
        rows += [
            row(
                f"stage-1 step, no cache [{shape}]",
                before["step_ms"],
                "ms",
                f"{note}; CPU time {before['step_cpu_ms']} ms",
            ),
            row(
                f"stage-1 step, warm vision feature cache [{shape}]",
                after["step_ms"],
                "ms",
                f"{note}; no image decoded or encoded; CPU time {after['step_cpu_ms']} ms",
            ),
            row(
                f"vision feature cache speed-up [{shape}]",
                _ratio(before["step_ms"], after["step_ms"]),
                "x",
                f"no cache / warm cache, wall clock; in CPU time "
                f"{_ratio(before['step_cpu_ms'], after['step_cpu_ms'])}x",
            ),
            row(
                f"stage-1 step without cache, data part [{shape}]",
                p["data_ms"],
                "ms",
                f"decode + resize + collate; then vision encoder {p['vision_encoder_ms']} ms, projector + LLM "
                f"fwd/bwd + optimizer {p['rest_ms']} ms (CPU time: {p['data_cpu_ms']} / "
                f"{p['vision_encoder_cpu_ms']} / {p['rest_cpu_ms']} ms); {p['vision_params']:,} vision and "
                f"{p['llm_params']:,} LLM parameters, {p['image_tokens']} image tokens",
            ),
        ]
    flops = raw.get("flops") or {}
    for shape, f in flops.items():
        if shape == "tiny":
            what = "tiny tinygptv, encoder + LLM frozen as in the timed rows"
        else:
            what = (
                "tinygptv stage1_2_3 as train_configs/tinygptv_stage1.yaml sets it "
                f"({f['vision_depth']}-block EVA ViT-g, Q-Former, {f['llm_layers']}-layer Phi-2, LoRA), "
                "random weights; counted at 1 and 2 blocks and extended (exact: each block does the same "
                "work)"
            )
        sample = (
            f"{f['seq_len']} positions ({f['image_tokens']} image, {f['label_tokens']} labelled), "
            f"cache point {f['point']} {tuple(f['feature_shape'])}"
        )
        rows += [
            row(
                f"stage-1 step FLOPs, no cache [{shape}]",
                _gflop(f["no_cache"]),
                "GFLOP/sample",
                f"{what}; forward + backward, torch's FlopCounterMode; {sample}",
            ),
            row(
                f"stage-1 step FLOPs, warm cache [{shape}]",
                _gflop(f["warm_cache"]),
                "GFLOP/sample",
                f"the cache skips {_gflop(f['prefix'])} GFLOP/sample (encoder forward"
                + (" + frozen Q-Former)" if f["point"] == "projector_prefix" else ")"),
            ),
            row(
                f"vision feature cache FLOP ceiling [{shape}]",
                _ratio(f["no_cache"], f["warm_cache"]),
                "x",
                "no-cache / warm-cache FLOPs: the most the cache can speed a step up where every FLOP costs "
                "the same time (decoding, which the cache also skips, not counted); machine-independent",
            ),
        ]
    if raw.get("grouping"):
        s = raw["grouping"]["summary"]
        off, on = s["ungrouped"], s["grouped"]
        note = f"synthetic stage-4 mixture (quickstart stage 4), batch {bs}, {threads}"
        rows += [
            row(
                "padding fraction, ungrouped",
                off["padding_fraction"],
                "",
                f"{note}; {off['padded_tokens_per_batch']} token positions per batch, padding included",
            ),
            row(
                "padding fraction, run.group_by_length",
                on["padding_fraction"],
                "",
                f"{note}; {on['padded_tokens_per_batch']} token positions per batch, padding included",
            ),
            row(
                "stage-4 step, ungrouped",
                off["step_ms"],
                "ms",
                f"{note}; CPU time {off['step_cpu_ms']} ms",
            ),
            row(
                "stage-4 step, run.group_by_length",
                on["step_ms"],
                "ms",
                f"{note}; CPU time {on['step_cpu_ms']} ms",
            ),
            row(
                "length grouping speed-up",
                _ratio(off["step_ms"], on["step_ms"]),
                "x",
                f"ungrouped / grouped, wall clock; in CPU time "
                f"{_ratio(off['step_cpu_ms'], on['step_cpu_ms'])}x",
            ),
        ]
    if raw.get("grad_checkpointing"):
        s = raw["grad_checkpointing"]["summary"]
        off, on = s["off"], s["on"]
        note = f"synthetic stage-4 training of the tiny tinygptv ({_trained(STAGE4)}), batch {bs}, {threads}"
        rows += [
            row(
                "stage-4 step, grad checkpointing off",
                off["step_ms"],
                "ms",
                f"{note}; CPU time {off['step_cpu_ms']} ms",
            ),
            row(
                "stage-4 step, run.grad_checkpointing",
                on["step_ms"],
                "ms",
                f"{note}; CPU time {on['step_cpu_ms']} ms",
            ),
            row(
                "peak RSS, grad checkpointing off",
                off["peak_rss_mb"],
                "MiB",
                f"{off['rss_above_train_start_mb']} MiB above the RSS when training starts",
            ),
            row(
                "peak RSS, run.grad_checkpointing",
                on["peak_rss_mb"],
                "MiB",
                f"{on['rss_above_train_start_mb']} MiB above the RSS when training starts",
            ),
        ]
    return rows


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per setting (default 3)")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per run (default 16)")
    p.add_argument(
        "--warmup", type=int, default=3, help="first steps of a run left out of its mean (default 3)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-images", type=int, default=256, help="synthetic training images (default 256)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (run.num_threads; default: torch's own choice)",
    )
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--out", default=None, help="results file (default benchmarks/results/bench_training_opts.json)"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--breakdown", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker or args.breakdown:
        import logging

        logging.disable(logging.WARNING)
        fn = worker if args.worker else breakdown
        print(json.dumps(fn(json.loads(args.worker or args.breakdown))))
        return {}
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    if wanted - set(PARTS):
        p.error(f"--only: unknown part(s) {sorted(wanted - set(PARTS))}")
    if args.threads:
        THREADS.append(f"run.num_threads={args.threads}")
    from minigpt.datasets.synthetic import generate_synthetic_dataset

    machine = machine_info()
    raw: Dict[str, Any] = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "n_images": args.n_images,
        "threads": args.threads,
    }
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_training_opts_") as work:
        root = os.path.join(work, "data")
        generate_synthetic_dataset(
            os.path.join(root, "synthetic"),
            n_train=args.n_images,
            n_test=8,
            seed=0,
            shard_size=64,
            progress=False,
        )
        if "cache" in wanted:
            raw["cache"] = bench_cache(root, work, args)
        if "grouping" in wanted:
            raw["grouping"] = bench_grouping(root, work, args)
        if "ckpt" in wanted:
            raw["grad_checkpointing"] = bench_ckpt(root, work, args)
    if "flops" in wanted:
        raw["flops"] = bench_flops()
    raw["wall_s"] = round(time.time() - t0, 1)
    report = results("bench_training_opts", machine, rows_of(raw), raw)
    print(json.dumps(report, indent=2))
    if not args.no_write:
        write_results(report, args.out)
    return report


if __name__ == "__main__":
    main()
