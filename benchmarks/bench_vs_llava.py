"""Our model against transformers' ``LlavaForConditionalGeneration`` at identical shapes, side by side.

Not a test. Builds both models from the same configs with random weights, copies ours into
LLaVA's and aborts unless the two give the same logits and loss on the same batch, then times
them in alternating runs (ours, LLaVA, ours, LLaVA, ...) and reports the median of each:

- training step (forward + backward + AdamW step) at batch 4, and ours / LLaVA;
- wrapper overhead: a side's step / (the bare causal LM's step on the same token count + the
  vision tower's forward);
- generation tokens/s at batch 1 and 8 (greedy, KV cache, a fixed number of new tokens);
- peak memory of each side, in a child process of its own (RSS on CPU, ``max_memory_allocated`` on GPU);
- MFU of each side's training step against this machine's matmul rate, timed in every training
  round between the two sides' steps with the same clock (:func:`matmul_round`);
- data-pipeline samples/s with 0, 1 and 2 workers (``bench_data_pipeline.run``);
- the optimisations' before/after figures (full logits, eager attention, transformers' generate,
  the decode loop's steps through the model's forward, the prompt's last layer at every position,
  gradient checkpointing; ``--compile`` adds ``torch.compile``).

Each ratio's note gives the scatter of its per-round ratios (both sides timed back to back in a
round, so a neighbour's burst hits both): median, quartiles and range.

Identical shapes: CLIP vision tower (``CLIPVisionModel``; hidden state -2, class token dropped =
LLaVA's ``vision_feature_layer=-2`` / ``vision_feature_select_strategy="default"``), the 2-layer
GELU MLP projector, the same Phi config, the same token ids (ours' ``<ImageHere>`` is LLaVA's
``image_token_id``, expanded to one slot per patch on both sides). Same trainable set: vision
tower frozen, projector and LLM trained. LLaVA's LM head has no bias, so ours' is zero (it is
still a trained parameter). fp32 on CPU; on a GPU both keep fp32 weights under bf16 autocast.

Run from the repository root (one run takes a few minutes on a 2-core CPU)::

    python benchmarks/bench_vs_llava.py [--size cpu] [--repeats 7] [--gen-repeats 15] [--compile] [--clock wall|cpu] [--out PATH]

``--clock cpu`` (with ``OMP_NUM_THREADS=1``) times this process's CPU seconds instead of wall-clock
ones: on a machine shared with other jobs, time spent waiting for a core is left out.

prints one JSON object in the shared schema (``benchmarks/bench_common.py``) and writes
``benchmarks/results/bench_vs_llava.json``; ``python benchmarks/report.py`` puts it in the docs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_common import machine_info, peak_rss_mb, results, row, write_results  # noqa: E402

NAME = "bench_vs_llava"
# what a timed figure counts: wall-clock seconds, or this process's CPU seconds (a one-thread run on a
# machine shared with other jobs: time spent waiting for a core is left out)
CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
TOLERANCE = 1e-4  # fp32 logits/loss of the two sides, absolute


@dataclasses.dataclass(frozen=True)
class Shape:
    """Sizes of both models and of the inputs they are timed on."""

    image_size: int = 224
    patch_size: int = 16
    vision_hidden: int = 256
    vision_layers: int = 4
    vision_heads: int = 4
    llm_hidden: int = 512
    llm_layers: int = 4
    llm_heads: int = 8
    vocab_size: int = 8192
    train_batch: int = 4
    answer_words: int = 12  # words per training answer (plus 4 more for each later sample of the batch)
    gen_batches: Tuple[int, ...] = (1, 8)
    new_tokens: int = 32
    matmul_n: int = 2048  # side of the square matmul that measures the machine's peak

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


SHAPES: Dict[str, Shape] = {
    # what the figures in docs/benchmarks.md use: a few seconds per step on a 2-core CPU
    "cpu": Shape(),
    # for tests: seconds for everything
    "tiny": Shape(
        image_size=32,
        patch_size=8,
        vision_hidden=32,
        vision_layers=2,
        vision_heads=2,
        llm_hidden=64,
        llm_layers=2,
        llm_heads=2,
        vocab_size=1024,
        answer_words=4,
        gen_batches=(1, 2),
        new_tokens=4,
        matmul_n=256,
    ),
}

# every metric a full run reports (tests check the JSON against it)
REQUIRED_METRICS = (
    "train_step_s.ours",
    "train_step_s.llava",
    "train_step_ratio",
    "wrapper_overhead.ours",
    "wrapper_overhead.llava",
    "bare_lm_step_s",
    "vision_tower_s",
    "gen_tokens_per_s.b{b}.ours",
    "gen_tokens_per_s.b{b}.llava",
    "gen_tokens_per_s_ratio.b{b}",
    "peak_memory_mb.ours",
    "peak_memory_mb.llava",
    "mfu.ours",
    "mfu.llava",
    "matmul_peak_gflops",
    "train_step_s.ours.full_logits",
    "train_step_s.ours.eager",
    "train_step_s.ours.grad_checkpointing",
    "train_step_s.ours.stock_gelu",
    "train_step_s.ours.torch_adamw",
    "vision_encoder_s.ours",
    "gen_tokens_per_s.b{b}.ours.hf_generate",
    "gen_tokens_per_s.b{b}.ours.forward_steps",
    "gen_tokens_per_s.b{b}.ours.full_prefill",
)

WORDS = (
    "the red circle sits left of a small blue square while a green triangle rests near the top edge and "
    "two yellow stars hide behind the large purple rectangle in the lower right corner of this picture"
).split()


# -- building --------------------------------------------------------------------------------------
def vision_config(shape: Shape) -> Dict[str, Any]:
    """The ``CLIPVisionConfig`` fields both sides are built with."""
    return dict(
        hidden_size=shape.vision_hidden,
        intermediate_size=4 * shape.vision_hidden,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        patch_size=shape.patch_size,
        image_size=shape.image_size,
        projection_dim=shape.vision_hidden,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def phi_config(shape: Shape) -> Dict[str, Any]:
    """The ``PhiConfig`` fields both sides are built with (Phi's defaults otherwise: gelu_new, partial rotary 0.5)."""
    return dict(
        hidden_size=shape.llm_hidden,
        intermediate_size=4 * shape.llm_hidden,
        num_hidden_layers=shape.llm_layers,
        num_attention_heads=shape.llm_heads,
        vocab_size=shape.vocab_size,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
    )


def build_ours(
    shape: Shape,
    attn: str = "sdpa",
    label_positions: bool = True,
    lean_generate: bool = True,
    fused_gelu: bool = True,
    seed: int = 0,
):
    """Our composition (``clip_vit`` -> ``mlp`` -> ``hf_causal_lm`` Phi) from config, random weights."""
    from omegaconf import OmegaConf

    from minigpt.models.composition.mllm import MultimodalLLM

    cfg = OmegaConf.create(
        {
            "template": "human_assistant",
            "max_txt_len": 512,
            "loss_on_label_positions": label_positions,
            "lean_generate": lean_generate,
            "vision_encoder": {
                "name": "clip_vit",
                "config": vision_config(shape),
                "select_layer": -2,
                "drop_cls": True,
                "freeze": True,
            },
            "projector": {"name": "mlp"},
            "llm": {
                "name": "hf_causal_lm",
                "config": {"model_type": "phi", **phi_config(shape)},
                "attn_implementation": attn,
                "fused_gelu": fused_gelu,
            },
        }
    )
    torch.manual_seed(seed)
    model = MultimodalLLM.from_config(cfg)
    model.vision_encoder.model.set_attn_implementation(attn)
    with torch.no_grad():
        model.llm.causal_lm.lm_head.bias.zero_()  # LLaVA's LM head has none
    return model


def token_ids(ours) -> Dict[str, int]:
    """The special token ids of ``ours`` that LLaVA is configured with."""
    tok = ours.tokenizer
    return {
        "pad": tok.pad_token_id,
        "bos": tok.bos_token_id,
        "eos": tok.eos_token_id,
        "image": ours.image_token_id,
    }


def build_llava(shape: Shape, ids: Dict[str, int], attn: str = "sdpa"):
    """transformers' LLaVA at ``shape`` with the token ids ``ids`` (its weights: see :func:`copy_weights`)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, PhiConfig

    text = PhiConfig(
        **phi_config(shape), pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"]
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision_config(shape)),
        text_config=text,
        image_token_id=ids["image"],
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=shape.num_patches,
        tie_word_embeddings=False,
    )
    config._attn_implementation = attn
    model = LlavaForConditionalGeneration(config)
    model.set_attn_implementation(attn)
    gen = model.generation_config  # what a checkpoint's generation_config.json would hold
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = ids["pad"], ids["bos"], ids["eos"]
    model.model.vision_tower.requires_grad_(False)  # the same trainable set as ours
    return model


def copy_weights(ours, llava) -> None:
    """Load every weight of ``ours`` into ``llava`` through the library's LLaVA weight map (strict).

    The map is the one ``export --format hf`` writes LLaVA folders with
    (:func:`minigpt.models.weights.hf_layouts.llava_state_dict`).
    """
    from minigpt.models.weights.export_state import export_state_dicts
    from minigpt.models.weights.hf_layouts import llava_state_dict

    state = llava_state_dict(export_state_dicts(ours, merge_lora=True)[0])
    with torch.no_grad():
        llava.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)


def attn_implementations(ours, llava) -> Dict[str, str]:
    """Which attention each part runs (``config._attn_implementation``)."""
    return {
        "ours.vision": ours.vision_encoder.model.config._attn_implementation,
        "ours.llm": ours.llm.causal_lm.config._attn_implementation,
        "llava.vision": llava.model.vision_tower.config._attn_implementation,
        "llava.llm": llava.model.language_model.config._attn_implementation,
    }


# -- inputs ----------------------------------------------------------------------------------------
def train_samples(shape: Shape, seed: int = 1) -> Dict[str, Any]:
    """A training batch in our sample schema: image-first instructions, answers of different lengths."""
    g = torch.Generator().manual_seed(seed)
    b = shape.train_batch
    instructions = [f"<Img><ImageHere></Img> [caption] {' '.join(WORDS[i : i + 6 + i])}" for i in range(b)]
    answers = [" ".join((WORDS * 4)[3 * i : 3 * i + shape.answer_words + 4 * i]) for i in range(b)]
    images = torch.randn(b, 3, shape.image_size, shape.image_size, generator=g)
    return {"image": images, "instruction_input": instructions, "answer": answers}


def gen_prompts(shape: Shape, batch: int, seed: int = 2) -> Tuple[torch.Tensor, List[str]]:
    """Images and prompts of different lengths for a generation batch."""
    g = torch.Generator().manual_seed(seed)
    prompts = [f"<Img><ImageHere></Img> [vqa] {' '.join(WORDS[i : i + 4 + i % 5])}?" for i in range(batch)]
    return torch.randn(batch, 3, shape.image_size, shape.image_size, generator=g), prompts


def llava_inputs(ours, instructions, answers, images) -> Dict[str, torch.Tensor]:
    """The token ids ours builds, as LLaVA's processor would hand them over (image slots expanded)."""
    if answers is None:
        b = ours.build_generation_inputs(instructions)
    else:
        b = ours.build_inputs(instructions, answers, ours.num_image_tokens())
    out = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "pixel_values": images}
    if answers is not None:
        out["labels"] = b["labels"]
    return out


# -- identity --------------------------------------------------------------------------------------
class IdentityError(RuntimeError):
    """The two models disagree: the timings would not compare like with like."""


@torch.no_grad()
def check_identity(ours, llava, samples: Dict[str, Any], tol: float = TOLERANCE) -> Dict[str, Any]:
    """Logits and loss of both sides on ``samples``; raises :class:`IdentityError` beyond ``tol``."""
    ours.eval()
    llava.eval()
    try:
        batch = ours.build_inputs(samples["instruction_input"], samples["answer"], ours.num_image_tokens())
        emb = ours.embed(batch, samples["image"])
        ours_logits = ours.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits
        inputs = llava_inputs(ours, samples["instruction_input"], samples["answer"], samples["image"])
        out = llava(**inputs)
        ours_loss = float(ours(samples)["loss"])
    finally:
        ours.train()
        llava.train()
    if ours_logits.shape != out.logits.shape:
        raise IdentityError(
            f"logits shapes differ: ours {tuple(ours_logits.shape)}, LLaVA {tuple(out.logits.shape)}"
        )
    valid = batch["attention_mask"].bool()
    diff = float((ours_logits - out.logits)[valid].abs().max())
    loss_diff = abs(ours_loss - float(out.loss))
    report = {
        "logits_shape": list(out.logits.shape),
        "max_abs_logit_diff": diff,
        "loss_ours": ours_loss,
        "loss_llava": float(out.loss),
        "abs_loss_diff": loss_diff,
        "tolerance": tol,
        "image_tokens": int(batch["media_mask"].sum()) // samples["image"].shape[0],
        "labelled_tokens": int((batch["labels"][:, 1:] != -100).sum()),
    }
    if not (diff <= tol and loss_diff <= tol):
        raise IdentityError(f"the two models disagree beyond {tol}: {report}")
    return report


# -- timing ----------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(
    fns: Dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int,
    device: torch.device,
    last: Optional[Dict[str, Any]] = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Dict[str, List[float]]:
    """Seconds of each function over ``repeats`` rounds, the functions taking turns within each round.

    ``last``, when given, receives each function's most recent return value; ``clock`` is one of :data:`CLOCKS`.
    """
    last = {} if last is None else last
    for _ in range(warmup):
        for key, fn in fns.items():
            last[key] = fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            _sync(device)
            t0 = clock()
            last[key] = fn()
            _sync(device)
            times[key].append(clock() - t0)
    return times


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU (both sides keep fp32 weights), nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trainer_default_optim() -> str:
    """The optimizer transformers' ``Trainer`` uses by default here (``TrainingArguments.optim``'s default)."""
    from transformers import TrainingArguments

    return str({f.name: f.default for f in dataclasses.fields(TrainingArguments)}["optim"])


def _trainer_adamw(model) -> torch.optim.Optimizer:
    """AdamW as transformers' ``Trainer`` builds it by default: fused for ``adamw_torch_fused`` (torch >= 2.8)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, fused=True if trainer_default_optim() == "adamw_torch_fused" else None)


def _ours_adamw(model, library: bool = True) -> torch.optim.Optimizer:
    """AdamW as the library's runner builds it (``minigpt.common.optims.adamw``); ``library=False``: torch's default."""
    from minigpt.common.optims import adamw

    params = [p for p in model.parameters() if p.requires_grad]
    return adamw(params, lr=1e-5) if library else torch.optim.AdamW(params, lr=1e-5)


def ours_train_step(model, samples: Dict[str, Any], library_adamw: bool = True) -> Callable[[], float]:
    """One full step of ``model`` (strings in, as training calls it: tokenisation is timed too).

    ``library_adamw=False`` is the "before" of the optimizer: torch's default AdamW (one operation
    per tensor at a time) instead of the runner's fused one.
    """
    opt = _ours_adamw(model, library_adamw)
    model.train()

    def step() -> float:
        loss = model(samples)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def llava_train_step(model, inputs: Dict[str, torch.Tensor], device: torch.device) -> Callable[[], float]:
    """One full step of LLaVA on ready token ids (its processor runs in the data loader, untimed).

    Its optimizer is the one transformers' ``Trainer`` would build by default (:func:`_trainer_adamw`).
    """
    opt = _trainer_adamw(model)
    model.train()

    def step() -> float:
        with autocast_for(device):
            loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def bare_lm(shape: Shape, ours, attn: str = "sdpa"):
    """A plain transformers Phi causal LM with the same config as both sides' LLM."""
    from transformers import PhiConfig, PhiForCausalLM

    tok = ours.tokenizer
    cfg = PhiConfig(**phi_config(shape), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    cfg._attn_implementation = attn
    torch.manual_seed(3)
    return PhiForCausalLM(cfg)


def bare_lm_step(lm, inputs: Dict[str, torch.Tensor], device: torch.device) -> Callable[[], float]:
    """The bare LM's step on token ids of the same ``[B, T]`` (labels on the same positions)."""
    opt = _trainer_adamw(lm)
    lm.train()
    ids = inputs["input_ids"].clamp(max=lm.config.vocab_size - 1)
    kwargs = {"input_ids": ids, "attention_mask": inputs["attention_mask"], "labels": inputs["labels"]}

    def step() -> float:
        with autocast_for(device):
            loss = lm(**kwargs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def vision_forward(tower, images: torch.Tensor, device: torch.device) -> Callable[[], None]:
    """The frozen vision tower's own forward on the batch's images (every block, as LLaVA runs it)."""

    def run() -> None:
        with torch.no_grad(), autocast_for(device):
            tower(pixel_values=images, output_hidden_states=True)

    return run


def encoder_forward(encoder, images: torch.Tensor, device: torch.device) -> Callable[[], None]:
    """Ours' vision encoder (``clip_vit``) on the batch's images: the blocks up to ``select_layer`` only."""

    def run() -> None:
        with torch.no_grad(), autocast_for(device):
            encoder(images)

    return run


def ours_generate(
    model, images, prompts, new_tokens: int, lean: bool = True, fused_step: bool = True, lean_prefill: bool = True
) -> Callable[[], Any]:
    """Greedy generation of exactly ``new_tokens`` per prompt (EOS held off, no stop strings).

    ``lean=False`` is the "before" path: transformers' ``generate`` instead of ours' decode loop;
    ``fused_step=False`` runs the loop's steps through the model's forward instead of the fused Phi step;
    ``lean_prefill=False`` runs the prompt through the model's forward (the last layer at every position).
    """

    def run():
        saved = model.lean_generate, model.fused_decode_step, model.lean_prefill
        model.lean_generate, model.fused_decode_step, model.lean_prefill = lean, fused_step, lean_prefill
        try:
            return model.generate(
                images, prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, stop_strings=[]
            )
        finally:
            model.lean_generate, model.fused_decode_step, model.lean_prefill = saved

    return run


def llava_generate(model, inputs: Dict[str, torch.Tensor], new_tokens: int, device: torch.device):
    """LLaVA's ``generate``, greedy, exactly ``new_tokens`` per prompt."""

    def run():
        with torch.no_grad(), autocast_for(device):
            return model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )

    return run


def matmul_peak_gflops(
    device: torch.device, n: int = 2048, repeats: int = 6, clock: Callable[[], float] = time.perf_counter
) -> float:
    """The best rate of an ``n x n`` matmul: fp32 on CPU, bf16 on a GPU (the precision each side computes in)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        n = max(n, 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = clock()
        torch.mm(a, b)
        _sync(device)
        best = min(best, clock() - t0)
    return 2 * n**3 / best / 1e9


MATMUL_ROUND_REPEATS = 3  # torch.mm calls in each training round's peak measurement


def matmul_round(device: torch.device, n: int = 2048) -> Tuple[Callable[[], None], float]:
    """A fixed matmul workload to time beside the training steps, and its FLOPs.

    :func:`alternate` runs it in every round between ours' and LLaVA's steps, under the same clock,
    so each round's MFU divides by the matmul rate the machine gave in that round (a neighbour that
    slows the steps slows the peak too); fp32 on CPU, bf16 on a GPU, as in :func:`matmul_peak_gflops`.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        n = max(n, 8192)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(MATMUL_ROUND_REPEATS):
            torch.mm(a, b)

    return run, float(MATMUL_ROUND_REPEATS * 2 * n**3)


def round_mfu(step_flops: float, step_times: Sequence[float], mm_flops: float, mm_times: Sequence[float]) -> float:
    """The median over rounds of (step FLOPs / step time) / (matmul FLOPs / matmul time), both from one round."""
    return median([(step_flops / t) / (mm_flops / m) for t, m in zip(step_times, mm_times)])


# -- FLOPs -----------------------------------------------------------------------------------------
def train_step_flops(shape: Shape, batch: int, seq_len: int) -> Dict[str, float]:
    """Model FLOPs of one training step, counted analytically (multiply-add = 2 FLOPs).

    Matmuls only (norms, activations, softmax and the optimizer are left out). Per layer and token:
    the q/k/v/out projections 8·D², the MLP 4·D·I, attention 4·T·D (QKᵀ and AV over the whole
    padded length, as SDPA computes them with a padding mask). The vision tower (all its layers,
    class token included, patch embedding as a matmul) runs forward only: it is frozen. The
    projector costs forward + weight gradients (2×: its input needs no gradient); the LM forward +
    backward (3×), the LM head at every position, as a standard causal LM computes it. Both sides
    are credited with the same count, so MFU compares their time at equal work.
    """
    vc, lc = vision_config(shape), phi_config(shape)
    dv, iv, tv = vc["hidden_size"], vc["intermediate_size"], shape.num_patches + 1
    vision = vc["num_hidden_layers"] * (tv * (8 * dv * dv + 4 * dv * iv) + 4 * tv * tv * dv)
    vision += 2 * shape.num_patches * 3 * shape.patch_size**2 * dv
    d, i, t = lc["hidden_size"], lc["intermediate_size"], seq_len
    projector = 2 * shape.num_patches * (dv * d + d * d)
    body = lc["num_hidden_layers"] * (t * (8 * d * d + 4 * d * i) + 4 * t * t * d)
    head = 2 * t * d * shape.vocab_size
    per_sample = {"vision": vision, "projector": 2 * projector, "lm_body": 3 * body, "lm_head": 3 * head}
    out = {k: float(v * batch) for k, v in per_sample.items()}
    out["total"] = sum(out.values())
    return out


# -- memory (child processes) ------------------------------------------------------------------------
def memory_child(side: str, shape: Shape, inputs_file: str, steps: int = 2) -> Dict[str, Any]:
    """Peak memory of one side: build, ``steps`` training steps, one generation at the largest batch.

    Only ``side``'s model is ever built here; LLaVA's token ids come from ``inputs_file`` (written by
    the parent with ``torch.save``), so its peak holds no trace of ours.
    """
    from transformers import LlavaForConditionalGeneration  # noqa: F401 - both sides import the same

    from minigpt.models.composition.mllm import MultimodalLLM  # noqa: F401

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    saved = torch.load(inputs_file, weights_only=True)
    gc.collect()
    rss_start = peak_rss_mb()
    images, prompts = gen_prompts(shape, max(shape.gen_batches))
    if side == "llava":
        model = build_llava(shape, saved["token_ids"]).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = llava_train_step(model, {k: v.to(device) for k, v in saved["train"].items()}, device)
        generate = llava_generate(
            model, {k: v.to(device) for k, v in saved["gen"].items()}, shape.new_tokens, device
        )
    else:
        model = build_ours(shape).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        samples = train_samples(shape)
        step = ours_train_step(model, {**samples, "image": samples["image"].to(device)})
        generate = ours_generate(model, images.to(device), prompts, shape.new_tokens)
    for _ in range(steps):
        step()
    model.eval()
    generate()
    out = {"side": side, "rss_after_imports_mb": round(rss_start, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if device.type == "cuda":
        out["peak_gpu_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def measure_memory(size: str, ours) -> Dict[str, Dict[str, Any]]:
    """:func:`memory_child` of each side in a fresh Python process of its own, so the peaks do not mix.

    The two processes run at the same time (a peak RSS is per process); LLaVA's inputs are
    ``ours``' token ids, saved for the children to load.
    """
    import tempfile

    shape = SHAPES[size]
    samples = train_samples(shape)
    images, prompts = gen_prompts(shape, max(shape.gen_batches))
    train = llava_inputs(ours, samples["instruction_input"], samples["answer"], samples["image"])
    saved = {"token_ids": token_ids(ours), "train": train, "gen": llava_inputs(ours, prompts, None, images)}
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench_llava_") as tmp:
        inputs_file = os.path.join(tmp, "inputs.pt")
        torch.save(saved, inputs_file)
        procs = {
            side: subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--memory-child", side, "--size", size]
                + ["--inputs", inputs_file],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for side in ("ours", "llava")
        }
        for side, proc in procs.items():
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"memory child for {side} failed:\n{stderr[-3000:]}")
            out[side] = json.loads(stdout.strip().splitlines()[-1])
    return out


# -- the run -----------------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float], digits: int = 3) -> str:
    """The scatter of per-round values: their median, quartiles (IQR) and range, and how many rounds."""
    xs = sorted(xs)
    q1, q3 = (statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else xs * 3)[::2]
    r = lambda x: f"{x:.{digits}f}"  # noqa: E731
    return f"per round: median {r(median(xs))}, IQR {r(q1)}-{r(q3)}, range {r(xs[0])}-{r(xs[-1])}, {len(xs)} round{'s' if len(xs) != 1 else ''}"


def round_ratios(num: Sequence[float], den: Sequence[float]) -> List[float]:
    """``num[i] / den[i]`` for each alternating round ``i``: both sides timed back to back, under the same load."""
    return [a / b for a, b in zip(num, den)]


def run(
    size: str = "cpu",
    repeats: int = 7,
    gen_repeats: int = 15,
    warmup: int = 1,
    with_memory: bool = True,
    with_data: bool = True,
    with_compile: bool = False,
    data_images: int = 512,
    data_batches: int = 10,
    clock: str = "wall",
) -> Dict[str, Any]:
    """Everything the module docstring lists; returns the results object (not written).

    ``clock="cpu"`` times with this process's CPU time (see :data:`CLOCKS`); it needs a CPU run
    with one torch thread, where CPU time is the time the work took on its core.
    """
    shape = SHAPES[size]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ValueError(
            f"clock 'cpu' counts one thread's CPU time: run on a CPU with one torch thread "
            f"(OMP_NUM_THREADS=1); here device {device.type}, {torch.get_num_threads()} threads"
        )
    tick = CLOCKS[clock]
    machine = machine_info(device)
    t_start = time.perf_counter()
    raw: Dict[str, Any] = {"size": size, "shape": dataclasses.asdict(shape), "repeats": repeats, "clock": clock}
    raw["threads"] = torch.get_num_threads()
    raw["trainable_set"] = "vision tower frozen; projector and LLM trained (AdamW, lr 1e-5), both sides"
    raw["optimizer"] = {
        "ours": "minigpt.common.optims.adamw (fused where every parameter allows)",
        "llava": f"transformers Trainer default optim={trainer_default_optim()}",
    }

    phases: Dict[str, float] = {}
    raw["phase_s"] = phases
    t_phase = time.perf_counter()
    peak_before = matmul_peak_gflops(device, shape.matmul_n, clock=tick)

    ours = build_ours(shape)
    llava = build_llava(shape, token_ids(ours))
    copy_weights(ours, llava)
    samples = train_samples(shape)
    raw["identity"] = check_identity(ours, llava, samples)
    raw["attn_implementation"] = attn_implementations(ours, llava)
    ours.to(device)
    llava.to(device)
    samples = {**samples, "image": samples["image"].to(device)}
    train_in = {
        k: v.to(device)
        for k, v in llava_inputs(
            ours, samples["instruction_input"], samples["answer"], samples["image"]
        ).items()
    }
    seq_len = int(train_in["input_ids"].shape[1])
    raw["train_batch_shape"] = list(train_in["input_ids"].shape)
    raw["params"] = {
        "ours_trainable": sum(p.numel() for p in ours.parameters() if p.requires_grad),
        "llava_trainable": sum(p.numel() for p in llava.parameters() if p.requires_grad),
        "ours_total": sum(p.numel() for p in ours.parameters()),
        "llava_total": sum(p.numel() for p in llava.parameters()),
    }

    # before/after variants of ours: the same weights, one optimisation off each
    full_logits = build_ours(shape, label_positions=False).to(device)
    eager = build_ours(shape, attn="eager").to(device)
    ckpt = build_ours(shape).to(device)
    stock_gelu = build_ours(shape, fused_gelu=False).to(device)
    torch_adamw = build_ours(shape).to(device)
    for variant in (full_logits, eager, ckpt, stock_gelu, torch_adamw):
        variant.load_state_dict(ours.state_dict())
    from minigpt.runners.runner_iter import enable_grad_checkpointing

    raw["grad_checkpointing_parts"] = enable_grad_checkpointing(ckpt)
    lm = bare_lm(shape, ours).to(device)
    mm_run, mm_flops = matmul_round(device, shape.matmul_n)
    steps = {
        "ours": ours_train_step(ours, samples),
        "matmul_peak": mm_run,  # between the two sides in every round: the MFU's denominator
        "llava": llava_train_step(llava, train_in, device),
        "bare_lm": bare_lm_step(lm, train_in, device),
        "vision_tower": vision_forward(ours.vision_encoder.model, samples["image"], device),
        "vision_encoder.ours": encoder_forward(ours.vision_encoder, samples["image"], device),
        "ours.full_logits": ours_train_step(full_logits, samples),
        "ours.eager": ours_train_step(eager, samples),
        "ours.grad_checkpointing": ours_train_step(ckpt, samples),
        "ours.stock_gelu": ours_train_step(stock_gelu, samples),
        "ours.torch_adamw": ours_train_step(torch_adamw, samples, library_adamw=False),
    }
    if with_compile:
        compiled = build_ours(shape).to(device)
        compiled.load_state_dict(ours.state_dict())
        compiled.llm.model = torch.compile(compiled.llm.model, dynamic=False)
        t0 = time.perf_counter()
        step_c = ours_train_step(compiled, samples)
        step_c()
        raw["compile_first_step_s"] = round(time.perf_counter() - t0, 1)
        steps["ours.compiled"] = step_c
    phases["build_and_check"] = round(time.perf_counter() - t_phase, 1)
    t_phase = time.perf_counter()
    train_times = alternate(steps, repeats, warmup, device, clock=tick)
    phases["train"] = round(time.perf_counter() - t_phase, 1)
    peak_mid = matmul_peak_gflops(device, shape.matmul_n, clock=tick)
    raw["train_step_s"] = train_times
    med = {k: median(v) for k, v in train_times.items()}
    denom = med["bare_lm"] + med["vision_tower"]

    flops = train_step_flops(shape, shape.train_batch, seq_len)
    raw["train_flops"] = flops
    del full_logits, eager, ckpt, stock_gelu, torch_adamw, lm, steps
    gc.collect()

    # generation
    ours.eval()
    llava.eval()
    gen: Dict[str, Any] = {}
    for b in shape.gen_batches:
        images, prompts = gen_prompts(shape, b)
        images = images.to(device)
        g_in = {k: v.to(device) for k, v in llava_inputs(ours, prompts, None, images).items()}
        fns = {
            "ours": ours_generate(ours, images, prompts, shape.new_tokens),
            "llava": llava_generate(llava, g_in, shape.new_tokens, device),
            "ours.hf_generate": ours_generate(ours, images, prompts, shape.new_tokens, lean=False),
            "ours.forward_steps": ours_generate(ours, images, prompts, shape.new_tokens, fused_step=False),
            "ours.full_prefill": ours_generate(ours, images, prompts, shape.new_tokens, lean_prefill=False),
        }
        t_phase = time.perf_counter()
        outputs: Dict[str, Any] = {}
        times = alternate(fns, gen_repeats, warmup, device, last=outputs, clock=tick)
        ours_text = outputs["ours"]
        llava_ids = outputs["llava"][:, g_in["input_ids"].shape[1] :]
        llava_text = [
            ours.template.cut_at_stop(t, [])
            for t in ours.tokenizer.batch_decode(llava_ids, skip_special_tokens=True)
        ]
        gen[f"b{b}"] = {
            "times_s": times,
            "tokens": b * shape.new_tokens,
            "prompt_len": int(g_in["input_ids"].shape[1]),
            "same_text_as_llava": ours_text == llava_text,
            "same_text_as_hf_generate": ours_text == outputs["ours.hf_generate"],
            "same_text_as_forward_steps": ours_text == outputs["ours.forward_steps"],
            "same_text_as_full_prefill": ours_text == outputs["ours.full_prefill"],
        }
        phases[f"generate_b{b}"] = round(time.perf_counter() - t_phase, 1)
    raw["generation"] = gen

    t_phase = time.perf_counter()
    memory = measure_memory(size, ours) if with_memory else None
    phases["memory"] = round(time.perf_counter() - t_phase, 1)
    raw["memory"] = memory
    peak_after = matmul_peak_gflops(device, shape.matmul_n, clock=tick)
    # other processes on a shared machine lower any one measurement: the best of three stands for the peak
    peak = max(peak_before, peak_mid, peak_after)
    raw["matmul_peak_gflops"] = {"before": peak_before, "after_training": peak_mid, "end": peak_after}
    mm_times = train_times["matmul_peak"]
    round_peaks = [mm_flops / t / 1e9 for t in mm_times]
    raw["matmul_peak_gflops"]["training_rounds"] = round_peaks
    raw["mfu_rounds"] = {
        side: [(flops["total"] / t) / (mm_flops / m) for t, m in zip(train_times[side], mm_times)]
        for side in ("ours", "llava")
    }

    data = None
    t_phase = time.perf_counter()
    if with_data:
        from benchmarks import bench_data_pipeline

        data = bench_data_pipeline.run(
            n_images=data_images,
            shard_size=128,
            batch_size=32,
            batches=data_batches,
            warmup=2,
            builders=("coco_caption",),
        )
        raw["data_pipeline"] = data
        phases["data_pipeline"] = round(time.perf_counter() - t_phase, 1)
    raw["wall_s"] = round(time.perf_counter() - t_start, 1)
    # with the caption's load when the run started: how busy the machine was over the run
    raw["load_avg_1m_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None

    # -- rows ----------------------------------------------------------------------------------
    prec = "bf16 autocast" if device.type == "cuda" else "fp32"
    prec += f", {clock} clock, {raw['threads']} thread{'s' if raw['threads'] != 1 else ''}"
    b, t = shape.train_batch, seq_len
    rows = [
        row("train_step_s.ours", round(med["ours"], 4), "s", f"batch {b} x {t} tokens, {prec}"),
        row("train_step_s.llava", round(med["llava"], 4), "s", f"batch {b} x {t} tokens, {prec}"),
        row(
            "train_step_ratio",
            round(med["ours"] / med["llava"], 3),
            "ours / LLaVA",
            "<= 1.0: ours is faster; " + spread(round_ratios(train_times["ours"], train_times["llava"])),
        ),
        row("bare_lm_step_s", round(med["bare_lm"], 4), "s", "plain Phi causal LM, same [B, T], labels"),
        row("vision_tower_s", round(med["vision_tower"], 4), "s", "CLIP tower forward, no grad, every block (LLaVA's)"),
        row(
            "wrapper_overhead.ours",
            round(med["ours"] / denom, 3),
            "x",
            "step / (bare LM step + vision tower)",
        ),
        row(
            "wrapper_overhead.llava",
            round(med["llava"] / denom, 3),
            "x",
            "step / (bare LM step + vision tower)",
        ),
    ]
    for bsz in shape.gen_batches:
        gi = gen[f"b{bsz}"]
        tps = {k: gi["tokens"] / median(v) for k, v in gi["times_s"].items()}
        rows += [
            row(
                f"gen_tokens_per_s.b{bsz}.ours",
                round(tps["ours"], 1),
                "tokens/s",
                f"greedy, {shape.new_tokens} new",
            ),
            row(
                f"gen_tokens_per_s.b{bsz}.llava",
                round(tps["llava"], 1),
                "tokens/s",
                f"greedy, {shape.new_tokens} new",
            ),
            row(
                f"gen_tokens_per_s_ratio.b{bsz}",
                round(tps["ours"] / tps["llava"], 3),
                "ours / LLaVA",
                f">= 1.0: ours is faster; same text: {gi['same_text_as_llava']}; "
                + spread(round_ratios(gi["times_s"]["llava"], gi["times_s"]["ours"])),
            ),
        ]
    if memory is not None:
        key = "peak_gpu_allocated_mb" if device.type == "cuda" else "peak_rss_mb"
        what = "max_memory_allocated" if device.type == "cuda" else "peak RSS"
        for side in ("ours", "llava"):
            m = memory[side]
            rows.append(
                row(
                    f"peak_memory_mb.{side}",
                    m[key],
                    "MiB",
                    f"{what}, own process: build, 2 train steps, generate at batch {max(shape.gen_batches)} "
                    f"(RSS after imports {m['rss_after_imports_mb']} MiB)",
                )
            )
    gf = flops["total"] / 1e9
    rows += [
        row(
            "matmul_peak_gflops",
            round(median(round_peaks), 1),
            "GFLOP/s",
            f"median over the training rounds of {MATMUL_ROUND_REPEATS} {shape.matmul_n}^2 torch.mm timed between "
            f"ours' and LLaVA's steps, same clock, {prec} (best of three separate points: {peak:.1f})",
        ),
        row(
            "mfu.ours",
            round(round_mfu(flops["total"], train_times["ours"], mm_flops, mm_times), 3),
            "",
            f"{gf:.1f} GFLOP per step / step time / the same round's matmul rate; " + spread(raw["mfu_rounds"]["ours"]),
        ),
        row(
            "mfu.llava",
            round(round_mfu(flops["total"], train_times["llava"], mm_flops, mm_times), 3),
            "",
            f"{gf:.1f} GFLOP per step / step time / the same round's matmul rate; " + spread(raw["mfu_rounds"]["llava"]),
        ),
    ]
    # before/after of the optimisations
    rows += [
        row(
            "train_step_s.ours.full_logits",
            round(med["ours.full_logits"], 4),
            "s",
            f"before: LM head at every position ({med['ours.full_logits'] / med['ours']:.2f}x the label-positions step)",
        ),
        row(
            "train_step_s.ours.eager",
            round(med["ours.eager"], 4),
            "s",
            f"before: eager attention ({med['ours.eager'] / med['ours']:.2f}x the SDPA step)",
        ),
        row(
            "train_step_s.ours.grad_checkpointing",
            round(med["ours.grad_checkpointing"], 4),
            "s",
            f"run.grad_checkpointing on ({med['ours.grad_checkpointing'] / med['ours']:.2f}x; trades time for memory)",
        ),
    ]
    rows += [
        row(
            "train_step_s.ours.stock_gelu",
            round(med["ours.stock_gelu"], 4),
            "s",
            f"before: transformers' gelu_new module, llm.fused_gelu false ({med['ours.stock_gelu'] / med['ours']:.2f}x)",
        ),
        row(
            "train_step_s.ours.torch_adamw",
            round(med["ours.torch_adamw"], 4),
            "s",
            f"before: torch's default AdamW, not the runner's fused one ({med['ours.torch_adamw'] / med['ours']:.2f}x)",
        ),
        row(
            "vision_encoder_s.ours",
            round(med["vision_encoder.ours"], 4),
            "s",
            f"ours' clip_vit forward, blocks up to select_layer -2 only ({med['vision_encoder.ours'] / med['vision_tower']:.2f}x "
            "vision_tower_s, the before)",
        ),
    ]
    if "ours.compiled" in med:
        rows.append(
            row(
                "train_step_s.ours.compiled",
                round(med["ours.compiled"], 4),
                "s",
                f"torch.compile on the LLM ({med['ours.compiled'] / med['ours']:.2f}x; first step "
                f"{raw['compile_first_step_s']} s)",
            )
        )
    for bsz in shape.gen_batches:
        gi = gen[f"b{bsz}"]
        hf = gi["tokens"] / median(gi["times_s"]["ours.hf_generate"])
        lean = gi["tokens"] / median(gi["times_s"]["ours"])
        rows.append(
            row(
                f"gen_tokens_per_s.b{bsz}.ours.hf_generate",
                round(hf, 1),
                "tokens/s",
                f"before: transformers' generate ({lean / hf:.2f}x faster with ours' decode loop; "
                f"same text: {gi['same_text_as_hf_generate']})",
            )
        )
        steps_fwd = gi["tokens"] / median(gi["times_s"]["ours.forward_steps"])
        rows.append(
            row(
                f"gen_tokens_per_s.b{bsz}.ours.forward_steps",
                round(steps_fwd, 1),
                "tokens/s",
                f"before: ours' loop with every step through the model's forward ({lean / steps_fwd:.2f}x "
                f"faster with the fused Phi step; same text: {gi['same_text_as_forward_steps']})",
            )
        )
        full = gi["tokens"] / median(gi["times_s"]["ours.full_prefill"])
        rows.append(
            row(
                f"gen_tokens_per_s.b{bsz}.ours.full_prefill",
                round(full, 1),
                "tokens/s",
                f"before: the prompt's last layer at every position, model.lean_prefill off ({lean / full:.2f}x "
                f"faster with phi_prefill; same text: {gi['same_text_as_full_prefill']}; "
                + spread(round_ratios(gi["times_s"]["ours.full_prefill"], gi["times_s"]["ours"]), 2)
                + ")",
            )
        )
    if data is not None:
        for r in data["results"]:
            rows.append(
                row(
                    f"data_pipeline.{r['builder']}.workers{r['num_workers']}",
                    r["samples_per_s"],
                    "samples/s",
                    f"{data['n_images']} images, batch {data['batch_size']}, {r['timed_samples']} timed",
                )
            )
    return results(NAME, machine, rows, raw)


def expand_required(shape: Shape) -> List[str]:
    """:data:`REQUIRED_METRICS` with ``{b}`` filled in for each generation batch size of ``shape``."""
    out = []
    for m in REQUIRED_METRICS:
        out.extend(m.format(b=b) for b in shape.gen_batches) if "{b}" in m else out.append(m)
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="cpu", choices=sorted(SHAPES))
    p.add_argument("--repeats", type=int, default=7, help="alternating timed rounds per training figure")
    p.add_argument(
        "--gen-repeats", type=int, default=15, help="alternating timed rounds per generation figure"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones")
    p.add_argument(
        "--compile", action="store_true", help="also time torch.compile on the LLM (slow first step)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the two memory child processes")
    p.add_argument("--no-data", action="store_true", help="skip the data-pipeline figures")
    p.add_argument("--data-images", type=int, default=512)
    p.add_argument(
        "--out", default=None, help="results file (default benchmarks/results/bench_vs_llava.json)"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall: wall-clock seconds; cpu: this process's CPU seconds (one thread, a shared machine)",
    )
    p.add_argument("--memory-child", choices=("ours", "llava"), help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, SHAPES[args.size], args.inputs)))
        return {}
    report = run(
        args.size,
        repeats=args.repeats,
        gen_repeats=args.gen_repeats,
        warmup=args.warmup,
        with_memory=not args.no_memory,
        with_data=not args.no_data,
        with_compile=args.compile,
        data_images=args.data_images,
        clock=args.clock,
    )
    print(json.dumps(report, indent=2))
    if not args.no_write:
        write_results(report, args.out)
    return report


if __name__ == "__main__":
    main()
