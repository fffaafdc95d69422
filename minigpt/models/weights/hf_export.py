"""``export --format hf``: a folder transformers loads without this library, optionally pushed to the Hub.

What the folder holds::

    config.json, model.safetensors, generation_config.json   the model, as one of
        Blip2ForConditionalGeneration   MiniGPT-4's composition (EVA ViT-g, Q-Former, one Linear, LLM)
        LlavaForConditionalGeneration   CLIP tower + two-layer MLP + LLM
        remote code                     anything else (TinyGPT-V): config.json's ``auto_map`` names
                                        ``modeling_minigpt.py``, written into the folder; load with
                                        ``trust_remote_code=True``
    tokenizer files                     with the model's chat template (:mod:`minigpt.models.weights.hf_card`)
    preprocessor / processor config     the eval image transform (resize, normalise); LLaVA and BLIP-2
                                        also get their processor
    adapter/                            LoRA as a peft adapter (``adapter_config.json`` +
                                        ``adapter_model.safetensors``), when LoRA is kept separate;
                                        ``PeftModel.from_pretrained(model, "<folder>/adapter")``
    README.md                           the model card

:func:`minigpt.models.weights.hf_layouts.hf_layout` picks the class (exact weight maps; the logits
equal the source model's). With ``merge_lora`` (the default) LoRA is folded into the LLM's weights.
A model with ``image_markers: text`` (the released presets) gets ``<ImageHere>`` as a token
(:func:`image_slot`).
``push_to_hub`` uploads the finished folder through ``huggingface_hub``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from minigpt.common.hub import hub_offline
from minigpt.models.weights import hf_layouts
from minigpt.models.weights.export_state import (
    check_export_target,
    export_state_dicts,
    is_lora_key,
    staged_export,
)
from minigpt.models.weights.hf_card import chat_template, model_card

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
_LORA_KEY = re.compile(r"^(?P<module>llm\.model\..+)\.(?P<which>lora_[AB])\.[^.]+\.weight$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _resolve_dtype(model: nn.Module, dtype: Optional[str]) -> torch.dtype:
    if dtype is None:
        return next(model.llm.causal_lm.parameters()).dtype
    if dtype not in _DTYPES:
        raise ValueError(f"export dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _image_transform(model: nn.Module) -> Dict[str, Any]:
    """Size, mean and std of the model's eval image processor (the ``preprocess`` block)."""
    from minigpt.processors.image import CLIP_MEAN, CLIP_STD

    pre = ((model.cfg or {}).get("preprocess") or {}).get("vis_processor") or {}
    block = dict(pre.get("eval") or {})
    # the encoder takes one size only; a preprocess block that says otherwise is overruled, loudly
    size = int(getattr(model.vision_encoder, "image_size", 0) or block.get("image_size") or 224)
    if block.get("image_size") and int(block["image_size"]) != size:
        logger.warning(
            "export --format hf: preprocess image_size %s differs from the vision encoder's %d; "
            "the exported image processor uses %d",
            block["image_size"],
            size,
            size,
        )
    if block.get("name") not in (None, "image_eval"):
        logger.warning(
            "export --format hf: the eval image processor %s is written as a resize to %d px and normalise",
            block.get("name"),
            size,
        )
    return {
        "size": size,
        "mean": list(block.get("mean") or CLIP_MEAN),
        "std": list(block.get("std") or CLIP_STD),
    }


def _save_processors(model: nn.Module, layout: str, tokenizer: Any, directory: str) -> None:
    """The image processor (and for LLaVA / BLIP-2 the whole processor) into ``directory``."""
    from transformers import BlipImageProcessor, CLIPImageProcessor

    t = _image_transform(model)
    common = dict(
        size={"height": t["size"], "width": t["size"]},
        resample=3,
        image_mean=t["mean"],
        image_std=t["std"],
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
    )
    if layout == hf_layouts.LLAVA:
        from transformers import LlavaProcessor

        image = CLIPImageProcessor(do_resize=True, do_center_crop=False, **common)
        patch = model.vision_encoder.model.config.patch_size
        strategy = "default" if model.vision_encoder.drop_cls else "full"
        LlavaProcessor(
            image_processor=image,
            tokenizer=tokenizer,
            patch_size=patch,
            image_token=model.layout.media_token,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1,
            chat_template=tokenizer.chat_template,
        ).save_pretrained(directory)
    elif layout == hf_layouts.BLIP2:
        from transformers import Blip2Processor

        image = BlipImageProcessor(do_resize=True, **common)
        Blip2Processor(
            image_processor=image, tokenizer=tokenizer, num_query_tokens=model.num_image_tokens()
        ).save_pretrained(directory)
    else:
        CLIPImageProcessor(do_resize=True, do_center_crop=False, **common).save_pretrained(directory)


def write_peft_adapter(
    model: nn.Module,
    lora: Dict[str, torch.Tensor],
    layout: str,
    directory: str,
    base_path: str,
    dtype: torch.dtype,
) -> str:
    """LoRA tensors (canonical names) as a peft adapter folder for the exported model of ``layout``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    tensors, leaves = {}, set()
    for key, value in lora.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise ValueError(
                f"export --format hf: LoRA tensor {key} is not on the LLM; peft adapters cover the LLM only"
            )
        module = hf_layouts.hf_llm_name(layout, m.group("module"))
        leaves.add(module.rsplit(".", 1)[-1])
        # peft's file layout: base_model.model.<module>.lora_A.weight (no adapter name)
        tensors[f"base_model.model.{module}.{m.group('which')}.weight"] = (
            value.detach().to("cpu", dtype).clone().contiguous()
        )
    llm = (model.cfg or {}).get("llm") or {}
    prefix = hf_layouts.LLM_PREFIX[layout]
    # a regex, so the vision tower's q_proj/v_proj (CLIP has them too) stay without LoRA
    target = rf"{re.escape(prefix)}.*\.({'|'.join(sorted(leaves))})"
    os.makedirs(directory)
    LoraConfig(
        r=int(llm.get("lora_r")),
        lora_alpha=int(llm.get("lora_alpha", 16)),
        lora_dropout=float(llm.get("lora_dropout", 0.0)),
        target_modules=target,
        bias="none",
        base_model_name_or_path=base_path,
    ).save_pretrained(directory)
    save_file(tensors, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})
    return directory


def _param_name(module: nn.Module, param: torch.Tensor) -> str:
    return next(n for n, p in module.named_parameters(remove_duplicate=False) if p is param)


def image_slot(model: nn.Module, base: Dict[str, torch.Tensor]) -> Tuple[Any, int, Optional[int]]:
    """``(tokenizer, image token id, new vocabulary size or None)`` the export writes.

    With ``image_markers: special_tokens`` the model's own. With ``image_markers: text`` (the released
    presets) the image slot has no token, so a copy of the tokenizer gets ``<ImageHere>`` as an added
    special token; where its id is past the embedding rows, ``base`` gets zero rows for it in the input
    and output embeddings (the input row is never read: image features replace it) and the new size
    is returned. Generation never emits it (``suppress_tokens``); other tokens' logits are unchanged.
    """
    if model.image_token_id >= 0:
        return model.tokenizer, model.image_token_id, None
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.add_tokens([model.layout.media_token], special_tokens=True)
    slot = tokenizer.convert_tokens_to_ids(model.layout.media_token)
    lm = model.llm.causal_lm
    rows = lm.get_input_embeddings().weight.shape[0]
    if slot < rows:
        return tokenizer, slot, None
    out = lm.get_output_embeddings()
    params = [lm.get_input_embeddings().weight, out.weight] + ([out.bias] if out.bias is not None else [])
    for param in params:
        key = "llm.model." + _param_name(lm, param)
        grown = base[key].new_zeros((slot + 1, *base[key].shape[1:]))
        grown[: base[key].shape[0]] = base[key]
        base[key] = grown
    return tokenizer, slot, slot + 1


def push_to_hub(folder: str, repo_id: str, private: bool = False, token: Optional[str] = None) -> str:
    """Upload the export ``folder`` to the Hub repository ``repo_id`` (created if absent); return its URL."""
    if hub_offline():
        raise RuntimeError(
            f"push_to_hub {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; the export is in {folder} "
            "(unset HF_HUB_OFFLINE and run again, or upload it later with `huggingface-cli upload`)"
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="Upload minigpt export")
    except Exception as exc:  # network, auth and HTTP errors differ by huggingface_hub version
        raise RuntimeError(
            f"push_to_hub {repo_id}: upload of {folder} failed ({type(exc).__name__}: {exc}); the export stays "
            "there. Check the network and your token (`huggingface-cli login` or HF_TOKEN)"
        ) from exc
    url = str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")
    logger.info("pushed %s to %s", folder, url)
    return url


def export_hf(
    model: nn.Module,
    out_dir: str,
    merge_lora: bool = True,
    dtype: Optional[str] = None,
    push_to: Optional[str] = None,
    private: bool = False,
    token: Optional[str] = None,
) -> str:
    """Write ``model`` to ``out_dir`` as a Hugging Face folder (see the module docs); return ``out_dir``.

    ``dtype`` (float32 | float16 | bfloat16) is the weights' dtype, by default the LLM's. With
    ``merge_lora=False`` the base weights are written without LoRA and LoRA goes to ``adapter/``.
    ``push_to`` uploads the folder to that Hub repository afterwards. ``out_dir`` must not exist
    or be empty; it is written under a temporary name and renamed when complete.
    """
    out_dir = check_export_target(model, out_dir)
    layout, reasons = hf_layouts.hf_layout(model)
    torch_dtype = _resolve_dtype(model, dtype)
    base, lora = export_state_dicts(model, merge_lora)
    build = {
        hf_layouts.BLIP2: hf_layouts.blip2_model,
        hf_layouts.LLAVA: hf_layouts.llava_model,
        hf_layouts.REMOTE: hf_layouts.remote_model,
    }[layout]
    tokenizer, slot_id, vocab_size = image_slot(model, base)
    hf = build(model, base, torch_dtype, slot_id, vocab_size)
    gen = hf.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
    )
    gen.suppress_tokens = [slot_id]  # a placeholder for image features, never an answer
    saved_template = tokenizer.chat_template
    has_lora = any(is_lora_key(n) for n, _ in model.named_parameters())
    info = {
        "dtype": str(torch_dtype).replace("torch.", ""),
        "adapter": ADAPTER_DIR if lora else None,
        "lora": "merged into the weights" if has_lora and not lora else "none",
        "image_token_id": slot_id,
    }
    try:
        with staged_export(out_dir) as tmp:
            hf.save_pretrained(tmp)
            if layout == hf_layouts.REMOTE:
                from minigpt.models.weights import hf_remote_code

                shutil.copyfile(hf_remote_code.__file__, os.path.join(tmp, hf_layouts.REMOTE_MODULE + ".py"))
            tokenizer.chat_template = chat_template(model)
            _save_processors(model, layout, tokenizer, tmp)
            # last, and into tokenizer_config.json (not only chat_template.jinja): older transformers read it there
            tokenizer.save_pretrained(tmp, save_jinja_files=False)
            if lora:
                write_peft_adapter(
                    model, lora, layout, os.path.join(tmp, ADAPTER_DIR), push_to or out_dir, torch_dtype
                )
            with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as fh:
                fh.write(model_card(model, layout, info, repo=push_to))
    finally:
        tokenizer.chat_template = saved_template
    why = "" if layout != hf_layouts.REMOTE else f" (no stock class: {reasons})"
    logger.info("exported %s as %s to %s%s", type(model).__name__, layout, out_dir, why)
    if push_to:
        push_to_hub(out_dir, push_to, private=private, token=token)
    return out_dir
