"""Full-size TinyGPT-V with random weights: stage-3 training throughput and memory, inference memory.

TinyGPT-V's authors report that the model trains on a 24 GB GPU and infers in 8 GB. This builds the
published shapes without any weight file (:func:`minigpt.models.weights.random_init.build_random`: meta
build, then ``to_empty`` on the device and a pseudo-random fill) and measures, each part in a
Python process of its own so that one part's peak memory holds nothing of the other's:

- ``train``: the model section of ``train_configs/tinygptv_stage3.yaml`` over the ``stage1_2_3``
  preset (EVA ViT-g frozen in fp16, the Q-Former frozen in float32, Phi-2 in float16 with LoRA r=64 and
  trainable norms, the projection layers training), at that config's batch size (6), precision
  (bf16 autocast) and ``max_txt_len`` (160): every answer is long enough to be cut there, so each
  step runs the recipe's longest sequences. A step is what the runner does: forward under
  autocast, backward, gradient clipping at ``run.grad_clip``, AdamW over ``model.param_groups``.
  Reported: median step time over the timed steps, samples/s and tokens/s (all positions, and the
  answer tokens the loss is on), and peak memory.
- ``infer``: the model section of ``eval_configs/tinygptv_benchmark_eval.yaml`` (the ``stage4``
  preset at 448 px, its checkpoint not loaded) under that config's precision (fp16 autocast on a
  GPU, as the eval scripts set it), generating ``--new-tokens`` tokens greedily with the KV cache
  for ``--gen-batch`` images.
  Reported: generation tokens/s and peak memory.

Each part also reports the autocast in force where the LLM is called (``llm_autocast``): on a GPU
the model's own autocast (``maybe_autocast``, bf16) stands inside the one ``run.precision`` asks for.
Peak memory is ``torch.cuda.max_memory_allocated`` over the whole process on a GPU (weights,
optimizer state, activations; ``max_memory_reserved`` in the note), the peak RSS on a CPU.
``--size tiny`` runs the same code on the ``tiny`` preset with the quickstart's stage-3 and eval
configs (a check that the benchmark works, seconds on a CPU). Run from the repository root::

    python benchmarks/bench_full_size.py [--device auto] [--size full] [--parts train infer]
        [--steps 10] [--warmup 3] [--batch-size 6] [--new-tokens 64] [--gen-batch 1] [--out PATH]

It prints one JSON object. With ``--size full`` it writes
``benchmarks/results/full_size_<device type>.json`` (or ``--out``), which
``python benchmarks/report.py`` turns into a table of ``docs/benchmarks.md``; ``--size tiny``
writes only where ``--out`` says.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

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

# what each size builds: (preset, the config whose model/run sections it follows)
SIZES = {
    "full": {
        "train": ("stage1_2_3", REPO / "train_configs" / "tinygptv_stage3.yaml"),
        "infer": ("stage4", REPO / "eval_configs" / "tinygptv_benchmark_eval.yaml"),
    },
    "tiny": {
        "train": ("tiny", REPO / "train_configs" / "quickstart_stage3.yaml"),
        "infer": ("tiny", REPO / "eval_configs" / "quickstart_eval.yaml"),
    },
}
PARTS = ("train", "infer")
# TinyGPT-V's stated requirements (its README: training on a 24 GB GPU, inference in 8 GB)
PUBLISHED_GB = {"train": 24, "infer": 8}
PROMPT = "Describe this image in detail."  # the first of prompts/alignment.txt, stage 3's prompts
AMP = {"bf16": "bfloat16", "fp16": "float16"}


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device here (torch {torch.__version__})")
    return device


def stage_settings(part: str, size: str) -> Dict[str, Any]:
    """The preset, model overrides and run settings ``part`` takes from its config.

    The checkpoint is dropped (``ckpt: None``): nothing is read from disk but the config itself.
    """
    from omegaconf import OmegaConf

    preset, path = SIZES[size][part]
    text = path.read_text()
    run = OmegaConf.to_container(OmegaConf.create(text).get("run") or {}, resolve=False)
    return {
        "preset": preset,
        "config": str(path.relative_to(REPO)),
        "overrides": model_overrides(text, {"ckpt": None}),
        "precision": str(run.get("precision", "fp32")),
        "batch_size": int(run.get("batch_size_train", 1)),
        "init_lr": float(run.get("init_lr", 1e-4)),
        "weight_decay": float(run.get("weight_decay", 0.05)),
        "grad_clip": run.get("grad_clip", 1.0),
    }


def long_answer(tokenizer, n_tokens: int) -> str:
    """Synthetic captions joined until the text has ``n_tokens`` tokens or more (``max_txt_len`` cuts it)."""
    from minigpt.datasets.synthetic.scenes import make_example

    words: List[str] = []
    i = 0
    while len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) < n_tokens:
        words.append(make_example(i, "train", 0, render=False).caption)
        i += 1
    return " ".join(words)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory(device) -> Dict[str, Any]:
    import torch

    out: Dict[str, Any] = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        out["peak_gpu_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return out


def _weights(model) -> Dict[str, Any]:
    by_dtype: Dict[str, int] = {}
    for p in model.parameters():
        name = str(p.dtype).replace("torch.", "")
        by_dtype[name] = by_dtype.get(name, 0) + p.numel()
    return {
        "parameters": model.num_parameters(),
        "trainable_parameters": model.num_parameters(trainable_only=True),
        "weight_mb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1),
        "parameters_by_dtype": by_dtype,
    }


def _autocast(device, precision: str):
    import contextlib

    import torch

    if device.type != "cuda" or precision not in AMP:
        return contextlib.nullcontext()  # as the runner: bf16 on CPU only where asked, fp16 never
    return torch.autocast("cuda", dtype=getattr(torch, AMP[precision]))


def record_llm_autocast(model, device) -> Dict[str, Any]:
    """Fills ``{"llm_autocast": ...}`` where the LLM computes its logits: the autocast actually in force
    there (the model's own autocast, ``maybe_autocast``, can stand inside the one ``run.precision`` asks
    for). It wraps the LM head's ``forward`` on the instance rather than adding a forward hook, which
    would turn the fused decoding step off (it keeps the forward for hooked modules) and time another path."""
    import torch

    seen: Dict[str, Any] = {}
    head = model.llm.causal_lm.get_output_embeddings()
    forward = head.forward

    def recording(*args, **kwargs):
        on = torch.is_autocast_enabled(device.type)
        seen["llm_autocast"] = (
            str(torch.get_autocast_dtype(device.type)).replace("torch.", "") if on else "off"
        )
        return forward(*args, **kwargs)

    head.forward = recording
    return seen


# -- in a child process: one part ------------------------------------------------------------------------
def train_child(
    size: str, device_name: str, steps: int, warmup: int, batch_size: Optional[int]
) -> Dict[str, Any]:
    """Build the stage-3 model with random weights on the device and time ``steps`` optimizer steps."""
    import torch

    from minigpt.datasets.datasets.base_dataset import make_instruction
    from minigpt.models.weights.random_init import build_random

    device = resolve_device(device_name)
    st = stage_settings("train", size)
    batch = int(batch_size or st["batch_size"])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random("tinygptv", st["preset"], device, st["overrides"])
    _sync(device)
    build_s = time.perf_counter() - t0
    size_px = model.vision_encoder.image_size
    images = torch.rand(batch, 3, size_px, size_px, generator=torch.Generator().manual_seed(1)).to(device)
    answer = long_answer(model.tokenizer, model.max_txt_len)
    samples = {
        "image": images,
        "instruction_input": [make_instruction(PROMPT)] * batch,
        "answer": [answer] * batch,
    }
    shapes = model.build_inputs(samples["instruction_input"], samples["answer"], model.num_image_tokens())
    positions = int(shapes["attention_mask"].sum())
    optimizer = torch.optim.AdamW(model.param_groups(st["weight_decay"]), lr=st["init_lr"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    clip = st["grad_clip"]
    autocast_seen = record_llm_autocast(model, device)

    def step() -> Dict[str, float]:
        with _autocast(device, st["precision"]):
            out = model(samples)
        loss = out["loss"].float()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, float(clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach()), "n_tokens": int(out["n_tokens"])}

    times: List[float] = []
    losses: List[float] = []
    n_tokens = 0
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        r = step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
        losses.append(r["loss"])
        n_tokens = r["n_tokens"]
    step_s = statistics.median(times)
    return {
        "part": "train",
        "preset": st["preset"],
        "config": st["config"],
        "precision": st["precision"],
        **autocast_seen,
        "batch_size": batch,
        "image_size": size_px,
        "image_tokens": model.num_image_tokens(),
        "positions_per_step": positions,
        "answer_tokens_per_step": n_tokens,
        "max_txt_len": model.max_txt_len,
        "build_s": round(build_s, 2),
        "step_s": [round(t, 4) for t in times],
        "step_s_median": round(step_s, 4),
        "samples_per_s": round(batch / step_s, 2),
        "tokens_per_s": round(positions / step_s, 1),
        "answer_tokens_per_s": round(n_tokens / step_s, 1),
        "losses": [round(x, 4) for x in losses],
        **_weights(model),
        "optimizer_state_mb": round(
            sum(
                t.numel() * t.element_size()
                for s in optimizer.state.values()
                for t in s.values()
                if torch.is_tensor(t)
            )
            / 2**20,
            1,
        ),
        **_memory(device),
    }


def infer_child(size: str, device_name: str, new_tokens: int, gen_batch: int) -> Dict[str, Any]:
    """Build the benchmark-eval model with random weights; time greedy generation of ``new_tokens`` tokens."""
    import torch

    from minigpt.datasets.datasets.base_dataset import make_instruction
    from minigpt.models.weights.random_init import build_random

    device = resolve_device(device_name)
    st = stage_settings("infer", size)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random("tinygptv", st["preset"], device, st["overrides"], is_eval=True)
    _sync(device)
    build_s = time.perf_counter() - t0
    size_px = model.vision_encoder.image_size
    images = torch.rand(gen_batch, 3, size_px, size_px, generator=torch.Generator().manual_seed(1)).to(device)
    prompts = [make_instruction(PROMPT)] * gen_batch
    autocast_seen = record_llm_autocast(model, device)

    def generate(n: int) -> float:
        _sync(device)
        t = time.perf_counter()
        with _autocast(device, st["precision"]):
            # min_new_tokens: random weights may emit EOS at once; the timing wants all n tokens
            model.generate(images, prompts, max_new_tokens=n, min_new_tokens=n, stop_strings=[])
        _sync(device)
        return time.perf_counter() - t

    generate(2)  # warm-up: kernels chosen, caches allocated
    gen_s = generate(new_tokens)
    return {
        "part": "infer",
        "preset": st["preset"],
        "config": st["config"],
        "precision": st["precision"],
        **autocast_seen,
        "gen_batch": gen_batch,
        "image_size": size_px,
        "image_tokens": model.num_image_tokens(),
        "new_tokens": new_tokens,
        "build_s": round(build_s, 2),
        "generate_s": round(gen_s, 4),
        "tokens_per_s": round(gen_batch * new_tokens / gen_s, 1),
        **_weights(model),
        **_memory(device),
    }


def run_child(part: str, args) -> Dict[str, Any]:
    """One part in a fresh Python process; its JSON line, or an error with the end of its stderr."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        part,
        "--size",
        args.size,
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--new-tokens",
        str(args.new_tokens),
        "--gen-batch",
        str(args.gen_batch),
    ]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench_full_size: the {part} part failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the report ------------------------------------------------------------------------------------------
def _gib(mb: float) -> float:
    return round(mb / 1024, 2)


def rows_of(raw: Dict[str, Any], device_type: str) -> List[Dict[str, Any]]:
    """The docs table's rows from the parts' results."""
    rows = []
    gpu = device_type == "cuda"
    mem_key = "peak_gpu_allocated_mb" if gpu else "peak_rss_mb"
    mem_what = "torch.cuda.max_memory_allocated" if gpu else "peak RSS"
    if "train" in raw:
        t = raw["train"]
        shape = (
            f"tinygptv {t['preset']} as {t['config']}, batch {t['batch_size']}, "
            f"{t['positions_per_step']} positions "
            f"({t['image_tokens']} image tokens a sample, max_txt_len {t['max_txt_len']}), run.precision "
            f"{t['precision']}, LLM autocast {t.get('llm_autocast', '?')}"
        )
        rows += [
            row(
                "stage-3 training step",
                t["step_s_median"],
                "s",
                f"{shape}; median of {len(t['step_s'])} steps; {t['trainable_parameters']:,} of "
                f"{t['parameters']:,} parameters train",
            ),
            row("stage-3 training samples/s", t["samples_per_s"], "samples/s", shape),
            row(
                "stage-3 training tokens/s",
                t["tokens_per_s"],
                "tokens/s",
                f"every position; {t['answer_tokens_per_s']} answer tokens/s",
            ),
            row(
                "stage-3 training peak memory",
                _gib(t[mem_key]),
                "GiB",
                f"{mem_what}, whole process; weights {_gib(t['weight_mb'])} GiB, AdamW state "
                f"{_gib(t['optimizer_state_mb'])} GiB"
                + (f"; reserved {_gib(t['peak_gpu_reserved_mb'])} GiB" if gpu else "")
                + f"; TinyGPT-V states {PUBLISHED_GB['train']} GB for training",
            ),
        ]
    if "infer" in raw:
        g = raw["infer"]
        rows += [
            row(
                "inference tokens/s",
                g["tokens_per_s"],
                "tokens/s",
                f"tinygptv {g['preset']} as {g['config']} ({g['image_size']} px, {g['image_tokens']} image "
                f"tokens), run.precision {g['precision']}, LLM autocast {g.get('llm_autocast', '?')}, "
                f"batch {g['gen_batch']}, greedy, {g['new_tokens']} new tokens, KV cache; timed from "
                f"pixels to the last token (image encoding and prefill included)",
            ),
            row(
                "inference peak memory",
                _gib(g[mem_key]),
                "GiB",
                f"{mem_what}, whole process; weights {_gib(g['weight_mb'])} GiB"
                + (f"; reserved {_gib(g['peak_gpu_reserved_mb'])} GiB" if gpu else "")
                + f"; TinyGPT-V states {PUBLISHED_GB['infer']} GB for inference",
            ),
        ]
    return rows


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when torch sees one), cpu, cuda or cuda:N")
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument(
        "--steps", type=int, default=10, help="timed training steps (after --warmup untimed ones)"
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--batch-size", type=int, default=None, help="default: the stage config's batch_size_train"
    )
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--gen-batch", type=int, default=1)
    ap.add_argument(
        "--out", default=None, help="results file (default with --size full: benchmarks/results/)"
    )
    ap.add_argument("--child", choices=PARTS, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("steps", "new_tokens", "gen_batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or (args.batch_size is not None and args.batch_size < 1):
        ap.error("--warmup must be >= 0 and --batch-size >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.child == "train":
        print(json.dumps(train_child(args.size, args.device, args.steps, args.warmup, args.batch_size)))
        return {}
    if args.child == "infer":
        print(json.dumps(infer_child(args.size, args.device, args.new_tokens, args.gen_batch)))
        return {}
    device = resolve_device(args.device)
    machine = machine_info(device)
    raw: Dict[str, Any] = {"size": args.size, "device": str(device)}
    for part in args.parts:
        raw[part] = run_child(part, args)
    report = results(f"full_size_{device.type}", machine, rows_of(raw, device.type), raw)
    if args.out or args.size == "full":  # the tiny check writes only where --out says
        report["written_to"] = write_results(report, args.out)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
