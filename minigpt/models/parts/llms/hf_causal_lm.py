"""Any transformers causal LM as the language part of a multimodal model."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.constants import IMAGE_SPECIAL_TOKENS
from minigpt.common.hub import resolve_pretrained
from minigpt.models.grid_code import grid_value_code, word_codes
from minigpt.models.parts.llms.tinygptv_phi import (
    PHI_VARIANTS,
    apply_tinygptv_phi,
    load_variant_extras_from_directory,
)

logger = logging.getLogger(__name__)

SHIPPED_TOKENIZER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tokenizer")

# Added tokens the multimodal wrapper relies on; a tokenizer that lacks them gets them added.
IMAGE_TOKENS = list(IMAGE_SPECIAL_TOKENS)

_NORM_TYPES = (nn.LayerNorm,)


def load_tokenizer(
    path: Optional[str] = None, add_image_tokens: bool = True, extra_tokens: Optional[Sequence[str]] = None
):
    """The tokenizer at ``path`` (a local HF directory), or the small BPE one shipped with the package.

    ``add_image_tokens`` adds ``<Img>``, ``</Img>`` and ``<ImageHere>`` where the vocabulary lacks
    them (``model.image_markers: special_tokens``); without it the tokenizer is left as it is.
    ``extra_tokens`` (a family's own markers, e.g. DreamLLM's ``<dream>``) are added where missing.
    """
    from transformers import AutoTokenizer

    path = path or SHIPPED_TOKENIZER
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    tok = AutoTokenizer.from_pretrained(path)
    missing = [t for t in IMAGE_TOKENS if t not in tok.get_vocab()]
    if missing and add_image_tokens:
        tok.add_tokens(missing, special_tokens=False)
    extra = [t for t in (extra_tokens or ()) if t not in tok.get_vocab()]
    if extra:
        tok.add_tokens(extra, special_tokens=False)
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
    pos = torch.arange(n, dtype=torch.float32) / (n - 1)  # [n] in 0..1
    code = grid_value_code(pos, dim)  # [n, dim], 0.5 to 8 cycles over the grid, geometric
    code = code / code.std() * float(emb_in.detach().std())
    with torch.no_grad():
        emb_in[ids] = code.to(emb_in.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not emb_in:
            out.weight[ids] = code.to(out.weight.dtype)
    return n


def init_word_embeddings(model: nn.Module, tokenizer, dim: int = 16, seed: int = 0) -> int:
    """Give the synthetic world's kind and colour words the fixed codes of :func:`~minigpt.models.grid_code.word_codes`.

    Each word's code (``dim`` numbers) fills the first ``dim`` columns of its token's input and output
    embedding rows, zeros the rest, at the embedding's usual scale. The word's token is the first piece
    of the word with a leading space (as it stands in a sentence) and of the bare word; with the shipped
    tokenizer each is one token. Stage 0's word-code head (``word_code_loss_weight``) teaches the visual
    tokens of a shape the same codes, so matching "circle" in a question to the circle's tokens starts as
    a dot product. Returns how many rows were set (0 on a meta build).
    """
    emb_in = model.get_input_embeddings().weight
    if emb_in.is_meta:  # shapes only: there are no values to set
        return 0
    if dim > emb_in.shape[1]:
        raise ValueError(f"llm.word_code_dim {dim} is larger than the LLM's hidden size {emb_in.shape[1]}")
    rows: Dict[int, torch.Tensor] = {}
    for word, code in word_codes(dim, seed).items():
        for text in (" " + word, word):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"llm.word_code_init: the tokenizer gives no token for {text!r}")
            rows.setdefault(int(ids[0]), code)
    ids = list(rows)
    code = torch.zeros(len(ids), emb_in.shape[1])
    code[:, :dim] = torch.stack([rows[i] for i in ids])
    scale = float(emb_in.detach().std()) * emb_in.shape[1] ** 0.5 / float(code.norm(dim=1).mean())
    with torch.no_grad():
        emb_in[ids] = (code * scale).to(emb_in.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not emb_in:
            out.weight[ids] = (code * scale).to(out.weight.dtype)
    return len(ids)


LOW_RESOURCE_BITS = (8, 4)


def _low_resource_kwargs(device_8bit: int, bits: int = 8) -> Dict[str, Any]:
    """``from_pretrained`` arguments for 8- or 4-bit weights on GPU ``device_8bit``; a clear error where impossible."""
    import importlib.util

    if bits not in LOW_RESOURCE_BITS:
        raise ValueError(f"llm.low_resource_bits must be 8 or 4, got {bits!r}")
    problems = []
    if importlib.util.find_spec("bitsandbytes") is None:
        problems.append("bitsandbytes is not installed")
    if not torch.cuda.is_available():
        problems.append("no CUDA GPU is available")
    if problems:
        raise RuntimeError(
            f"llm.low_resource (low_resource_bits={bits}): {bits}-bit loading is impossible here: {'; '.join(problems)}"
        )
    from transformers import BitsAndBytesConfig

    if bits == 4:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": int(device_8bit)}}


def _is_norm(module: nn.Module) -> bool:
    # transformers' RMSNorm classes are per-model; recognise them by name
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("RMSNorm")


def share_qkv_lora_a(model: nn.Module) -> int:
    """Tie ``k_proj`` and ``v_proj``'s LoRA A to ``q_proj``'s in every attention; returns how many were tied.

    LoRA on a fused ``query_key_value`` Linear has one A (``[r, d]``) and one B (``[3d', r]``); on
    separate q/k/v projections that is one shared A and three B's, which is what this makes of peft's
    three LoRA pairs. The trainable count and a trained model then match the fused layout exactly
    (a released checkpoint's A loads into the one tensor; B splits by rows). One difference: peft
    draws LoRA dropout per projection, the fused layer once for all three.
    """
    tied = 0
    for module in model.modules():
        q, k, v = (getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj"))
        if not all(hasattr(p, "lora_A") for p in (q, k, v)):
            continue
        for name, shared in q.lora_A.items():
            for other in (k, v):
                if other.lora_A[name].weight.shape != shared.weight.shape:
                    raise ValueError(f"cannot share LoRA A of differing shapes in {type(module).__name__}")
                other.lora_A[name].weight = shared.weight
        tied += 1
    if not tied:
        raise ValueError("lora_share_qkv_a: no attention with LoRA on q_proj, k_proj and v_proj (lora_target_modules)")
    return tied


def fuse_tanh_gelu(model: nn.Module) -> int:
    """Run every ``gelu_new`` activation of ``model`` as torch's fused tanh GELU; returns how many were replaced.

    transformers' ``gelu_new`` (Phi, GPT-2) writes the tanh approximation of GELU as five separate
    tensor operations, each a pass over the MLP's ``[B, T, intermediate]`` activations, and autograd
    keeps their intermediates for the backward. ``nn.GELU(approximate="tanh")`` is the same function
    in one kernel (transformers' ``gelu_pytorch_tanh``); values agree to float rounding (a few 1e-7
    in float32). The model's config keeps ``gelu_new``, so saved and exported configs are unchanged.
    """
    from transformers.activations import NewGELUActivation

    replaced = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, nn.GELU(approximate="tanh"))
                replaced += 1
    return replaced


class HFCausalLM(nn.Module):
    """A transformers ``AutoModelForCausalLM`` with its tokenizer. YAML name ``hf_causal_lm``.

    ``pretrained`` is a directory in Hugging Face format (real weights), local or a Hub id; without it the
    model is built from ``config`` (a transformers config dict with ``model_type``) at random init.
    ``lora_r > 0`` wraps the model with peft LoRA on ``lora_target_modules``; ``lora_share_qkv_a``
    gives ``q_proj``, ``k_proj`` and ``v_proj`` of each attention one shared LoRA A (TinyGPT-V's LoRA on
    the fused ``query_key_value``; see :func:`share_qkv_lora_a`). ``freeze`` freezes the base weights and
    ``trainable_norms`` unfreezes every norm (TinyGPT-V's recipe), keeping them in float32;
    ``trainable_norm_bias: false`` trains their weights only (as TinyGPT-V does). ``phi_variant: tinygptv`` turns a Phi model into TinyGPT-V's variant
    (:mod:`minigpt.models.parts.llms.tinygptv_phi`). ``low_resource`` loads ``pretrained`` in
    ``low_resource_bits`` (8, or 4: NF4) bits on GPU ``device_8bit`` (needs bitsandbytes and CUDA). ``add_image_tokens: false`` (set by the model for
    ``image_markers: text``) leaves the tokenizer without added image-marker tokens. ``fused_gelu`` runs
    a ``gelu_new`` activation as torch's one-kernel tanh GELU (:func:`fuse_tanh_gelu`).

    Built on the meta device (``load_model(..., device="meta")``) no weight file is read: an existing
    ``pretrained`` directory contributes only its ``config.json``, a missing one is replaced by the
    ``config`` block (the published config), and a missing tokenizer by the shipped one. Such a
    model is for shapes and parameter counts only.
    """

    def __init__(
        self,
        pretrained: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        tokenizer: Optional[str] = None,
        freeze: bool = False,
        trainable_norms: bool = False,
        trainable_norm_bias: bool = True,
        lora_r: int = 0,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: Optional[List[str]] = None,
        lora_share_qkv_a: bool = False,
        torch_dtype: str = "float32",
        attn_implementation: str = "sdpa",
        ordinal_grid_init: bool = False,
        word_code_init: bool = False,
        word_code_dim: int = 16,
        word_code_seed: int = 0,
        phi_variant: Optional[str] = None,
        low_resource: bool = False,
        device_8bit: int = 0,
        low_resource_bits: int = 8,
        add_image_tokens: bool = True,
        extra_tokens: Optional[List[str]] = None,
        fused_gelu: bool = True,
        **_: object,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        from minigpt.models.base_model import building_on_meta

        if phi_variant is not None and phi_variant not in PHI_VARIANTS:
            raise ValueError(
                f"llm.phi_variant: unknown variant {phi_variant!r}; known: {', '.join(PHI_VARIANTS)}"
            )
        on_meta = building_on_meta()
        # a Hub id (org/name) stands for its files in the local HF cache (minigpt.common.hub)
        pretrained = resolve_pretrained(pretrained, "llm.pretrained", required=not on_meta)
        tokenizer = resolve_pretrained(tokenizer, "llm.tokenizer", required=not on_meta)
        have_dir = bool(pretrained) and os.path.isdir(pretrained)
        if pretrained and not have_dir and not on_meta:
            raise FileNotFoundError(f"llm.pretrained: directory not found: {pretrained}")
        tok_path = tokenizer or (pretrained if have_dir else None)
        if on_meta and tok_path and not os.path.isdir(tok_path):
            logger.info("meta build: tokenizer %s not found, using the shipped one (shapes only)", tok_path)
            tok_path = None
        self.tokenizer = load_tokenizer(tok_path, add_image_tokens=add_image_tokens, extra_tokens=extra_tokens)
        dtype = getattr(torch, torch_dtype)
        # TinyGPT-V's per-head Q/K LayerNorm is transformers' own switch
        variant_kwargs: Dict[str, Any] = {"qk_layernorm": True} if phi_variant == "tinygptv" else {}
        if have_dir and not on_meta:
            load_kwargs: Dict[str, Any] = dict(dtype=dtype, attn_implementation=attn_implementation)
            if low_resource:
                load_kwargs.update(_low_resource_kwargs(device_8bit, int(low_resource_bits)))
            model = AutoModelForCausalLM.from_pretrained(pretrained, **load_kwargs, **variant_kwargs)
        else:
            if low_resource and not on_meta:
                _low_resource_kwargs(device_8bit, int(low_resource_bits))  # no GPU or bitsandbytes: say so first
                raise ValueError(
                    f"llm.low_resource: {low_resource_bits}-bit loading needs real weights in `pretrained`"
                )
            if have_dir:  # on meta: the directory's shapes, none of its weights
                hf_cfg = AutoConfig.from_pretrained(pretrained, **variant_kwargs)
            else:
                hf_cfg = self._config_from_block(config, pretrained, variant_kwargs)
            hf_cfg._attn_implementation = attn_implementation
            model = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
        if phi_variant == "tinygptv":
            apply_tinygptv_phi(model)
            if have_dir and not on_meta:
                # post_layernorm and a fused query_key_value are names stock Phi does not load
                loaded, unexpected = load_variant_extras_from_directory(
                    model, pretrained, model.config.num_attention_heads
                )
                if loaded:
                    logger.info(
                        "llm.pretrained %s: %d TinyGPT-V tensors converted and loaded",
                        pretrained,
                        len(loaded),
                    )
                if unexpected:
                    logger.warning(
                        "llm.pretrained %s: %d tensors unused, e.g. %s",
                        pretrained,
                        len(unexpected),
                        unexpected[:5],
                    )
        if fused_gelu:
            fuse_tanh_gelu(model)
        if model.get_input_embeddings().num_embeddings < len(self.tokenizer):
            # mean resizing reads the old rows' values, which a meta build has not got
            model.resize_token_embeddings(len(self.tokenizer), mean_resizing=not on_meta)
        if ordinal_grid_init and not pretrained:
            init_grid_embeddings(model, self.tokenizer)
        if word_code_init and not pretrained:
            init_word_embeddings(model, self.tokenizer, int(word_code_dim), int(word_code_seed))
        if freeze:
            for p in model.parameters():
                p.requires_grad_(False)
        if trainable_norms:
            for m in model.modules():
                if _is_norm(m):
                    m.float()
                    for name, p in m.named_parameters(recurse=False):
                        p.requires_grad_(name != "bias" or bool(trainable_norm_bias))
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
            if lora_share_qkv_a:
                share_qkv_lora_a(model)
        self.model = model

    def _config_from_block(
        self, config: Optional[Dict[str, Any]], pretrained: Optional[str], variant_kwargs: Dict[str, Any]
    ):
        from transformers import AutoConfig

        if not config or "model_type" not in config:
            if pretrained:
                raise FileNotFoundError(
                    f"llm.pretrained: directory not found: {pretrained}, and no `config` block (with a "
                    "model_type) to build the shapes from"
                )
            raise ValueError(
                "llm: give either `pretrained` (a local directory) or `config` with a model_type"
            )
        cfg = dict(config)
        model_type = cfg.pop("model_type")
        for key, value in variant_kwargs.items():
            if key in cfg and cfg[key] != value:
                raise ValueError(
                    f"llm.config.{key}={cfg[key]!r} contradicts llm.phi_variant (needs {value!r})"
                )
            cfg[key] = value
        # absent or null: the tokenizer's (a toy-width twin of a real preset sets them null)
        from_tokenizer = {
            "vocab_size": len(self.tokenizer),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "bos_token_id": self.tokenizer.bos_token_id,
        }
        for key, value in from_tokenizer.items():
            if cfg.get(key) is None:
                cfg[key] = value
        return AutoConfig.for_model(model_type, **cfg)

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

    @property
    def causal_lm(self) -> nn.Module:
        """The transformers causal LM itself (inside peft's wrapper when LoRA is on; LoRA layers included)."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @property
    def takes_logits_to_keep(self) -> bool:
        """Whether the causal LM's forward takes ``logits_to_keep`` (an int keeps the last positions)."""
        if not hasattr(self, "_takes_logits_to_keep"):
            self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(self.causal_lm.forward).parameters
        return self._takes_logits_to_keep

    @property
    def supports_logits_mask(self) -> bool:
        """Whether ``logits_to_keep`` may also be a boolean ``[B, T]`` mask selecting positions.

        transformers reads such a mask through ``slice_logits_to_keep`` from 5.21 on; earlier releases
        take an int or a 1-D index only, and then the answer loss computes every position's logits.
        """
        if not hasattr(self, "_supports_logits_mask"):
            import transformers.modeling_utils as modeling_utils

            self._supports_logits_mask = self.takes_logits_to_keep and hasattr(modeling_utils, "slice_logits_to_keep")
        return self._supports_logits_mask

    def forward(self, **kwargs):
        return self.model(**kwargs)

    def generate(self, **kwargs):
        return self.model.generate(**kwargs)
