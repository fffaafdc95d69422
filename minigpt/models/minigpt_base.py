"""The multimodal composition every family uses: vision encoder -> projector -> causal LM."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry
from minigpt.models.base_model import BaseModel
from minigpt.models.checkpoint import load_trained
from minigpt.models.conversation import get_template

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<ImageHere>"
IGNORE_INDEX = -100

Turns = Union[str, Sequence[str]]


def _as_turns(x: Turns) -> List[str]:
    return [x] if isinstance(x, str) else list(x)


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
        )
        model.cfg = cfg
        ckpt = cfg.get("ckpt")
        if ckpt:
            for path in ckpt if isinstance(ckpt, (list, ListConfig)) else [ckpt]:
                model.load_checkpoint(path)
        return model

    def load_checkpoint(self, path: str) -> List[str]:
        loaded, unexpected = load_trained(self, str(path))
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
        """``[B, 3, H, W]`` -> ``[B, N, llm_hidden]`` image embeddings."""
        if self.freeze_vision:
            with torch.no_grad():
                feats = self.vision_encoder(images)
        else:
            feats = self.vision_encoder(images)
        return self.projector(feats)

    def num_image_tokens(self) -> int:
        return self.projector.num_output_tokens(self.vision_encoder.num_tokens)

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
            out = self.llm(inputs_embeds=emb, attention_mask=batch["attention_mask"], labels=batch["labels"])
        n_tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        return {"loss": out.loss, "n_tokens": n_tokens}

    # -- inference -----------------------------------------------------------------------------
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
        **generate_kwargs: Any,
    ) -> List[str]:
        """Answers to a batch of prompts (left-padded, one forward per new token with the KV cache)."""
        batch = self.build_inputs(prompts, None, self.num_image_tokens(), padding_side="left")
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
                eos_token_id=self.eos_token_id,
                pad_token_id=self.pad_token_id,
                use_cache=use_cache,
            )
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            kwargs.update(generate_kwargs)
            out = self.llm.generate(**kwargs)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [self._clean(t) for t in texts]

    def _clean(self, text: str) -> str:
        for stop in self.template.stop_strings:
            text = text.split(stop)[0]
        return text.strip()

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
