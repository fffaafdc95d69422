"""DreamLLM: an LLM that writes ``<dream>`` where an image goes, then draws it from learned dream queries.

Layout: every ``<dream>`` in a sample's text is followed by ``<dream_start>``, one ``<dream_query>``
slot per dream query of the ``dream_diffusion`` head, and ``<dream_end>``. The slots' embeddings are
the head's learned queries; their last-layer states condition the head's UNet
(:mod:`minigpt.models.dream.diffusion_head`). Only ``<dream>`` carries a label among these tokens:
the model learns when to draw, and the rest is laid out for it. The loss is the LM loss plus the
head's weighted diffusion loss (``lm_loss`` and ``dream_diffusion_loss`` are logged apart).

Generation (:meth:`DreamLLM.generate_with_images`): the answer is decoded until the model writes
``<dream>``; the queries are appended, the image is drawn (classifier-free guidance at the head's
``guidance_scale``), then fed back as an input image (``<Img><ImageHere></Img>`` after
``<dream_end>``) and decoding continues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from minigpt.common.constants import (
    DREAM_END,
    DREAM_QUERY,
    DREAM_SPECIAL_TOKENS,
    DREAM_START,
    DREAM_TOKEN,
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
)
from minigpt.common.registry import registry
from minigpt.models.composition.layout import EOS_END, Turns, as_turns
from minigpt.models.composition.media import MediaBatch, gather_media
from minigpt.models.composition.mllm import MultimodalLLM
from minigpt.models.dream.diffusion_head import DreamDiffusionHead
from minigpt.models.families import presets

DREAM_HEAD = "dream_diffusion"


@dataclass
class DreamOutput:
    """One answer of :meth:`DreamLLM.generate_with_images`: its text (``<dream>`` where each image was
    drawn) and the images, ``[3, H, W]`` in [0, 1], in order."""

    text: str
    images: List[torch.Tensor] = field(default_factory=list)


class DreamLLM(MultimodalLLM):
    """DreamLLM: dream queries and a diffusion head on the multimodal LLM. YAML name ``dreamllm``.

    The model YAML needs ``heads: {dream_diffusion: {...}}``; the LLM gets ``<dream>``,
    ``<dream_start>``, ``<dream_end>`` and ``<dream_query>`` as added tokens.
    """

    PRETRAINED_MODEL_CONFIG_DICT = presets("dreamllm", "tiny", "vicuna7b_sd21")
    # the demo takes a message without an image (a drawing request needs none)
    ANSWERS_TEXT_ONLY = True

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "DreamLLM":
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        heads = cfg.get("heads") or {}
        if DREAM_HEAD not in heads:
            raise ValueError(f"model.heads: arch dreamllm needs a {DREAM_HEAD} head (see configs/models/dreamllm/tiny.yaml)")
        cfg = OmegaConf.merge(cfg, {"llm": {"extra_tokens": list(DREAM_SPECIAL_TOKENS)}})
        model = super().from_config(cfg)
        model.setup_dream()
        return model

    def setup_dream(self) -> None:
        self.dream_head: DreamDiffusionHead = self.output_heads[DREAM_HEAD]
        ids = self.tokenizer.convert_tokens_to_ids(list(DREAM_SPECIAL_TOKENS))
        self.dream_token_id, self.dream_start_id, self.dream_end_id, self.dream_query_id = ids
        self._feedback_processor = None

    # -- layout ----------------------------------------------------------------------------
    def expand_dreams(self, text: str) -> str:
        """``text`` with each ``<dream>`` followed by ``<dream_start>``, the query slots and ``<dream_end>``."""
        slots = DREAM_START + DREAM_QUERY * self.dream_head.num_queries + DREAM_END
        return text.replace(DREAM_TOKEN, DREAM_TOKEN + slots)

    def _expand_all(self, turns_list: Optional[Sequence[Any]]) -> Optional[List[Any]]:
        if turns_list is None:
            return None
        out: List[Any] = []
        for turns in turns_list:
            if turns is None:
                out.append(None)
            elif isinstance(turns, str):
                out.append(self.expand_dreams(turns))
            else:
                out.append([self.expand_dreams(t) for t in as_turns(turns)])
        return out

    def _mark_dreams(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        laid_out = (ids == self.dream_start_id) | (ids == self.dream_query_id) | (ids == self.dream_end_id)
        batch["labels"] = batch["labels"].masked_fill(laid_out, IGNORE_INDEX)
        batch["dream_mask"] = ids == self.dream_query_id
        counts = batch["dream_mask"].sum(dim=1)
        bad = (counts % self.dream_head.num_queries != 0).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"samples {bad} of the batch lost part of a dream's {self.dream_head.num_queries} query slots to "
                f"truncation; raise model.max_txt_len (now {self.max_txt_len})"
            )
        return batch

    def build_inputs(self, instructions, answers, n_image_tokens, padding_side="right"):  # noqa: D102
        batch = super().build_inputs(
            self._expand_all(instructions), self._expand_all(answers), n_image_tokens, padding_side
        )
        return self._mark_dreams(batch)

    def build_generation_inputs(self, prompts, history=None):  # noqa: D102
        batch = super().build_generation_inputs(self._expand_all(prompts), self._expand_all(history))
        return self._mark_dreams(batch)

    def embed_media(self, batch: Dict[str, torch.Tensor], media: MediaBatch) -> torch.Tensor:
        emb = super().embed_media(batch, media)
        mask = batch.get("dream_mask")
        if mask is not None and bool(mask.any()):
            n = int(mask.sum()) // self.dream_head.num_queries
            queries = self.dream_head.queries.to(emb.dtype).unsqueeze(0).expand(n, -1, -1)  # [N, Q, D]
            emb = emb.masked_scatter(mask.unsqueeze(-1), queries.reshape(-1, emb.shape[-1]))
        return emb

    # -- drawing ---------------------------------------------------------------------------------
    @torch.no_grad()
    def dream_states(self, images: Any, prompts: Sequence[Turns], answers: Sequence[Turns]) -> torch.Tensor:
        """The last-layer states ``[N, Q, D]`` of the dream queries of ``answers`` (each written up to and
        including its ``<dream>``; a list: the answers of a conversation's turns) after ``prompts``, laid out
        as in training."""
        batch = self.build_inputs(list(prompts), list(answers), self.num_image_tokens())
        batch = {k: v.to(self.device) for k, v in batch.items()}
        emb = self.embed(batch, images)
        out = self.llm(
            inputs_embeds=emb,
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=1,
        )
        hidden = out.hidden_states[-1]
        return hidden[batch["dream_mask"]].view(-1, self.dream_head.num_queries, hidden.shape[-1])

    @torch.no_grad()
    def draw(
        self,
        prompts: Sequence[Turns],
        images: Any = None,
        answers: Optional[Sequence[Turns]] = None,
        guidance_scale: Optional[float] = None,
        steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] for ``prompts``, each answer being ``answers[i]`` (default: the
        bare ``<dream>``): the image the model draws where it writes ``<dream>``."""
        answers = list(answers) if answers is not None else [DREAM_TOKEN] * len(prompts)
        states = self.dream_states(images, prompts, answers)
        return self.dream_head.sample(states, guidance_scale=guidance_scale, steps=steps, generator=generator)

    def feedback_image(self, image: torch.Tensor) -> torch.Tensor:
        """A drawn image ``[3, H, W]`` in [0, 1] as the vision encoder's input (the eval image processor's transform)."""
        if self._feedback_processor is None:
            from torchvision.transforms.functional import to_pil_image  # noqa: F401 (checked here, used below)

            block = OmegaConf.select(self.cfg, "preprocess.vis_processor.eval") if self.cfg is not None else None
            if block is None:
                raise ValueError("model.preprocess.vis_processor.eval: needed to feed a drawn image back to the model")
            self._feedback_processor = registry.get_processor_class(block.name).from_config(block)
        from torchvision.transforms.functional import to_pil_image

        return self._feedback_processor(to_pil_image(image.float().cpu()))

    def _decode_from(self, emb: torch.Tensor, mask: torch.Tensor, stops: List[str], max_new_tokens: int,
                     settings: Dict[str, Any]) -> torch.Tensor:
        kwargs: Dict[str, Any] = dict(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      num_beams=1, use_cache=True, **settings, **self.stopping_kwargs(stops))
        kwargs["position_ids"] = None
        if self.lean_decode_blocker(1, True, {}) is None:
            return self._run_lean_decode(kwargs)
        return self._run_llm_generate(kwargs)

    def _split_dream(self, ids: torch.Tensor) -> tuple:
        """Decoded ``ids`` -> (text up to the first ``<dream>``, True) or (the whole answer, False)."""
        ids = ids.tolist()
        if self.dream_token_id in ids:
            cut = ids.index(self.dream_token_id)
            return self.tokenizer.decode(ids[:cut], skip_special_tokens=True), True
        return self.tokenizer.decode(ids, skip_special_tokens=True), False

    @torch.no_grad()
    def generate_with_images(
        self,
        images: Any,
        prompts: Sequence[Turns],
        max_new_tokens: int = 64,
        max_images: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 0.9,
        guidance_scale: Optional[float] = None,
        steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        history: Optional[Sequence[Optional[Sequence[str]]]] = None,
    ) -> List[DreamOutput]:
        """Answers that may hold drawn images: decode; where the model writes ``<dream>``, draw the image,
        feed it back after ``<dream_end>`` and continue (at most ``max_images`` images per answer).

        ``history[i]`` holds the earlier answers of a multi-turn ``prompts[i]``, as for ``generate``.
        """
        if not prompts:
            return []
        past = [list(h or []) for h in history] if history is not None else [[] for _ in prompts]

        def turns_answer(i: int, partial: str) -> Turns:
            return past[i] + [partial] if past[i] else partial

        stops = self.resolve_stop_strings(None)
        settings: Dict[str, Any] = dict(do_sample=do_sample, repetition_penalty=1.0)
        if do_sample:
            settings.update(temperature=temperature, top_p=top_p)
        first = self.build_generation_inputs(list(prompts), past if any(past) else None)
        first = {k: v.to(self.device) for k, v in first.items()}
        out_ids = self._decode_from(self.embed(first, images), first["attention_mask"], stops + [DREAM_TOKEN],
                                    max_new_tokens, settings)
        results = []
        for i in range(len(prompts)):
            text, dreamed = self._split_dream(out_ids[i])
            results.append((text, dreamed))
        outputs = [DreamOutput(self.template.cut_at_stop(t, stops)) for t, _ in results]
        pending = [i for i, (_, d) in enumerate(results) if d and max_images > 0]
        answers = {i: results[i][0] + DREAM_TOKEN for i in pending}
        rounds = 0
        while pending:
            rounds += 1
            # each row's media so far: its own images, then the images drawn before this round (fed back)
            media = [self._row_media(images, i, outputs[i].images) or None for i in pending]
            drawn = self.draw([prompts[i] for i in pending], media,
                              [turns_answer(i, answers[i]) for i in pending], guidance_scale, steps, generator)
            still = []
            for row, i in enumerate(pending):
                outputs[i].images.append(drawn[row].cpu())
                text, dreamed = self._continue(images, prompts, i, turns_answer(i, answers[i] + IMAGE_PLACEHOLDER),
                                               outputs[i].images, stops, max_new_tokens, settings,
                                               allow_dream=rounds < max_images)
                answers[i] = answers[i] + IMAGE_PLACEHOLDER + text + (DREAM_TOKEN if dreamed else "")
                outputs[i].text = answers[i].replace(IMAGE_PLACEHOLDER, "")
                if dreamed:
                    still.append(i)
                else:
                    outputs[i].text = self.template.cut_at_stop(outputs[i].text, stops)
            pending = still
        return outputs

    def _row_media(self, images: Any, i: int, drawn: List[torch.Tensor]) -> List[torch.Tensor]:
        """Row ``i``'s own input images, then the images drawn for it so far (as the encoder takes them)."""
        entry = None if images is None else images[i]
        if entry is None:
            own: List[torch.Tensor] = []
        elif isinstance(entry, torch.Tensor):
            own = [entry]
        else:
            own = [x for x in entry if x is not None]
        return own + [self.feedback_image(img) for img in drawn]

    def _continue(self, images: Any, prompts: Sequence[Turns], i: int, answer: Turns, drawn: List[torch.Tensor],
                  stops: List[str], max_new_tokens: int, settings: Dict[str, Any], allow_dream: bool) -> tuple:
        """Decode row ``i`` on from ``answer`` (ending with the drawn image's slot); (new text, wrote ``<dream>``)."""
        media = self._row_media(images, i, drawn)
        batch = self.build_inputs([prompts[i]], [answer], self.num_image_tokens(), "left")
        end = 1 if self.layout.answer_end == EOS_END else len(self.layout.tokenize([self.layout.answer_end])[0])
        batch = {k: (v[:, :-end] if v.dim() == 2 else v).to(self.device) for k, v in batch.items()}
        emb = self.embed_media(batch, gather_media([media], batch["media_counts"].tolist()))
        extra = [DREAM_TOKEN] if allow_dream else []
        ids = self._decode_from(emb, batch["attention_mask"], stops + extra, max_new_tokens, settings)[0]
        text, dreamed = self._split_dream(ids)
        return text, dreamed and allow_dream
