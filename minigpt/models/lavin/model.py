"""LaVIN: a frozen LLM and CLIP tower adapted by mixture-of-modality adapters, routed by a modality token.

LaVIN puts a learned modality token (row 0 of a 2-row table for text-only samples, row 1 for
samples with an image) at position 0 of every sequence and masks it from every other position: it
reaches the rest of the model only through the routers of the ``mma`` adapters
(:mod:`minigpt.models.lavin.mma`), which read its normalised state at each layer.

Since no other token attends to it, the token's state at every layer depends on itself alone. So
this model runs it through the LLM as a one-token sequence of its own before the real sequence
(the "modality pass"); the adapters record their routing weights there and reuse them for the
sequence and for every step of cached decoding. That is LaVIN's computation without a custom
attention mask: the rest of the sequence is laid out, masked and cached exactly as in every other
family. One difference: the sequence starts at position 0 instead of 1, which rotary position
embeddings (LLaMA, Phi-2) do not see, as they depend on relative positions only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from omegaconf import DictConfig
from torch import nn

from minigpt.common.constants import IMAGE_TOKEN
from minigpt.models.composition.heads import zero_touch
from minigpt.models.composition.layout import Turns, as_turns
from minigpt.models.composition.media import MediaBatch
from minigpt.models.composition.mllm import ADAPTERS_PREFIX, MultimodalLLM
from minigpt.models.families import presets
from minigpt.models.lavin.mma import MMAdapter
from minigpt.models.weights.checkpoint import save_trained

MODALITY_PREFIX = "modality_embedding."
# what LaVIN trains, as checkpoint names start: adapters, the projector and the modality table
TRAINABLE_PREFIXES: Tuple[str, ...] = (ADAPTERS_PREFIX, "projector.", MODALITY_PREFIX)
TEXT_ONLY, WITH_IMAGE = 0, 1  # rows of the modality table


class LaVIN(MultimodalLLM):
    """LaVIN: MMA adapters in a frozen LLM and CLIP tower, a modality token routing them. YAML name ``lavin``.

    ``text_only_prefix`` (model YAML key; LaVIN's ``Image: N/A``) is put before the first
    instruction of every sample without an image, where an image sample has its image.
    """

    PRETRAINED_MODEL_CONFIG_DICT = presets("lavin", "tiny", "llama7b", "phi2")
    # the demo answers a question asked without an image (routed by the text-only modality row)
    ANSWERS_TEXT_ONLY = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modality_embedding = nn.Embedding(2, self.llm.hidden_size)
        self.text_only_prefix = ""
        slots = list(self.adapters.items())
        self.routed_adapters: List[MMAdapter] = [
            a for _, a in slots if isinstance(a, MMAdapter) and a.router_source == "modality"
        ]
        self.vision_adapters = [a for name, a in slots if "_vision_encoder_" in name]
        if any(p.requires_grad for a in self.vision_adapters for p in a.parameters()):
            # the tower's own weights stay frozen (its `freeze`), but gradients must reach its adapters:
            # no torch.no_grad around the tower, and no vision feature cache (its output trains)
            self.freeze_vision = False
        self._media_seen = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "LaVIN":
        model = super().from_config(cfg)
        model.text_only_prefix = str(model.cfg.get("text_only_prefix") or "")
        if not model.routed_adapters:
            raise ValueError(
                "model.adapters: arch lavin needs mma adapters with router: modality on the llm part "
                "(see configs/models/lavin/tiny.yaml)"
            )
        return model

    # -- layout ----------------------------------------------------------------------------
    def _with_text_only_prefix(self, instructions: Sequence[Turns]) -> List[Turns]:
        if not self.text_only_prefix:
            return list(instructions)
        out: List[Turns] = []
        for turns in instructions:
            turns = as_turns(turns)
            if turns and not any(IMAGE_TOKEN in t for t in turns):
                turns = [f"{self.text_only_prefix}\n{turns[0]}"] + turns[1:]
            out.append(turns)
        return out

    def build_inputs(self, instructions, answers, n_image_tokens, padding_side="right"):  # noqa: D102
        return super().build_inputs(self._with_text_only_prefix(instructions), answers, n_image_tokens, padding_side)

    def build_generation_inputs(self, prompts, history=None, media_lengths=None):  # noqa: D102
        return super().build_generation_inputs(self._with_text_only_prefix(prompts), history, media_lengths)

    # -- the modality token --------------------------------------------------------------------
    def modality_ids(self, has_media: torch.Tensor) -> torch.Tensor:
        """``[B]`` rows of the modality table: 1 for a sample with media, 0 for a text-only one."""
        return torch.where(has_media.bool(), WITH_IMAGE, TEXT_ONLY).to(self.modality_embedding.weight.device)

    def route_by_modality(self, has_media: torch.Tensor) -> None:
        """Run the modality tokens ``[B, 1, d]`` through the LLM alone; each ``mma`` adapter keeps its routing."""
        states = self.modality_embedding(self.modality_ids(has_media))[:, None, :]
        states = states.to(self.llm.causal_lm.get_input_embeddings().weight.dtype)  # as the token embeddings
        b = states.shape[0]
        ones = torch.ones(b, 1, dtype=torch.long, device=states.device)
        for adapter in self.routed_adapters:
            adapter.recording = True
        try:
            # position 0, as in LaVIN; the decoder alone, the LM head has nothing to say here
            self.llm.causal_lm.get_decoder()(
                inputs_embeds=states, attention_mask=ones, position_ids=ones * 0, use_cache=False
            )
        finally:
            for adapter in self.routed_adapters:
                adapter.recording = False

    def routing_weights(self) -> Dict[str, torch.Tensor]:
        """The routing weights ``[B, 2]`` the ``router: modality`` adapters hold for the last batch, by slot."""
        return {n: a.routing for n, a in self.adapters.items() if a in self.routed_adapters and a.routing is not None}

    def embed_media(self, batch: Dict[str, torch.Tensor], media: MediaBatch) -> torch.Tensor:
        # training and generation both embed here first: the routing is set before the LLM runs
        self.route_by_modality(batch["has_media"])
        self._media_seen = media.items is not None
        return super().embed_media(batch, media)

    def forward(self, samples: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        out = super().forward(samples)
        if self.training and not self._media_seen:
            # the tower's adapters took no part: a zero-gradient term keeps data-parallel training in step
            for adapter in self.vision_adapters:
                touch = zero_touch(adapter)
                if touch is not None:
                    out["loss"] = out["loss"] + touch
        return out

    # -- checkpoints ---------------------------------------------------------------------------------
    def save_adapters(self, directory: str) -> str:
        """Write LaVIN's trainable set alone (adapters, projector, modality table); ``load_checkpoint`` reads it."""
        return save_trained(self, directory, only_prefix=TRAINABLE_PREFIXES)
