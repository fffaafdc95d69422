"""The multimodal composition every family uses: vision encoder -> projector -> causal LM."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry
from minigpt.models.base_model import BaseModel
from minigpt.models.checkpoint import STAGE0_HEADS_PREFIX, expand_checkpoints, load_trained
from minigpt.models.conversation import get_template

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<ImageHere>"
IGNORE_INDEX = -100

Turns = Union[str, Sequence[str]]


def _as_turns(x: Turns) -> List[str]:
    return [x] if isinstance(x, str) else list(x)


def _stochastic(module: nn.Module) -> bool:
    """Whether ``module`` gives different outputs for the same input in its current mode (active dropout or batch stats)."""
    for m in module.modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return True
        if type(m).__name__ == "DropPath" and float(getattr(m, "drop_prob", 0.0) or 0.0) > 0:
            return True
    return False


def _part_kwargs(cfg: Any) -> Dict[str, Any]:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in dict(cfg).items() if k not in ("name", "freeze")}


class MiniGPTBase(BaseModel):
    """An LLM plus a vision encoder joined by a projector, each a registered part with its own YAML block.

    ``forward(samples)`` takes ``{"image", "instruction_input", "answer"}`` (strings, or lists of
    strings for multi-turn samples) and returns the loss on answer tokens only. ``generate``
    decodes batched prompts with left padding and the KV cache.
    """

    def __init__(
        self,
        vision_encoder: nn.Module,
        projector: nn.Module,
        llm: nn.Module,
        template: str = "human_assistant",
        max_txt_len: int = 160,
        freeze_vision: bool = False,
        freeze_projector: bool = False,
        loss_on_label_positions: bool = True,
        lean_generate: bool = True,
    ) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.projector = projector
        self.llm = llm
        self.tokenizer = llm.tokenizer
        self.template = get_template(template)
        self.max_txt_len = int(max_txt_len)
        self.freeze_vision = freeze_vision
        if freeze_vision:
            for p in self.vision_encoder.parameters():
                p.requires_grad_(False)
            self.vision_encoder.eval()
        if freeze_projector:
            for p in self.projector.parameters():
                p.requires_grad_(False)
        tok = self.tokenizer
        self.image_token_id = tok.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        self.pad_token_id = tok.pad_token_id
        self.eos_token_id = tok.eos_token_id
        self.bos_ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
        # the LM head and cross-entropy only where a label is (see answer_loss); False: logits everywhere
        self.loss_on_label_positions = bool(loss_on_label_positions)
        # greedy/sampling through minigpt.models.generation.decode (see generate); False: transformers' generate
        self.lean_generate = bool(lean_generate)
        self._stop_criteria_cache: Dict[Tuple[str, ...], Any] = {}
        self.cfg: Optional[DictConfig] = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: DictConfig) -> "MiniGPTBase":
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        venc_cfg, proj_cfg, llm_cfg = cfg.vision_encoder, cfg.projector, cfg.llm
        venc = registry.get_vision_encoder_class(venc_cfg.name).from_config(venc_cfg)
        llm = registry.get_llm_class(llm_cfg.name).from_config(llm_cfg)
        proj = registry.get_projector_class(proj_cfg.name)(
            in_dim=venc.out_dim, out_dim=llm.hidden_size, **_part_kwargs(proj_cfg)
        )
        model = cls(
            venc,
            proj,
            llm,
            template=cfg.get("template", "human_assistant"),
            max_txt_len=cfg.get("max_txt_len", 160),
            freeze_vision=bool(venc_cfg.get("freeze", False)),
            freeze_projector=bool(proj_cfg.get("freeze", False)),
            loss_on_label_positions=bool(cfg.get("loss_on_label_positions", True)),
            lean_generate=bool(cfg.get("lean_generate", True)),
        )
        model.cfg = cfg
        for path in expand_checkpoints(cfg.get("ckpt")):
            model.load_checkpoint(path)
        return model

    def load_checkpoint(self, path: str) -> List[str]:
        loaded, unexpected = load_trained(self, str(path))
        # a stage-0 checkpoint (vision_pretrain) also holds its label heads, which no family has
        heads = [k for k in unexpected if k.startswith(STAGE0_HEADS_PREFIX)]
        if heads:
            logger.info("checkpoint %s: %d stage-0 label-head tensors not used by this model", path, len(heads))
        unexpected = [k for k in unexpected if not k.startswith(STAGE0_HEADS_PREFIX)]
        if unexpected:
            logger.warning("checkpoint %s: %d keys not in this model, e.g. %s", path, len(unexpected), unexpected[:5])
        logger.info("loaded %d tensors from %s", len(loaded), path)
        return loaded

    def train(self, mode: bool = True) -> "MiniGPTBase":
        super().train(mode)
        if self.freeze_vision:
            self.vision_encoder.eval()  # frozen BatchNorm statistics stay as trained
        return self

    # -- images ------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, N, llm_hidden]`` image embeddings.

        A 3-D ``images`` is not pixels but what :meth:`vision_prefix` returned for them (the vision
        feature cache hands those in, see ``minigpt/runners/vision_cache.py``): only the rest of the
        image path, :meth:`vision_suffix`, runs on it.
        """
        if images.dim() == 3:
            return self.vision_suffix(images)
        if self.freeze_vision:
            with torch.no_grad():
                feats = self.vision_encoder(images)
        else:
            feats = self.vision_encoder(images)
        return self.projector(feats)

    def num_image_tokens(self) -> int:
        return self.projector.num_output_tokens(self.vision_encoder.num_tokens)

    # the parts of the image path whose output the vision feature cache may store, deepest first
    VISION_CACHE_POINTS = ("projector", "projector_prefix", "vision_encoder")

    def vision_cache_point(self) -> Optional[str]:
        """Where the frozen, deterministic start of the image path ends in training, or None when the encoder trains.

        ``"projector"``: the encoder and the whole projector are frozen and deterministic (no active
        dropout or batch statistics) in training mode; ``"projector_prefix"``: the projector's leading
        part is (a frozen Q-Former, through the projector's ``has_frozen_prefix()``); ``"vision_encoder"``:
        only the encoder is. Judged on the modules' current train/eval modes and ``requires_grad`` flags.
        """
        if not self.freeze_vision or any(p.requires_grad for p in self.vision_encoder.parameters()):
            return None
        if _stochastic(self.vision_encoder):
            return None
        proj = self.projector
        if not any(p.requires_grad for p in proj.parameters()) and not _stochastic(proj):
            return "projector"
        if callable(getattr(proj, "has_frozen_prefix", None)) and proj.has_frozen_prefix():
            return "projector_prefix"
        return "vision_encoder"

    @torch.no_grad()
    def vision_prefix(self, images: torch.Tensor, point: Optional[str] = None) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the output of the image path's frozen start up to ``point`` (3-D).

        ``point`` defaults to ``vision_feature_point`` (set by the vision feature cache). Computed as
        :meth:`encode_images` computes it, so ``encode_images(vision_prefix(x))`` is ``encode_images(x)``.
        """
        point = self._feature_point(point)
        feats = self.vision_encoder(images)
        if point == "projector_prefix":
            return self.projector.frozen_prefix(feats)
        if point == "projector":
            return self.projector(feats)
        return feats

    def vision_suffix(self, feats: torch.Tensor, point: Optional[str] = None) -> torch.Tensor:
        """The rest of the image path after :meth:`vision_prefix`: ``[B, N', C']`` -> ``[B, N, llm_hidden]``."""
        point = self._feature_point(point)
        if point == "projector_prefix":
            return self.projector.trainable_suffix(feats)
        if point == "projector":
            return feats
        return self.projector(feats)

    def _feature_point(self, point: Optional[str]) -> str:
        point = point or getattr(self, "vision_feature_point", None)
        if point not in self.VISION_CACHE_POINTS:
            raise ValueError(
                f"image features need a cache point ({', '.join(self.VISION_CACHE_POINTS)}), got {point!r}: "
                "3-D images are cached vision features, which only a vision feature cache set up on this model "
                "hands in (run.vision_feature_cache)"
            )
        return point

    # -- text ----------------------------------------------------------------------------------
    def _tokenize(self, texts: List[str]) -> List[List[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def build_inputs(
        self,
        instructions: Sequence[Turns],
        answers: Optional[Sequence[Turns]],
        n_image_tokens: int,
        padding_side: str = "right",
    ) -> Dict[str, torch.Tensor]:
        """Token ids, labels and the image-slot mask for a batch.

        Each turn becomes ``template(instruction) + answer + EOS``; labels are IGNORE_INDEX
        everywhere but on answer tokens and their EOS. The single ``<ImageHere>`` token of a
        sample expands to ``n_image_tokens`` slots that ``embed`` fills with image embeddings.
        """
        turns = [_as_turns(x) for x in instructions]
        ans = [_as_turns(a) for a in answers] if answers is not None else None
        prompt_texts, answer_texts = [], []
        for i, ts in enumerate(turns):
            if ans is not None and len(ans[i]) != len(ts):
                raise ValueError(f"sample {i}: {len(ts)} instructions but {len(ans[i])} answers")
            for t, instr in enumerate(ts):
                prompt_texts.append((self.template.sep if t else "") + self.template.wrap(instr))
            if ans is not None:
                answer_texts.extend(self.template.answer_prefix + a for a in ans[i])
        prompt_ids = self._tokenize(prompt_texts)
        answer_ids = self._tokenize(answer_texts)
        seqs, labs, has_image = [], [], []
        pi = ai = 0
        for i, ts in enumerate(turns):
            ids, lab = list(self.bos_ids), [IGNORE_INDEX] * len(self.bos_ids)
            for _ in ts:
                p = prompt_ids[pi]
                pi += 1
                ids += p
                lab += [IGNORE_INDEX] * len(p)
                if ans is not None:
                    a = answer_ids[ai] + [self.eos_token_id]
                    ai += 1
                    ids += a
                    lab += a
            n_slots = ids.count(self.image_token_id)
            if n_slots > 1:
                raise ValueError(f"sample {i}: {n_slots} {IMAGE_PLACEHOLDER} placeholders; one image per sample")
            if len(ids) > self.max_txt_len:  # keep the start (image, question) and cut the tail
                ids, lab = ids[: self.max_txt_len], lab[: self.max_txt_len]
                if n_slots and self.image_token_id not in ids:
                    raise ValueError(f"sample {i}: max_txt_len={self.max_txt_len} cuts off the image placeholder")
            if n_slots:
                k = ids.index(self.image_token_id)
                ids = ids[:k] + [self.image_token_id] * n_image_tokens + ids[k + 1 :]
                lab = lab[:k] + [IGNORE_INDEX] * n_image_tokens + lab[k + 1 :]
            seqs.append(ids)
            labs.append(lab)
            has_image.append(bool(n_slots))
        width = max(len(s) for s in seqs)
        b = len(seqs)
        input_ids = torch.full((b, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((b, width), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labs)):
            sl = slice(width - len(s), width) if padding_side == "left" else slice(0, len(s))
            input_ids[i, sl] = torch.tensor(s)
            labels[i, sl] = torch.tensor(lab)
            attn[i, sl] = 1
        image_mask = (input_ids == self.image_token_id) & attn.bool()
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attn,
            "image_mask": image_mask,
            "has_image": torch.tensor(has_image),
        }

    def embed(self, batch: Dict[str, torch.Tensor], images: Optional[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with each sample's image slots filled by its image embeddings (no Python loop)."""
        ids = batch["input_ids"].masked_fill(batch["image_mask"], self.pad_token_id)
        emb = self.llm.embed_tokens(ids)
        if batch["image_mask"].any():
            if images is None:
                raise ValueError("prompts contain <ImageHere> but no images were given")
            img = self.encode_images(images[batch["has_image"].to(images.device)])  # [B_img, N, D]
            emb = emb.masked_scatter(batch["image_mask"].unsqueeze(-1), img.to(emb.dtype))
        return emb

    # -- training ------------------------------------------------------------------------------
    def forward(self, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        images = samples.get("image")
        device = self.device
        batch = self.build_inputs(samples["instruction_input"], samples["answer"], self.num_image_tokens())
        batch = {k: v.to(device) for k, v in batch.items()}
        if images is not None:
            images = images.to(device)
        with self.maybe_autocast():
            emb = self.embed(batch, images)
            loss = self.answer_loss(emb, batch["attention_mask"], batch["labels"])
        n_tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        return {"loss": loss, "n_tokens": n_tokens}

    def answer_loss(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over the positions whose next token carries a label.

        ``inputs_embeds`` is ``[B, T, D]``, ``attention_mask`` and ``labels`` ``[B, T]`` (IGNORE_INDEX
        where no loss is taken). With ``loss_on_label_positions`` the LM head runs only at the
        positions ``t`` whose label ``t + 1`` counts (transformers' ``logits_to_keep`` with a boolean
        mask): answers are a small part of a sequence that is mostly image and prompt tokens, so most
        of the ``[B, T, vocab]`` logits a causal LM computes would be thrown away. The value is the
        full-logits loss's: the same mean over the same tokens, with the logits in float32.
        """
        if not (self.loss_on_label_positions and self.llm.supports_logits_mask):
            return self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels).loss
        has_label = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]: position t predicts token t+1
        keep = torch.nn.functional.pad(has_label, (0, 1), value=False)  # [B, T]
        out = self.llm(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep
        )
        targets = labels[:, 1:][has_label]  # [n], in the order the mask gathers the positions
        logits = out.logits
        if logits.dim() != 2 or logits.shape[0] != targets.shape[0]:
            raise RuntimeError(
                f"{type(self.llm.model).__name__} returned logits of shape {tuple(logits.shape)} for a boolean "
                f"logits_to_keep selecting {targets.shape[0]} positions; set the model config key "
                "loss_on_label_positions: false to compute logits at every position"
            )
        return torch.nn.functional.cross_entropy(logits.float(), targets)

    # -- inference -----------------------------------------------------------------------------
    def build_generation_inputs(
        self,
        prompts: Sequence[Turns],
        history: Optional[Sequence[Optional[Sequence[str]]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Left-padded model inputs for a batch of prompts, each ending where its answer starts.

        ``prompts[i]`` is one instruction or a conversation's instructions; ``history[i]`` holds the
        answers to all but the last of them. A conversation is laid out token for token as
        ``build_inputs`` lays out a training sample (template, answer prefix, EOS after each answer),
        so the model sees its past turns as training showed them. Without history this is
        ``build_inputs(prompts, None, ..., "left")``.
        """
        n_image_tokens = self.num_image_tokens()
        if history is None or not any(history):
            return self.build_inputs(prompts, None, n_image_tokens, padding_side="left")
        if len(history) != len(prompts):
            raise ValueError(f"history has {len(history)} entries for {len(prompts)} prompts")
        tpl = self.template
        pieces: List[str] = []  # tokenised one by one, as build_inputs tokenises prompts and answers
        layout: List[List[Tuple[int, bool]]] = []  # per sample: (piece index, is an answer)
        for i, (p, past) in enumerate(zip(prompts, history)):
            turns, past = _as_turns(p), list(past or [])
            if len(past) != len(turns) - 1:
                raise ValueError(
                    f"prompt {i}: {len(turns)} instructions need the {len(turns) - 1} earlier answers "
                    f"in history, got {len(past)}"
                )
            layout.append([])
            for t, instruction in enumerate(turns):
                layout[-1].append((len(pieces), False))
                pieces.append((tpl.sep if t else "") + tpl.wrap(instruction))
                if t < len(past):
                    layout[-1].append((len(pieces), True))
                    pieces.append(tpl.answer_prefix + past[t])
        ids_of = self._tokenize(pieces)
        seqs, has_image = [], []
        for i, sample in enumerate(layout):
            ids = list(self.bos_ids)
            for k, is_answer in sample:
                ids += ids_of[k] + ([self.eos_token_id] if is_answer else [])
            n_slots = ids.count(self.image_token_id)
            if n_slots > 1:
                raise ValueError(
                    f"prompt {i}: {n_slots} {IMAGE_PLACEHOLDER} placeholders; one image per sample"
                )
            if n_slots:
                k = ids.index(self.image_token_id)
                ids = ids[:k] + [self.image_token_id] * n_image_tokens + ids[k + 1 :]
            seqs.append(ids)
            has_image.append(bool(n_slots))
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, width - len(s) :] = torch.tensor(s)
            attn[i, width - len(s) :] = 1
        return {
            "input_ids": input_ids,
            "labels": torch.full_like(input_ids, IGNORE_INDEX),
            "attention_mask": attn,
            "image_mask": (input_ids == self.image_token_id) & attn.bool(),
            "has_image": torch.tensor(has_image),
        }

    def resolve_stop_strings(self, stop_strings: Optional[Sequence[str]] = None) -> List[str]:
        """The strings that end an answer: ``stop_strings`` if given, else the template's."""
        return [s for s in (self.template.stop_strings if stop_strings is None else stop_strings) if s]

    def stopping_kwargs(self, stop_strings: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """``eos_token_id``, ``stop_strings``, ``tokenizer`` for transformers' ``generate`` (this tokenizer).

        The ids are this model's tokenizer's: its EOS, plus each stop string that is one whole token
        of this vocabulary (so beam search closes a hypothesis there as it does at EOS). Stop
        strings spread over several tokens are matched by transformers' ``StopStringCriteria``.
        """
        stops = self.resolve_stop_strings(stop_strings)
        eos = [self.eos_token_id]
        for ids in self._tokenize(stops):
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
        batch = self.build_generation_inputs(prompts, history)
        device = self.device
        batch = {k: v.to(device) for k, v in batch.items()}
        if images is not None:
            images = images.to(device)
        with self.maybe_autocast():
            emb = self.embed(batch, images)
        kwargs: Dict[str, Any] = dict(
            inputs_embeds=emb,
            attention_mask=batch["attention_mask"],
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
        with self.maybe_autocast():  # autocast is per thread: entered where generate runs
            return self.llm.generate(**kwargs)

    def lean_decode_blocker(
        self, num_beams: int, use_cache: bool, generate_kwargs: Dict[str, Any]
    ) -> Optional[str]:
        """Why ``generate`` hands these settings to transformers' ``generate``; None when its own loop runs."""
        from minigpt.models.generation import decode_unsupported

        if not self.lean_generate:
            return "lean_generate is off"
        if num_beams != 1:
            return "beam search"
        if not use_cache:
            return "use_cache=False"
        if not self.llm.supports_logits_mask:
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
        from minigpt.models.generation import decode, generation_setting

        gen_cfg = self.llm.causal_lm.generation_config
        criteria = list(kwargs.get("stopping_criteria") or [])
        if kwargs.get("stop_strings"):
            criteria.insert(0, self._stop_string_criteria(tuple(kwargs["stop_strings"])))
        do_sample = bool(kwargs["do_sample"])
        min_new = kwargs.get("min_new_tokens", generation_setting(gen_cfg, "min_new_tokens"))
        with self.maybe_autocast():
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

        ``images`` is ``[B, 3, H, W]`` (rows of prompts without ``<ImageHere>`` are ignored) or None;
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
        **generate_kwargs: Any,
    ) -> Iterator[str]:
        """The answer to one prompt as text pieces while it is generated (for the demo).

        ``image`` is ``[3, H, W]``, ``[1, 3, H, W]`` or None. Generation runs in a thread through
        transformers' ``TextIteratorStreamer``; the pieces join to what ``generate`` returns for the
        same arguments (stop string cut, whitespace stripped). Closing the iterator early stops the
        generation; ``timeout`` (seconds) bounds the wait for each piece. Greedy or sampling only.
        """
        from minigpt.models.generation import stream_in_thread

        if int(generate_kwargs.get("num_beams", 1)) != 1:
            raise ValueError("stream_generate decodes one sequence: num_beams must be 1 (generate has beams)")
        if image is not None:
            if image.dim() == 3:
                image = image[None]
            if image.dim() != 4 or image.shape[0] != 1:
                raise ValueError(f"stream_generate takes one image [3, H, W], got shape {tuple(image.shape)}")
        stops = self.resolve_stop_strings(stop_strings)
        kwargs = self._generate_kwargs(
            image, [prompt], None if history is None else [history], stops, max_new_tokens, 1, do_sample,
            temperature, top_p, repetition_penalty, True, generate_kwargs,
        )
        return stream_in_thread(self._run_llm_generate, kwargs, self.tokenizer, stops, timeout=timeout)

    def _clean(self, text: str) -> str:
        return self.template.cut_at_stop(text)

    # -- optimisation helpers --------------------------------------------------------------------
    def param_groups(self, weight_decay: float, projector_lr_scale: float = 1.0) -> List[Dict[str, Any]]:
        """AdamW groups: no decay on biases/norms/embeddings of positions; the projector may get its own lr scale."""
        groups: Dict[Tuple[bool, bool], List[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim < 2 or "norm" in name or name.endswith(".bias") or "pos_embed" in name
            is_proj = name.startswith("projector.")
            groups.setdefault((no_decay, is_proj), []).append(p)
        out = []
        for (no_decay, is_proj), params in groups.items():
            out.append(
                {
                    "params": params,
                    "weight_decay": 0.0 if no_decay else weight_decay,
                    "lr_scale": projector_lr_scale if is_proj else 1.0,
                }
            )
        return out
