"""MultimodalLLM: a causal LM plus registered parts — a vision encoder and projector, adapters, output heads.

Every family (``tinygptv``, ``minigpt4``, ``minigpt_v2``) is this composition with its own presets.
A batch is ``{"image", "instruction_input", "answer"}``; ``image`` may give each sample one image,
several, a video (``[T, 3, H, W]`` frames behind a ``<VideoHere>`` slot) or none (see
:mod:`minigpt.models.composition.media`), so text-only, image and video samples mix in one batch. :class:`~minigpt.models.composition.layout.PromptLayout` lays
out the text for training and generation alike.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.constants import IGNORE_INDEX
from minigpt.common.registry import registry
from minigpt.models.base_model import BaseModel
from minigpt.models.composition.adapters import place_adapters
from minigpt.models.composition.generating import GenerationMixin
from minigpt.models.composition.heads import HEADS_PREFIX, build_heads, zero_touch
from minigpt.models.composition.layout import PromptLayout, Turns
from minigpt.models.composition.media import FEATURE, IMAGE, MediaBatch, gather_media
from minigpt.models.composition.media_paths import build_media_paths
from minigpt.models.composition.vision_path import VIDEO_POOLINGS, VisionPathMixin
from minigpt.models.composition.weighted_loss import check_loss_weighting, weighted_answer_loss
from minigpt.models.generation.conversation import get_template
from minigpt.models.weights.checkpoint import (
    STAGE0_HEADS_PREFIX,
    expand_checkpoints,
    load_trained,
    save_trained,
)

logger = logging.getLogger(__name__)

ADAPTERS_PREFIX = "adapters."


def _part_kwargs(cfg: Any) -> Dict[str, Any]:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in dict(cfg).items() if k not in ("name", "freeze")}


class MultimodalLLM(VisionPathMixin, GenerationMixin, BaseModel):
    """An LLM plus a vision encoder joined by a projector, each a registered part with its own YAML block.

    ``forward(samples)`` returns the loss on answer tokens (plus each output head's weighted loss)
    as ``{"loss", "lm_loss", "n_tokens", "<head>_loss"...}``. ``generate`` decodes batched prompts
    with left padding and the KV cache. The model never picks a compute dtype: callers enter
    ``minigpt.common.precision.autocast`` with the run's precision.
    """

    def __init__(
        self,
        vision_encoder: nn.Module,
        projector: nn.Module,
        llm: nn.Module,
        template: str = "human_assistant",
        max_txt_len: int = 160,
        image_markers: str = "special_tokens",
        bos: str = "always",
        answer_end: str = "eos",
        max_txt_len_counts: str = "sequence",
        image_tags: bool = True,
        supervise: str = "all",
        freeze_vision: bool = False,
        freeze_projector: bool = False,
        loss_on_label_positions: bool = True,
        prompt_loss_weight: float = 0.0,
        loss_normaliser: str = "answer_tokens",
        lean_generate: bool = True,
        adapters: Optional[List[Any]] = None,
        heads: Optional[Dict[str, Any]] = None,
        video_pooling: str = "mean",
        media_paths: Optional[nn.ModuleDict] = None,
    ) -> None:
        super().__init__()
        if video_pooling not in VIDEO_POOLINGS:
            raise ValueError(f"model.video_pooling must be one of {', '.join(VIDEO_POOLINGS)}, got {video_pooling!r}")
        # a video's frames -> one frame's tokens (mean) or all frames' tokens in order (concat)
        self.video_pooling = video_pooling
        self.vision_encoder = vision_encoder
        self.projector = projector
        self.llm = llm
        self.tokenizer = llm.tokenizer
        self.template = get_template(template)
        self.layout = PromptLayout(
            self.tokenizer,
            self.template,
            max_txt_len,
            image_markers=image_markers,
            bos=bos,
            answer_end=answer_end,
            max_txt_len_counts=max_txt_len_counts,
            image_tags=image_tags,
            supervise=supervise,
        )
        self.max_txt_len = self.layout.max_txt_len
        self.freeze_vision = freeze_vision
        if freeze_vision:
            for p in self.vision_encoder.parameters():
                p.requires_grad_(False)
            self.vision_encoder.eval()
        if freeze_projector:
            for p in self.projector.parameters():
                p.requires_grad_(False)
        self.image_token_id = self.layout.media_token_id
        self.pad_token_id = self.layout.pad_token_id
        self.eos_token_id = self.layout.eos_token_id
        # the LM head and cross-entropy only where a label is (see answer_loss); False: logits everywhere
        self.loss_on_label_positions = bool(loss_on_label_positions)
        # MM-LLaMA's stage-2 loss: prompt tokens weighted in, over every position (weighted_loss.py)
        self.prompt_loss_weight, self.loss_normaliser = check_loss_weighting(prompt_loss_weight, loss_normaliser)
        # greedy/sampling through minigpt.models.generation.decode (see generate); False: transformers' generate
        self.lean_generate = bool(lean_generate)
        # the loop's steps after the prompt by minigpt.models.generation.phi_step where it applies (same logits)
        self.fused_decode_step = True
        # with the fused step: the prompt's last layer at its last position only (phi_step.phi_prefill; logits within ~1e-6)
        self.lean_prefill = True
        self._stop_criteria_cache: Dict[Tuple[str, ...], Any] = {}
        parts = {"llm": llm, "vision_encoder": vision_encoder, "projector": projector}
        self.adapters = place_adapters(parts, adapters)
        self.output_heads = build_heads(llm.hidden_size, heads)
        # chains beside the pixel chain, by item kind (model.media_paths; empty: none, no parameters)
        self.media_paths = media_paths if media_paths is not None else nn.ModuleDict()
        self.cfg: Optional[DictConfig] = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: DictConfig) -> "MultimodalLLM":
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        venc_cfg, proj_cfg, llm_cfg = cfg.vision_encoder, cfg.projector, cfg.llm
        venc = registry.get_vision_encoder_class(venc_cfg.name).from_config(venc_cfg)
        markers = cfg.get("image_markers", "special_tokens")
        if markers == "text":  # the markers stay ordinary text: no rows are added to the vocabulary
            llm_cfg = OmegaConf.merge(llm_cfg, {"add_image_tokens": False})
        llm = registry.get_llm_class(llm_cfg.name).from_config(llm_cfg)
        proj = registry.get_projector_class(proj_cfg.name)(
            in_dim=venc.out_dim, out_dim=llm.hidden_size, **_part_kwargs(proj_cfg)
        )
        model = cls(
            venc,
            proj,
            llm,
            template=cfg.template,
            max_txt_len=cfg.max_txt_len,
            image_markers=markers,
            bos=cfg.get("bos", "always"),
            answer_end=cfg.get("answer_end", "eos"),
            max_txt_len_counts=cfg.get("max_txt_len_counts", "sequence"),
            image_tags=cfg.get("image_tags", True),
            supervise=cfg.get("supervise", "all"),
            freeze_vision=bool(venc_cfg.get("freeze", False)),
            freeze_projector=bool(proj_cfg.get("freeze", False)),
            loss_on_label_positions=bool(cfg.get("loss_on_label_positions", True)),
            prompt_loss_weight=cfg.get("prompt_loss_weight", 0.0),
            loss_normaliser=cfg.get("loss_normaliser", "answer_tokens"),
            lean_generate=bool(cfg.get("lean_generate", True)),
            adapters=cfg.get("adapters"),
            heads=cfg.get("heads"),
            video_pooling=cfg.get("video_pooling", "mean"),
            media_paths=build_media_paths(cfg.get("media_paths"), llm.hidden_size),
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

    def save_adapters(self, directory: str) -> str:
        """Write the adapters' weights alone (``load_checkpoint`` reads the folder back)."""
        if not len(self.adapters):
            raise ValueError("this model has no adapters to save (model.adapters is empty)")
        return save_trained(self, directory, only_prefix=ADAPTERS_PREFIX)

    def save_head(self, name: str, directory: str) -> str:
        """Write the trained weights of output head ``name`` alone (``load_checkpoint`` reads the folder back),
        so a later stage can take this head from one checkpoint and the rest of the model from another."""
        if name not in self.output_heads:
            known = ", ".join(self.output_heads) or "(none)"
            raise ValueError(f"this model has no output head {name!r}; its heads: {known}")
        return save_trained(self, directory, only_prefix=f"{HEADS_PREFIX}{name}.")

    def save_media_path(self, kind: str, directory: str) -> str:
        """Write the trained weights of media chain ``kind`` (``model.media_paths``) alone (``load_checkpoint`` reads them)."""
        if kind not in self.media_paths:
            known = ", ".join(self.media_paths) or "(none)"
            raise ValueError(f"this model has no media path {kind!r} (model.media_paths: {known})")
        return save_trained(self, directory, only_prefix=f"media_paths.{kind}.")

    def train(self, mode: bool = True) -> "MultimodalLLM":
        super().train(mode)
        if self.freeze_vision:
            self.vision_encoder.eval()  # frozen BatchNorm statistics stay as trained
        for path in self.media_paths.values():
            if path.freeze_vision:
                path.vision_encoder.eval()
        return self

    # -- layout ------------------------------------------------------------------------------
    def build_inputs(
        self,
        instructions: Sequence[Turns],
        answers: Optional[Sequence[Turns]],
        n_image_tokens: Union[int, Sequence[Sequence[int]]],
        padding_side: str = "right",
    ) -> Dict[str, torch.Tensor]:
        """A training batch's layout (answers supervised, cut at ``max_txt_len``); see :class:`PromptLayout`.

        ``n_image_tokens``: every slot's length, or each sample's slot lengths (:meth:`media_lengths`).
        """
        return self.layout.build(
            instructions, answers, n_image_tokens, padding_side=padding_side, truncate=answers is not None
        )

    def build_generation_inputs(
        self,
        prompts: Sequence[Turns],
        history: Optional[Sequence[Optional[Sequence[str]]]] = None,
        media_lengths: Optional[Sequence[Sequence[int]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Left-padded inputs for prompts whose answers start where they end.

        ``history[i]`` holds the answers to all but the last instruction of ``prompts[i]``; the
        conversation is laid out token for token as a training sample is. ``media_lengths`` gives
        each sample's slot lengths (:meth:`media_lengths`); without it every slot is an image's.
        """
        if history is not None and not any(history):
            history = None
        if media_lengths is None:
            if any(k != IMAGE for kinds in self.layout.slot_kinds(prompts) for k in kinds):
                raise ValueError(
                    "prompts with a video slot need media_lengths=model.media_lengths(media) (a video's "
                    "length depends on its frame count)"
                )
            media_lengths = self.num_image_tokens()
        return self.layout.build(prompts, None, media_lengths, padding_side="left", history=history)

    def gather(self, images: Any, slots: Sequence[Any]) -> MediaBatch:
        """:func:`gather_media` for this model: with a ``features`` media path, items of one or two
        dimensions are stored features for that chain."""
        stored = "features" in self.media_paths
        if stored and getattr(self, "vision_feature_point", None) is not None and isinstance(images, torch.Tensor) \
                and images.dim() == 3:
            raise ValueError(
                "run.vision_feature_cache hands the pixel chain 3-D features, which a model with "
                "model.media_paths.features would read as stored features; turn one of them off"
            )
        return gather_media(images, slots, stored_features=stored)

    def media_lengths(self, media: MediaBatch) -> List[List[int]]:
        """Each sample's slot lengths (embeddings per slot) for ``media``, in slot order."""
        n_img = self.num_image_tokens()
        videos = media.videos
        n_vid = n_img if videos is None or videos.dim() != 5 else self.num_video_tokens(videos.shape[1])
        n_feat = self.media_paths["features"].num_tokens() if "features" in self.media_paths else 0
        flat = [n_img if kind == IMAGE else n_feat if kind == FEATURE else n_vid for kind in media.kinds]
        out, start = [], 0
        for c in media.counts:
            out.append(flat[start:start + c])
            start += c
        return out

    def embed(self, batch: Dict[str, torch.Tensor], images: Any, slot_kinds: Optional[Sequence[Any]] = None) -> torch.Tensor:
        """Token embeddings with the media slots filled by the media's embeddings, in slot order.

        ``slot_kinds`` (``layout.slot_kinds(prompts)``) is needed when a prompt holds a video slot;
        without it every slot is an image's.
        """
        media = self.gather(images, slot_kinds if slot_kinds is not None else batch["media_counts"].tolist())
        return self.embed_media(batch, media)

    def embed_media(self, batch: Dict[str, torch.Tensor], media: MediaBatch) -> torch.Tensor:
        ids = batch["input_ids"].masked_fill(batch["media_mask"], self.pad_token_id)
        emb = self.llm.embed_tokens(ids)
        if media.items is None and media.videos is None and media.features is None:
            return emb
        to = emb.device
        img, vid = self.encode_media_items(
            None if media.items is None else media.items.to(to), None if media.videos is None else media.videos.to(to)
        )  # [M, N, D], [V, N', D]
        feat = None if media.features is None else self.media_paths["features"](media.features.to(to))  # [F, N'', D]
        given = [x for x in (img, vid, feat) if x is not None]
        if len(given) == 1:
            filled = given[0]
        else:  # the slots' embeddings in the order the slots appear: [sum of slot lengths, D]
            by_kind = {IMAGE: iter(() if img is None else img), FEATURE: iter(() if feat is None else feat)}
            videos = iter(() if vid is None else vid)
            filled = torch.cat([next(by_kind.get(kind, videos)) for kind in media.kinds])
        return emb.masked_scatter(batch["media_mask"].unsqueeze(-1), filled.to(emb.dtype))

    # -- training ------------------------------------------------------------------------------
    def forward(self, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        device = self.device
        media = self.gather(samples.get("image"), self.layout.slot_kinds(samples["instruction_input"], samples["answer"]))
        batch = self.build_inputs(samples["instruction_input"], samples["answer"], self.media_lengths(media))
        batch = {k: v.to(device) for k, v in batch.items()}
        for adapter in self.adapters.values():
            adapter.set_context(has_media=batch["has_media"])
        emb = self.embed_media(batch, media)
        hidden_needed = len(self.output_heads) > 0
        loss, hidden, n_correct = self.answer_loss(emb, batch, output_hidden=hidden_needed)
        out: Dict[str, torch.Tensor] = {"lm_loss": loss.detach(), "n_correct": n_correct}
        for name, head in self.output_heads.items():
            head_loss = head.loss(hidden, batch, samples)
            if head_loss is None:
                touch = zero_touch(head)
                head_loss = touch if touch is not None else loss.new_zeros(())
                out[f"{name}_loss"] = head_loss.detach()
                loss = loss + head_loss
                continue
            out[f"{name}_loss"] = head_loss.detach()
            loss = loss + head.weighted(head_loss, batch, samples)
        if self.training:
            # a chain with no item this step: its trainable parameters still take part (zero
            # gradients), so data-parallel training with text-only micro-batches never stalls
            idle = [] if media.items is not None or media.videos is not None else [self.vision_encoder, self.projector]
            if media.features is None:
                idle.extend(self.media_paths.values())
            for part in idle:
                touch = zero_touch(part)
                if touch is not None:
                    loss = loss + touch
        out["loss"] = loss
        out["n_tokens"] = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        return out

    def answer_loss(
        self, inputs_embeds: torch.Tensor, batch: Dict[str, torch.Tensor], output_hidden: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Mean next-token cross-entropy over the positions whose next token carries a label.

        ``inputs_embeds`` is ``[B, T, D]``; ``batch`` the layout (``attention_mask``, ``position_ids``,
        ``labels`` ``[B, T]``). With ``loss_on_label_positions`` the LM head runs only at the
        positions ``t`` whose label ``t + 1`` counts (transformers' ``logits_to_keep`` with a boolean
        mask): answers are a small part of a sequence that is mostly image and prompt tokens. The
        value is the full-logits loss's: the same mean over the same tokens, logits in float32.
        Returns ``(loss, last hidden states [B, T, D] or None, n_correct)``: ``n_correct`` counts the
        labelled tokens the logits' argmax predicts (teacher-forced token accuracy's numerator).
        ``model.prompt_loss_weight`` above 0 or ``model.loss_normaliser: positions`` add prompt tokens
        and change the divisor as MM-LLaMA does (:mod:`~minigpt.models.composition.weighted_loss`).
        """
        labels = batch["labels"]
        common = dict(
            inputs_embeds=inputs_embeds,
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            output_hidden_states=output_hidden,
        )
        if self.prompt_loss_weight > 0 or self.loss_normaliser != "answer_tokens":
            fast = self.loss_on_label_positions and self.llm.supports_logits_mask
            return weighted_answer_loss(self.llm, common, batch, self.prompt_loss_weight, self.loss_normaliser, fast)
        if not (self.loss_on_label_positions and self.llm.supports_logits_mask):
            out = self.llm(labels=labels, **common)
            has_label = labels[:, 1:] != IGNORE_INDEX
            n_correct = (out.logits[:, :-1].argmax(-1) == labels[:, 1:])[has_label].sum().detach()
            return out.loss, (out.hidden_states[-1] if output_hidden else None), n_correct
        has_label = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]: position t predicts token t+1
        keep = torch.nn.functional.pad(has_label, (0, 1), value=False)  # [B, T]
        out = self.llm(use_cache=False, logits_to_keep=keep, **common)
        targets = labels[:, 1:][has_label]  # [n], in the order the mask gathers the positions
        logits = out.logits
        if logits.dim() != 2 or logits.shape[0] != targets.shape[0]:
            raise RuntimeError(
                f"{type(self.llm.model).__name__} returned logits of shape {tuple(logits.shape)} for a boolean "
                f"logits_to_keep selecting {targets.shape[0]} positions; set the model config key "
                "loss_on_label_positions: false to compute logits at every position"
            )
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        n_correct = (logits.argmax(-1) == targets).sum().detach()
        return loss, (out.hidden_states[-1] if output_hidden else None), n_correct

    # -- optimisation helpers --------------------------------------------------------------------
    def param_groups(self, weight_decay: float, projector_lr_scale: float = 1.0) -> List[Dict[str, Any]]:
        """AdamW groups: no decay on biases/norms/embeddings of positions; the projector may get its own lr scale."""
        groups: Dict[Tuple[bool, bool], List[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim < 2 or "norm" in name or name.endswith(".bias") or "pos_embed" in name
            is_proj = name.startswith("projector.") or (name.startswith("media_paths.") and ".projector." in name)
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
