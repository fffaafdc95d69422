"""Any transformers causal LM as the language part of a multimodal model."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.registry import registry

logger = logging.getLogger(__name__)

SHIPPED_TOKENIZER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tokenizer")

# Added tokens the multimodal wrapper relies on; a tokenizer that lacks them gets them added.
IMAGE_TOKENS = ["<Img>", "</Img>", "<ImageHere>"]

_NORM_TYPES = (nn.LayerNorm,)


def load_tokenizer(path: Optional[str] = None):
    """The tokenizer at ``path`` (a local HF directory), or the small BPE one shipped with the package."""
    from transformers import AutoTokenizer

    path = path or SHIPPED_TOKENIZER
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    tok = AutoTokenizer.from_pretrained(path)
    missing = [t for t in IMAGE_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing, special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def init_grid_embeddings(model: nn.Module, tokenizer, n: int = 101) -> int:
    """Give the box grid tokens ``<0>`` ... ``<100>`` embeddings that vary smoothly with their value.

    A randomly initialised LM sees 101 unrelated symbols and must learn their order from box
    targets alone; with a sinusoidal code of the value (at the embedding's usual scale) in the
    input and output embeddings, neighbouring coordinates start out similar, so a box that is
    a few units off is already "almost right" to the loss. Returns how many rows were set.
    """
    ids = [tokenizer.convert_tokens_to_ids(f"<{i}>") for i in range(n)]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        return 0
    emb_in = model.get_input_embeddings().weight
    if emb_in.is_meta:  # shapes only: there are no values to set
        return 0
    dim = emb_in.shape[1]
    pos = torch.arange(n, dtype=torch.float32)[:, None] / (n - 1)  # [n, 1] in 0..1
    k = torch.arange(dim // 2, dtype=torch.float32)[None, :]
    cycles = 0.5 * 16.0 ** (k / max(1, dim // 2 - 1))  # 0.5 to 8 cycles over the grid, geometric
    angles = 2.0 * torch.pi * cycles * pos
    code = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)[:, :dim]  # [n, dim]
    if code.shape[1] < dim:
        code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
    code = code / code.std() * float(emb_in.detach().std())
    with torch.no_grad():
        emb_in[ids] = code.to(emb_in.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not emb_in:
            out.weight[ids] = code.to(out.weight.dtype)
    return n


def _is_norm(module: nn.Module) -> bool:
    # transformers' RMSNorm classes are per-model; recognise them by name
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("RMSNorm")


@registry.register_llm("hf_causal_lm")
class HFCausalLM(nn.Module):
    """A transformers ``AutoModelForCausalLM`` with its tokenizer. YAML name ``hf_causal_lm``.

    ``pretrained`` is a local directory in Hugging Face format (real weights); without it the
    model is built from ``config`` (a transformers config dict with ``model_type``) at random init.
    ``lora_r > 0`` wraps the model with peft LoRA on ``lora_target_modules``; ``freeze`` freezes
    the base weights and ``trainable_norms`` unfreezes every norm (TinyGPT-V's recipe), keeping them
    in float32.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        tokenizer: Optional[str] = None,
        freeze: bool = False,
        trainable_norms: bool = False,
        lora_r: int = 0,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: Optional[List[str]] = None,
        torch_dtype: str = "float32",
        attn_implementation: str = "sdpa",
        ordinal_grid_init: bool = False,
        **_: object,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        self.tokenizer = load_tokenizer(tokenizer or pretrained)
        dtype = getattr(torch, torch_dtype)
        if pretrained:
            if not os.path.isdir(pretrained):
                raise FileNotFoundError(f"llm.pretrained: directory not found: {pretrained}")
            model = AutoModelForCausalLM.from_pretrained(
                pretrained, dtype=dtype, attn_implementation=attn_implementation
            )
        else:
            if not config or "model_type" not in config:
                raise ValueError("llm: give either `pretrained` (a local directory) or `config` with a model_type")
            cfg = dict(config)
            model_type = cfg.pop("model_type")
            cfg.setdefault("vocab_size", len(self.tokenizer))
            cfg.setdefault("pad_token_id", self.tokenizer.pad_token_id)
            cfg.setdefault("eos_token_id", self.tokenizer.eos_token_id)
            cfg.setdefault("bos_token_id", self.tokenizer.bos_token_id)
            hf_cfg = AutoConfig.for_model(model_type, **cfg)
            hf_cfg._attn_implementation = attn_implementation
            model = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
        if model.get_input_embeddings().num_embeddings < len(self.tokenizer):
            model.resize_token_embeddings(len(self.tokenizer))
        if ordinal_grid_init and not pretrained:
            init_grid_embeddings(model, self.tokenizer)
        if freeze:
            for p in model.parameters():
                p.requires_grad_(False)
        if trainable_norms:
            for m in model.modules():
                if _is_norm(m):
                    m.float()
                    for p in m.parameters():
                        p.requires_grad_(True)
        if lora_r and lora_r > 0:
            from peft import LoraConfig, get_peft_model

            lcfg = LoraConfig(
                r=int(lora_r),
                lora_alpha=int(lora_alpha),
                lora_dropout=float(lora_dropout),
                target_modules=list(lora_target_modules or ["q_proj", "v_proj"]),
                bias="none",
                task_type="CAUSAL_LM",
            )
            trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}
            model = get_peft_model(model, lcfg)
            # peft freezes everything but LoRA; keep what the recipe made trainable before it
            for n, p in model.named_parameters():
                base = n.replace("base_model.model.", "", 1).replace(".base_layer", "")
                if base in trainable_before:
                    p.requires_grad_(True)
        self.model = model

    @classmethod
    def from_config(cls, cfg: DictConfig | Dict[str, Any]) -> "HFCausalLM":
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        return cls(**{k: v for k, v in cfg.items() if k != "name"})

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, **kwargs):
        return self.model(**kwargs)

    def generate(self, **kwargs):
        return self.model.generate(**kwargs)
