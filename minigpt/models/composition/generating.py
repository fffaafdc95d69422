"""Generation for a multimodal LLM: batched greedy / beam / sampled decoding and streaming."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from minigpt.common.precision import autocast
from minigpt.models.composition.layout import EOS_END, Turns


def with_autocast(fn: Any, precision: str, device: torch.device) -> Any:
    """``fn`` wrapped to run under ``precision``'s autocast on ``device`` (in whichever thread calls it)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with autocast(precision, device):
            return fn(*args, **kwargs)

    return run


def with_callers_autocast(fn: Any, device: torch.device) -> Any:
    """``fn`` wrapped to run under the autocast state in force here and now (for another thread)."""
    kind = device.type
    enabled = torch.is_autocast_enabled(kind)
    dtype = torch.get_autocast_dtype(kind)

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(kind, dtype=dtype, enabled=enabled):
            return fn(*args, **kwargs)

    return run


class GenerationMixin:
    """``generate`` and ``stream_generate`` of a :class:`~minigpt.models.composition.mllm.MultimodalLLM`."""

    def resolve_stop_strings(self, stop_strings: Optional[Sequence[str]] = None) -> List[str]:
        """The strings that end an answer: ``stop_strings`` if given, else the template's and the end marker.

        The end marker (``model.answer_end``, unless it is the EOS token) ends an answer because
        answers were trained to end with it.
        """
        if stop_strings is not None:
            return [s for s in stop_strings if s]
        stops = [s for s in self.template.stop_strings if s]
        end = self.layout.answer_end
        if end != EOS_END and end not in stops:
            stops.append(end)
        return stops

    def stopping_kwargs(self, stop_strings: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """``eos_token_id``, ``stop_strings``, ``tokenizer`` for transformers' ``generate`` (this tokenizer).

        The ids are this model's tokenizer's: its EOS, plus each stop string that is one whole token
        of this vocabulary (so beam search closes a hypothesis there as it does at EOS). Stop
        strings spread over several tokens are matched by transformers' ``StopStringCriteria``.
        """
        stops = self.resolve_stop_strings(stop_strings)
        eos = [self.eos_token_id]
        for ids in self.layout.tokenize(stops):
            if len(ids) == 1 and ids[0] not in eos and ids[0] != self.tokenizer.unk_token_id:
                eos.append(ids[0])
        out: Dict[str, Any] = {"eos_token_id": eos, "pad_token_id": self.pad_token_id}
        if stops:
            out.update(stop_strings=stops, tokenizer=self.tokenizer)
        return out

    @torch.no_grad()
    def _generate_kwargs(
        self,
        images: Optional[torch.Tensor],
        prompts: Sequence[Turns],
        history: Optional[Sequence[Optional[Sequence[str]]]],
        stops: List[str],
        max_new_tokens: int,
        num_beams: int,
        do_sample: bool,
        temperature: float,
        top_p: float,
        repetition_penalty: float,
        use_cache: bool,
        generate_kwargs: Dict[str, Any],
    ) -> Dict[str, Any]:
        media = self.gather(images, self.layout.slot_kinds(prompts))
        batch = self.build_generation_inputs(prompts, history, self.media_lengths(media))
        device = self.device
        batch = {k: v.to(device) for k, v in batch.items()}
        emb = self.embed_media(batch, media)
        kwargs: Dict[str, Any] = dict(
            inputs_embeds=emb,
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            repetition_penalty=repetition_penalty,
            use_cache=use_cache,
            **self.stopping_kwargs(stops),
        )
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        kwargs.update(generate_kwargs)
        return kwargs

    def _run_llm_generate(self, kwargs: Dict[str, Any]) -> torch.Tensor:
        kwargs = dict(kwargs)
        kwargs.pop("position_ids")  # transformers' generate derives them from the mask, as the layout does
        return self.llm.generate(**kwargs)

    def lean_decode_blocker(
        self, num_beams: int, use_cache: bool, generate_kwargs: Dict[str, Any]
    ) -> Optional[str]:
        """Why ``generate`` hands these settings to transformers' ``generate``; None when its own loop runs."""
        from minigpt.models.generation.decode import decode_unsupported

        if not self.lean_generate:
            return "lean_generate is off"
        if num_beams != 1:
            return "beam search"
        if not use_cache:
            return "use_cache=False"
        if not self.llm.takes_logits_to_keep:
            return "the LLM's forward takes no logits_to_keep"
        return decode_unsupported(self.llm.causal_lm.generation_config, generate_kwargs)

    def _stop_string_criteria(self, stops: Tuple[str, ...]) -> Any:
        # built once per set of stop strings: its tables cover the whole vocabulary
        criteria = self._stop_criteria_cache.get(stops)
        if criteria is None:
            from transformers import StopStringCriteria

            criteria = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stops))
            self._stop_criteria_cache[stops] = criteria
        return criteria

    def _run_lean_decode(self, kwargs: Dict[str, Any]) -> torch.Tensor:
        """``_generate_kwargs``' arguments decoded by :func:`minigpt.models.generation.decode`."""
        from minigpt.models.generation.decode import decode, generation_setting

        gen_cfg = self.llm.causal_lm.generation_config
        criteria = list(kwargs.get("stopping_criteria") or [])
        if kwargs.get("stop_strings"):
            criteria.insert(0, self._stop_string_criteria(tuple(kwargs["stop_strings"])))
        do_sample = bool(kwargs["do_sample"])
        min_new = kwargs.get("min_new_tokens", generation_setting(gen_cfg, "min_new_tokens"))
        return decode(
            self.llm,
            kwargs["inputs_embeds"],
            kwargs["attention_mask"],
            max_new_tokens=int(kwargs["max_new_tokens"]),
            eos_token_ids=kwargs["eos_token_id"],
            pad_token_id=kwargs["pad_token_id"],
            do_sample=do_sample,
            temperature=float(kwargs.get("temperature", 1.0)) if do_sample else 1.0,
            top_k=kwargs.get("top_k", generation_setting(gen_cfg, "top_k")),
            top_p=float(kwargs.get("top_p", 1.0)) if do_sample else 1.0,
            repetition_penalty=float(kwargs.get("repetition_penalty") or 1.0),
            min_new_tokens=int(min_new or 0),
            logits_processor=kwargs.get("logits_processor"),
            stopping_criteria=criteria,
            fused_step=self.fused_decode_step,
            lean_prefill=self.lean_prefill,
        )

    @torch.no_grad()
    def generate(
        self,
        images: Optional[torch.Tensor],
        prompts: Sequence[Turns],
        max_new_tokens: int = 20,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        use_cache: bool = True,
        history: Optional[Sequence[Optional[Sequence[str]]]] = None,
        stop_strings: Optional[Sequence[str]] = None,
        **generate_kwargs: Any,
    ) -> List[str]:
        """Answers to a batch of prompts: greedy, beam (``num_beams``) or sampling (``do_sample``).

        ``images`` is ``[B, 3, H, W]`` (rows of prompts without ``<ImageHere>`` are ignored), a list with
        each sample's images and videos (see :mod:`~minigpt.models.composition.media`), or None;
        prompts are left-padded and decoded with the KV cache. ``history[i]`` holds the earlier
        answers of a multi-turn ``prompts[i]`` (see ``build_generation_inputs``). Generation stops
        at this tokenizer's EOS or a stop string (the template's unless ``stop_strings`` is given);
        the answer is cut before the stop string and stripped. Sampling draws from torch's global
        generator: ``torch.manual_seed`` first to reproduce it. Other keyword arguments go to
        transformers' ``generate``.

        Greedy and sampling run this library's decode loop
        (:func:`minigpt.models.generation.decode`: the tokens transformers' ``generate`` returns,
        with less work per token) unless ``lean_decode_blocker`` names a reason not to (beams,
        ``use_cache=False``, ``lean_generate: false``, arguments or generation-config settings the
        loop does not implement); then transformers' ``generate`` runs.
        """
        if not prompts:
            return []
        stops = self.resolve_stop_strings(stop_strings)
        kwargs = self._generate_kwargs(
            images, prompts, history, stops, max_new_tokens, num_beams, do_sample, temperature, top_p,
            repetition_penalty, use_cache, generate_kwargs,
        )
        if self.lean_decode_blocker(num_beams, use_cache, generate_kwargs) is None:
            out = self._run_lean_decode(kwargs)
        else:
            out = self._run_llm_generate(kwargs)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [self.template.cut_at_stop(t, stops) for t in texts]

    def stream_generate(
        self,
        image: Optional[torch.Tensor],
        prompt: Turns,
        history: Optional[Sequence[str]] = None,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        stop_strings: Optional[Sequence[str]] = None,
        timeout: Optional[float] = None,
        precision: Optional[str] = None,
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """The answer to one prompt as text pieces while it is generated (for the demo).

        ``image`` is ``[3, H, W]``, ``[1, 3, H, W]``, a video ``[1, T, 3, H, W]`` (behind a ``<VideoHere>``
        slot) or None. Generation runs in a thread through
        transformers' ``TextIteratorStreamer``; the pieces join to what ``generate`` returns for the
        same arguments (stop string cut, whitespace stripped). Closing the iterator early stops the
        generation; ``timeout`` (seconds) bounds the wait for each piece. Greedy or sampling only.
        The thread computes under ``precision``'s autocast (``run.precision``) when given, else under
        the autocast in force where this is called.
        """
        from minigpt.models.generation.decode import stream_in_thread

        if int(generate_kwargs.get("num_beams", 1)) != 1:
            raise ValueError("stream_generate decodes one sequence: num_beams must be 1 (generate has beams)")
        media = None
        if image is not None:
            if image.dim() == 3:
                image = image[None]
            if image.dim() not in (4, 5) or image.shape[0] != 1:
                raise ValueError(
                    f"stream_generate takes one image [3, H, W] or one video [1, T, 3, H, W], got shape {tuple(image.shape)}"
                )
            media = [image[0]]  # the prompt's one slot says whether it is an image or a video
        stops = self.resolve_stop_strings(stop_strings)
        kwargs = self._generate_kwargs(
            media, [prompt], None if history is None else [history], stops, max_new_tokens, 1, do_sample,
            temperature, top_p, repetition_penalty, True, generate_kwargs,
        )
        # autocast is per thread: the decoding thread enters the run's precision, or the caller's autocast
        if precision is not None:
            run = with_autocast(self._run_llm_generate, precision, self.device)
        else:
            run = with_callers_autocast(self._run_llm_generate, self.device)
        return stream_in_thread(run, kwargs, self.tokenizer, stops, timeout=timeout)

