"""Generation helpers the model and the chat share: stop handling on the model's own tokenizer, streaming.

Stopping uses the ids and strings of the tokenizer the model actually has: its EOS id and the
template's stop strings, which transformers' ``StopStringCriteria`` matches on that tokenizer's
vocabulary (a stop string may be split over several tokens or share a token with other text).
TinyGPT-V's demo stopped on the LLaMA id ``2``, which in Phi-2's vocabulary is ``#``.

:func:`decode` is the greedy/sampling loop ``MultimodalLLM.generate`` uses instead of transformers'
``generate`` when it can (no beams, settings it implements): the same tokens, one causal-LM call
for the prompt, then per new token the fused Phi step (:mod:`~minigpt.models.generation.phi_step`)
where it applies, else one causal-LM call with the KV cache, and a few tensor operations.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from torch import nn
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicCache

from minigpt.models.composition.layout import position_ids_from_mask
from minigpt.models.generation.kv_cache import cache_keyword, preallocated_cache

# keyword arguments of transformers' generate that decode() implements as generate does
DECODE_KWARGS = frozenset({"min_new_tokens", "top_k", "logits_processor", "stopping_criteria"})

# GenerationConfig fields decode() does not implement, with the values that switch them off; a model whose
# generation config sets another value is decoded by transformers' generate
_UNSUPPORTED_CONFIG = {
    "min_length": (None, 0),
    "min_p": (None,),
    "top_h": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "encoder_repetition_penalty": (None, 1.0),
    "bad_words_ids": (None,),
    "sequence_bias": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "guidance_scale": (None, 1.0),
    "renormalize_logits": (None, False),
    "remove_invalid_values": (None, False),
    "watermarking_config": (None,),
    "max_time": (None,),
    "prefill_chunk_size": (None,),
    "cache_implementation": (None, "dynamic"),
    "compile_config": (None,),
}


class CancelCriteria(StoppingCriteria):
    """Ends every sequence once ``event`` is set: a streamed generation the reader abandoned stops early."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _stop_start(text: str, stops: Sequence[str]) -> tuple[int, bool]:
    """Where the earliest stop string (complete, or begun at the very end) starts; whether it is complete."""
    full = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if full >= 0:
        return full, True
    start = len(text)
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):  # the longest partial match starts earliest
            if text.endswith(s[:n]):
                start = min(start, len(text) - n)
                break
    return start, False


def trim_stream(pieces: Iterable[str], stop_strings: Sequence[str]) -> Iterator[str]:
    """The pieces of a streamed answer, cut where a stop string starts and stripped like the full answer.

    ``"".join(trim_stream(p, stops)) == cut_at_stop("".join(p), stops)``: text that may still turn
    into a stop string, and trailing whitespace, are held back until the following text decides.
    """
    stops = [s for s in stop_strings if s]
    text, sent = "", 0  # everything received; characters of the stripped answer already yielded
    for piece in pieces:
        text += piece
        end, complete = _stop_start(text, stops)
        settled = text[:end].strip()
        if len(settled) > sent:
            yield settled[sent:]
            sent = len(settled)
        if complete:
            return
    end, complete = _stop_start(text, stops)
    final = (text[:end] if complete else text).strip()  # a stop string begun but never finished is text
    if len(final) > sent:
        yield final[sent:]


def stream_in_thread(
    run: Callable[[Dict[str, Any]], Any],
    generate_kwargs: Dict[str, Any],
    tokenizer: Any,
    stop_strings: Sequence[str],
    timeout: Optional[float] = None,
) -> Iterator[str]:
    """Run ``run(generate_kwargs)`` (transformers' ``generate``) in a thread; yield its answer's text pieces.

    The pieces come from a ``TextIteratorStreamer`` through :func:`trim_stream`. An error in the
    thread is raised here; closing the iterator early stops the generation at its next token.
    """
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
    cancel = threading.Event()
    criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", None) or [])
    criteria.append(CancelCriteria(cancel))
    kwargs = {**generate_kwargs, "streamer": streamer, "stopping_criteria": criteria}
    errors: List[BaseException] = []

    def target() -> None:
        try:
            run(kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread, which re-raises it
            errors.append(e)
            streamer.end()

    ended = False

    def received() -> Iterator[str]:
        nonlocal ended
        yield from streamer
        ended = True  # the end signal is consumed; iterating the streamer again would wait forever

    thread = threading.Thread(target=target, name="minigpt-generate", daemon=True)
    thread.start()
    try:
        yield from trim_stream(received(), stop_strings)
    finally:
        cancel.set()
        if not ended:
            for _ in streamer:  # the generation stops at its next token; read up to its end signal
                pass
        thread.join()
    if errors:
        raise errors[0]


def generation_setting(generation_config: Any, name: str) -> Any:
    """The value transformers' ``generate`` uses for ``name``: the config's, else its global default.

    ``generate`` fills fields a model's ``GenerationConfig`` leaves unset from library-wide
    defaults (``top_k`` 50, for one), so a loop that wants its tokens must read them the same way.
    """
    value = getattr(generation_config, name, None)
    if value is None:
        defaults = getattr(type(generation_config), "_get_default_generation_params", None)
        if callable(defaults):
            value = defaults().get(name)
    return value


def decode_unsupported(generation_config: Any, generate_kwargs: Dict[str, Any]) -> Optional[str]:
    """Why :func:`decode` cannot stand in for transformers' ``generate`` here, or None when it can.

    ``generation_config`` is the causal LM's ``GenerationConfig`` (a checkpoint may set defaults
    there); ``generate_kwargs`` are the extra arguments a caller passed for ``generate``.
    """
    extra = sorted(set(generate_kwargs) - DECODE_KWARGS)
    if extra:
        return f"arguments {extra}"
    for field, neutral in _UNSUPPORTED_CONFIG.items():
        value = generation_setting(generation_config, field)
        if value not in neutral:
            return f"generation_config.{field}={value!r}"
    return None


class HoldOffEos(LogitsProcessor):
    """EOS ids score ``-inf`` until a row has ``min_new_tokens`` tokens: transformers' ``MinNewTokensLengthLogitsProcessor``.

    The same scores as transformers' (with no prompt ids to skip, as in :func:`decode`), written in
    place into the loop's own copy of the logits instead of a clone and a vocabulary-wide mask each step.
    """

    def __init__(self, min_new_tokens: int, eos_ids: torch.Tensor) -> None:
        self.min_new_tokens = int(min_new_tokens)
        self.eos_ids = eos_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.min_new_tokens:
            scores.index_fill_(-1, self.eos_ids, -float("inf"))
        return scores


def _processors(
    do_sample: bool,
    temperature: float,
    top_k: Optional[int],
    top_p: float,
    repetition_penalty: float,
    min_new_tokens: int,
    eos_ids: torch.Tensor,
    extra: Optional[Sequence[Any]],
) -> LogitsProcessorList:
    """transformers' processors for these settings, in the order its ``generate`` applies them."""
    procs = LogitsProcessorList()
    if repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if min_new_tokens > 0:
        procs.append(HoldOffEos(min_new_tokens, eos_ids))
    procs.extend(extra or [])
    if do_sample:
        if temperature != 1.0:
            procs.append(TemperatureLogitsWarper(temperature))
        if top_k:
            procs.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p=top_p))
    return procs


@torch.no_grad()
def decode(
    llm: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    min_new_tokens: int = 0,
    logits_processor: Optional[Sequence[Any]] = None,
    stopping_criteria: Optional[Sequence[StoppingCriteria]] = None,
    preallocate: bool = True,
    fused_step: bool = True,
    lean_prefill: bool = True,
) -> torch.LongTensor:
    """Greedy or sampled continuation of left-padded prompt embeddings with the KV cache: ``[B, n_new]`` ids.

    ``llm`` is called like a transformers causal LM (``inputs_embeds`` or ``input_ids``,
    ``attention_mask``, ``position_ids``, ``past_key_values``, ``use_cache``, ``logits_to_keep``).
    A row stops at a token in ``eos_token_ids`` or when a criterion of ``stopping_criteria`` (e.g.
    transformers' ``StopStringCriteria``) says so; finished rows are padded with ``pad_token_id``;
    the loop ends when every row is finished or after ``max_new_tokens``. Positions, masks,
    processors and the sampling draw are transformers' ``generate``'s for ``inputs_embeds``
    prompts, so the ids are the ones it returns (sampling from the same torch generator state).
    One difference: ``repetition_penalty`` applies to every generated token of a row, where
    ``generate`` skips as many of them as the row has left padding. ``preallocate`` keeps the KV
    cache in buffers sized for the prompt plus ``max_new_tokens`` (:func:`preallocated_cache`)
    instead of transformers' growing one: the same values, without copying the cache every step.
    The loop keeps the cache object it passes in (no output is asked for it), and for a padded
    batch under SDPA attention it hands each step its ``[B, 1, 1, keys]`` boolean mask as a slice of
    one built before the loop: the mask transformers would build from the 2-D mask at every step
    (for the fused step, the additive 0 / -inf mask SDPA would make of it: the same scores).
    ``fused_step`` runs the steps after the prompt through :class:`~minigpt.models.generation.phi_step.PhiDecodeStep`
    where it applies (a stock Phi with the preallocated cache): the same logits with fewer operations.
    Where it does, ``lean_prefill`` runs the prompt through :func:`~minigpt.models.generation.phi_step.phi_prefill`:
    the last layer's queries, attention and MLP at the last position only (the first token's logits
    within ~1e-6 of the forward's, the cache the same).
    """
    batch = inputs_embeds.shape[0]
    device = inputs_embeds.device
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    procs = _processors(
        do_sample, temperature, top_k, top_p, repetition_penalty, min_new_tokens, eos, logits_processor
    )
    criteria = StoppingCriteriaList(stopping_criteria or [])
    mask = attention_mask.to(device=device, dtype=torch.long)
    position_ids = position_ids_from_mask(mask)
    next_position = position_ids[:, -1:] + 1
    padded = bool((mask == 0).any())
    out_ids = torch.empty((batch, max_new_tokens), dtype=torch.long, device=device)  # written step by step
    ids = out_ids[:, :0]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    core = getattr(llm, "causal_lm", llm)
    config = getattr(core, "config", None)
    prompt_len = inputs_embeds.shape[1]
    capacity = prompt_len + max_new_tokens
    cache = None
    if config is not None:
        cache = preallocated_cache(config, capacity) if preallocate else None
        cache = cache if cache is not None else DynamicCache(config=config)
    cache_kw = cache_keyword(core)
    keys_mask = None
    if padded and cache is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        # [B, 1, 1, capacity], True where a key may be attended: the prompt's padding, then every new token
        keys_mask = torch.ones((batch, 1, 1, capacity), dtype=torch.bool, device=device)
        keys_mask[:, 0, 0, :prompt_len] = mask.bool()
    step_fn = None
    if fused_step and preallocate and cache is not None:
        from minigpt.models.generation.phi_step import PhiDecodeStep, phi_prefill, phi_step_blocker

        # hooks on a wrapper around the causal LM (``model.llm``) would be skipped too, as the causal LM's own
        wrapper_hooked = llm is not core and bool(llm._forward_hooks or llm._forward_pre_hooks)
        if not wrapper_hooked and phi_step_blocker(core, cache) is None:
            step_fn = PhiDecodeStep(core, cache, capacity + 1)
    if step_fn is not None and lean_prefill:
        logits = phi_prefill(core, inputs_embeds, mask if padded else None, position_ids, cache)
    else:
        out = llm(
            inputs_embeds=inputs_embeds,
            attention_mask=mask if padded else None,  # no padding: causal attention needs no mask
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{cache_kw: cache},
        )
        if cache is None:  # not a transformers model with a config: take the cache it made
            cache = out.past_key_values
        logits = out.logits[:, -1]  # [B, vocab]
    if step_fn is not None and keys_mask is not None:
        # SDPA turns a boolean mask into this additive one (0 / -inf) at every call; the fused step gets it made once
        keys_mask = torch.zeros(keys_mask.shape, dtype=inputs_embeds.dtype, device=device).masked_fill_(
            ~keys_mask, float("-inf")
        )
    for step in range(max_new_tokens):
        # each step's logits are a new tensor no one else holds: processors may write into them
        scores = logits.to(dtype=torch.float32)
        for proc in procs:  # LogitsProcessorList's call, without its per-call signature inspection
            scores = proc(ids, scores)
        if do_sample:
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            token = torch.argmax(scores, dim=-1)
        token = token.masked_fill_(finished, pad_token_id)  # rows already finished get padding
        out_ids[:, step] = token
        ids = out_ids[:, : step + 1]
        finished |= torch.isin(token, eos)
        if criteria:
            finished |= criteria(ids, None)
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        step_mask = None
        if keys_mask is not None:
            step_mask = keys_mask[..., : prompt_len + step + 1]  # the prompt and every token so far
        elif padded:
            mask = step_mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=-1)
        if step_fn is not None:
            logits = step_fn(token, next_position[:, 0], step_mask)
        else:
            logits = llm(
                input_ids=token[:, None],
                attention_mask=step_mask,
                position_ids=next_position,
                use_cache=True,
                logits_to_keep=1,
                **{cache_kw: cache},
            ).logits[:, -1]
        next_position = next_position + 1
    return ids
