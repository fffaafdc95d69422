"""BLIP-2's Q-Former followed by linear layers: MiniGPT-4's and TinyGPT-V's projector.

YAML block (real-size defaults; ``in_dim``/``out_dim`` come from the vision encoder and LLM)::

    projector:
      name: qformer_linear
      num_query_token: 32        # learned queries = visual tokens handed to the LLM
      hidden_dims: [4096]        # TinyGPT-V: Linear(768->4096) -> Linear(4096->LLM); [] or null: one Linear
      qformer: null              # Blip2QFormerConfig overrides for tiny presets, e.g. {hidden_size: 64}
      pretrained: null           # BLIP-2 weights in LAVIS's blip2_pretrained*.pth layout
      freeze_qformer: true       # ln_vision, queries and Q-Former frozen; the linear layers train
      freeze: false              # freeze the whole projector, linear layers included

Pipeline: ``ln_vision`` (LayerNorm over the vision width, computed in float32 as LAVIS does) ->
Q-Former (transformers' ``Blip2QFormerModel``: BERT-base layers, cross-attention to the image
every 2nd layer, 32 query tokens of 768) -> ``proj`` (``nn.Sequential`` of Linear layers with no
activation between them). ``proj.0`` is MiniGPT-4/TinyGPT-V's ``llama_proj`` and ``proj.1``
TinyGPT-V's ``llama_proj2``.

Only the query path of the Q-Former exists here: like MiniGPT-4, the text embeddings, the text
feed-forward layers and the LM head of BLIP-2's Q-Former are not built, and their keys in a
BLIP-2 checkpoint are skipped without a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from minigpt.common.hub import resolve_pretrained
from minigpt.models.base_model import building_on_meta
from minigpt.models.parts.vision_encoders.precision import FP32LayerNorm
from minigpt.models.weights.files import KeyMapping, LoadReport, load_converted, read_state_dict

logger = logging.getLogger(__name__)

PART = "qformer_linear"

# transformers' Blip2QFormerConfig defaults are BERT-base (768 wide, 12 layers and heads, cross-attention
# every 2nd layer), as BLIP-2 initialises its Q-Former (LAVIS ``Blip2Base.init_Qformer``); the YAML
# block overrides any of them. Only the text input, which BLIP-2's Q-Former has and MiniGPT-4 never uses, is off.
QFORMER_DEFAULTS: Dict[str, Any] = dict(use_qformer_text_input=False)

_LAYER = r"Qformer\.bert\.encoder\.layer\.(\d+)\."

# LAVIS BLIP-2 key -> this module's key. LAVIS's BertAttention calls its attention ``self``;
# transformers' Blip2QFormerAttention calls it ``attention``.
_QFORMER_RULES = (
    (r"query_tokens", "query_tokens"),
    (r"ln_vision\.(weight|bias)", r"ln_vision.\1"),
    (r"Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)", r"qformer.layernorm.\1"),
    (
        _LAYER + r"(attention|crossattention)\.self\.(query|key|value)\.(weight|bias)",
        r"qformer.encoder.layer.\1.\2.attention.\3.\4",
    ),
    (
        _LAYER + r"(attention|crossattention)\.output\.(dense|LayerNorm)\.(weight|bias)",
        r"qformer.encoder.layer.\1.\2.output.\3.\4",
    ),
    (
        _LAYER + r"intermediate_query\.dense\.(weight|bias)",
        r"qformer.encoder.layer.\1.intermediate_query.dense.\2",
    ),
    (
        _LAYER + r"output_query\.(dense|LayerNorm)\.(weight|bias)",
        r"qformer.encoder.layer.\1.output_query.\2.\3",
    ),
)
# Known parts of BLIP-2 checkpoints that MiniGPT-4 discards or that belong to other components.
_QFORMER_IGNORED = (
    r"Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight",
    r"Qformer\.bert\.embeddings\.position_ids",
    _LAYER + r"(intermediate|output)\..+",  # the text tokens' feed-forward
    r"Qformer\.cls\..+",  # the LM head of the image-grounded text generation loss
    r"visual_encoder\..+",  # the ViT: loaded by the vision encoder from its own file
    r"(t5|opt|llm)_(proj|model)\..+",  # BLIP-2's own LLM and its projection
    r"(vision_proj|text_proj|itm_head)\..+",  # stage-1 contrastive / matching heads
    r"temp",
)

BLIP2_QFORMER_KEY_MAPPING = KeyMapping(rules=_QFORMER_RULES, ignore=_QFORMER_IGNORED)


def convert_blip2_qformer_state_dict(state: Dict[str, torch.Tensor]):
    """Rename a BLIP-2 checkpoint (LAVIS layout) onto :class:`QFormerLinearProjector` 's names.

    Returns a :class:`~minigpt.models.weights.files.ConvertedState`: tensors for ``query_tokens``,
    ``ln_vision.*`` and ``qformer.*``; the text-only parts are in ``ignored``.
    """
    return BLIP2_QFORMER_KEY_MAPPING.convert(state)


class QFormerLinearProjector(nn.Module):
    """BLIP-2 Q-Former (32 queries) + Linear layers to the LLM width. YAML name ``qformer_linear``.

    ``[B, N, in_dim]`` visual tokens -> ``[B, num_query_token, out_dim]``. ``pretrained`` loads
    BLIP-2's original checkpoint (``{"model": {...}}`` with ``Qformer.bert.*`` keys) through an
    explicit key mapping; the load report is kept in ``self.load_report``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_query_token: int = 32,
        hidden_dims: Optional[Sequence[int]] = None,
        qformer: Optional[Dict[str, Any]] = None,
        pretrained: Optional[str] = None,
        freeze_qformer: bool = True,
        **unknown: object,
    ) -> None:
        super().__init__()
        if unknown:  # other projectors take extra keys; a typo here would silently change the model
            logger.warning("%s: ignoring unknown config key(s) %s", PART, sorted(unknown))
        overrides = dict(qformer or {})
        enc = overrides.pop("encoder_hidden_size", in_dim)
        if enc != in_dim:
            raise ValueError(
                f"{PART}: qformer.encoder_hidden_size {enc} differs from the vision width {in_dim}"
            )
        cfg = Blip2QFormerConfig(**{**QFORMER_DEFAULTS, **overrides, "encoder_hidden_size": in_dim})
        hidden = cfg.hidden_size
        self.num_query_token = int(num_query_token)
        self.ln_vision = FP32LayerNorm(in_dim)  # eps 1e-5: torch's default, as in LAVIS
        self.query_tokens = nn.Parameter(torch.zeros(1, self.num_query_token, hidden))
        nn.init.normal_(self.query_tokens, std=cfg.initializer_range)
        self.qformer = Blip2QFormerModel(cfg)
        dims = [hidden, *[int(d) for d in (hidden_dims or [])], out_dim]
        self.proj = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.freeze_qformer = bool(freeze_qformer)
        self.load_report: Optional[LoadReport] = None
        if pretrained and not building_on_meta():
            self.load_report = self.load_pretrained(str(pretrained))
        if self.freeze_qformer:
            for module in (self.ln_vision, self.qformer):
                module.requires_grad_(False)
            self.query_tokens.requires_grad_(False)
            self.train(self.training)

    def num_output_tokens(self, n_in: int) -> int:
        return self.num_query_token

    # -- weights ---------------------------------------------------------------------------------
    def load_pretrained(self, path: str) -> LoadReport:
        """Load BLIP-2's Q-Former, queries and ``ln_vision`` from a LAVIS file; returns the key report."""
        path = resolve_pretrained(path, f"projector.pretrained ({PART})", kind="file")  # or a Hub file id
        converted = convert_blip2_qformer_state_dict(read_state_dict(path, PART))
        # the linear layers are trained by MiniGPT-4 / TinyGPT-V; a BLIP-2 file never has them
        return load_converted(self, converted, path, PART, expected_missing=lambda k: k.startswith("proj."))

    # -- forward ----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "QFormerLinearProjector":
        super().train(mode)
        if self.freeze_qformer:  # a frozen Q-Former never applies dropout (MiniGPT-4's disabled_train)
            self.ln_vision.eval()
            self.qformer.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_dim]`` -> ``[B, num_query_token, out_dim]``."""
        return self.trainable_suffix(self.frozen_prefix(x))

    def frozen_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """``ln_vision`` and the Q-Former: ``[B, N, in_dim]`` -> ``[B, num_query_token, qformer hidden]``."""
        feats = self.ln_vision(x)
        queries = self.query_tokens.expand(x.shape[0], -1, -1)  # [B, Q, 768]
        return self.qformer(query_embeds=queries, encoder_hidden_states=feats).last_hidden_state  # [B, Q, 768]

    def trainable_suffix(self, queries: torch.Tensor) -> torch.Tensor:
        """The linear layers: ``[B, num_query_token, qformer hidden]`` -> ``[B, num_query_token, out_dim]``."""
        return self.proj(queries.to(self.proj[0].weight.dtype))

    def has_frozen_prefix(self) -> bool:
        """True when :meth:`frozen_prefix` is frozen and deterministic (``freeze_qformer``), so its output may be cached."""
        prefix = [self.ln_vision, self.qformer]
        return (
            self.freeze_qformer
            and not self.query_tokens.requires_grad
            and not any(p.requires_grad for m in prefix for p in m.parameters())
            and not any(m.training for m in prefix)
        )
