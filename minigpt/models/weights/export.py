"""Export a trained model as a self-contained directory that ``load_model_and_preprocess(<dir>)`` reloads.

An export directory holds everything needed to rebuild the model with no other file::

    export.json          manifest: format version, arch, model_type, LoRA handling, the list of files
    config.yaml          the composed ``model:`` block: ckpt and every `pretrained` path null, the LLM's
                         full transformers config in ``llm.config``, ``llm.tokenizer: tokenizer``
                         (relative to the directory), the ``preprocess`` block of the processors
    model.safetensors    every parameter and persistent buffer, under the canonical names of
                         :mod:`minigpt.models.weights.checkpoint` (LoRA merged in, or without the LoRA tensors)
    lora.safetensors     LoRA's own tensors, only when they are kept separate (``merge_lora=False``)
    tokenizer/           the tokenizer, with the image tokens the model added

With ``merge_lora=True`` peft's ``merge_and_unload`` folds LoRA into the base weights (on a copy of
the LLM; the model passed in is not changed) and the config says ``lora_r: 0``. With
``merge_lora=False`` the config keeps the LoRA settings and ``lora.safetensors`` its weights, so
training can go on from the export.

Command line (a train or eval config names the model; ``--ckpt`` its trained checkpoint(s))::

    python -m minigpt.models.weights.export --cfg-path train_configs/quickstart_stage1.yaml \\
        --ckpt output/quickstart_stage1 --out exports/tiny [--keep-lora] [--options key=value ...]

``--format hf`` writes a Hugging Face folder instead (:mod:`minigpt.models.weights.hf_export`), with
``--dtype`` and ``--push-to-hub ORG/NAME [--private]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.config.shipped import cfg_path_arg
from minigpt.models.weights.checkpoint import expand_checkpoints
from minigpt.models.weights.export_state import (
    check_export_target,
    export_state_dicts,
    is_lora_key,
    save_safetensors,
    staged_export,
)
from minigpt.models.weights.names import canonical_name, copy_into_model

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "minigpt-export"
EXPORT_VERSION = 1
MANIFEST_FILE = "export.json"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
LORA_FILE = "lora.safetensors"
TOKENIZER_DIR = "tokenizer"

# Keys of a transformers config that say nothing about the LLM's weights or computation here
# (versions, provenance, classification-head labels, output switches left at their defaults);
# the dtype is llm.torch_dtype's business
_HF_CONFIG_DROP = (
    "transformers_version",
    "_name_or_path",
    "architectures",
    "dtype",
    "torch_dtype",
    "id2label",
    "label2id",
    "problem_type",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
)


def _llm_base_model(llm: nn.Module) -> nn.Module:
    """The transformers model inside the ``llm`` part, under peft's wrapper if there is one."""
    inner = llm.model
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def _null_weight_paths(block: Any) -> None:
    """Set every ``pretrained`` key below ``block`` to None: the export holds those weights itself."""
    if isinstance(block, dict):
        for key, value in block.items():
            if key == "pretrained":
                block[key] = None
            else:
                _null_weight_paths(value)


def _hf_config_dict(llm: nn.Module) -> Dict[str, Any]:
    """The LLM's transformers config as plain JSON values, enough for ``AutoConfig.for_model``."""
    config = _llm_base_model(llm).config
    out = json.loads(config.to_json_string(use_diff=False))
    for key in _HF_CONFIG_DROP:
        out.pop(key, None)
    out["model_type"] = config.model_type
    return out


def export_config(model: nn.Module, merged_lora: bool) -> Dict[str, Any]:
    """The ``model:`` block an export writes: ``model.cfg`` with weight paths removed (see module docs)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ValueError(
            "export_model needs a model built from config (load_model / from_config), whose `cfg` "
            f"it writes; this {type(model).__name__} has cfg=None"
        )
    out = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(dict(cfg))
    out["ckpt"] = None
    _null_weight_paths(out)
    llm = out.setdefault("llm", {})
    if llm.get("low_resource"):
        raise ValueError(
            "llm.low_resource: an 8-bit LLM cannot be exported; load it without low_resource first"
        )
    # the weights file holds every LLM tensor, so the LLM is built from its exact config, not a directory
    llm["config"] = _hf_config_dict(model.llm)
    llm["tokenizer"] = TOKENIZER_DIR
    if merged_lora:
        llm["lora_r"] = 0
    return out


def _list_files(root: str) -> List[str]:
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            files.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(files)


def export_model(model: nn.Module, out_dir: str, merge_lora: bool = True) -> str:
    """Write ``model`` to ``out_dir`` as a self-contained export (layout in the module docs); return ``out_dir``.

    ``out_dir`` must not exist or be empty. The directory is written under a temporary name next
    to it and renamed when complete, so a failed export leaves no half-written directory.
    """
    out_dir = check_export_target(model, out_dir)
    base, lora = export_state_dicts(model, merge_lora)
    has_lora = bool(lora) or (merge_lora and any(is_lora_key(n) for n, _ in model.named_parameters()))
    cfg = export_config(model, merged_lora=merge_lora and has_lora)
    with staged_export(out_dir) as tmp:
        save_safetensors(base, os.path.join(tmp, WEIGHTS_FILE))
        if lora:
            save_safetensors(lora, os.path.join(tmp, LORA_FILE))
        model.tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
        header = (
            "# A minigpt export: reload with minigpt.models.load_model_and_preprocess(<this directory>).\n"
            f"# Weights are in {WEIGHTS_FILE}" + (f" and {LORA_FILE}" if lora else "")
            + "; llm.tokenizer is relative to this directory.\n"
        )
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as fh:
            fh.write(header + OmegaConf.to_yaml(OmegaConf.create({"model": cfg})))
        manifest = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "arch": cfg.get("arch"),
            "model_type": cfg.get("model_type"),
            "lora": "separate" if lora else ("merged" if has_lora else "none"),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "files": _list_files(tmp),
        }
        with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
    logger.info("exported %s (LoRA %s) to %s", cfg.get("arch"), manifest["lora"], out_dir)
    return out_dir


# -- reloading --------------------------------------------------------------------------------------
def read_manifest(path: str) -> Dict[str, Any]:
    """The manifest of the export at ``path``, after checking that every file it lists is there."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"export directory not found: {path}")
    manifest_path = os.path.join(path, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(
            f"{manifest_path} not found: {path} is not a minigpt export (write one with "
            "minigpt.models.weights.export.export_model or `python -m minigpt.models.weights.export`)"
        )
    try:
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest_path}: unreadable export manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{manifest_path}: not a {EXPORT_FORMAT} manifest")
    if int(manifest.get("version", 0)) > EXPORT_VERSION:
        raise ValueError(
            f"{manifest_path}: export format version {manifest['version']} is newer than this minigpt "
            f"reads ({EXPORT_VERSION}); upgrade minigpt"
        )
    for name in manifest.get("files") or []:
        if not os.path.isfile(os.path.join(path, name)):
            raise FileNotFoundError(f"incomplete export {path}: {os.path.join(path, name)} is missing")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if name not in (manifest.get("files") or []):
            raise ValueError(f"{manifest_path}: the manifest does not list {name}")
    return manifest


def _read_weights(file: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(file)
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{file}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def load_exported_config(path: str) -> DictConfig:
    """The ``model:`` block of the export at ``path``, with ``llm.tokenizer`` made absolute."""
    read_manifest(path)
    cfg_path = os.path.join(path, CONFIG_FILE)
    cfg = OmegaConf.load(cfg_path)
    if not isinstance(cfg, DictConfig) or "model" not in cfg:
        raise ValueError(f"{cfg_path}: expected a `model:` block")
    model_cfg = cfg.model
    tok = model_cfg.get("llm", {}).get("tokenizer")
    if tok and not os.path.isabs(str(tok)):
        model_cfg.llm.tokenizer = os.path.join(os.path.abspath(path), str(tok))
    return model_cfg


def load_exported(
    path: str,
    is_eval: bool = False,
    device: str = "cpu",
    checkpoint: Optional[str] = None,
    overrides: Optional[Dict[str, Any]] = None,
) -> nn.Module:
    """Rebuild the model exported to ``path`` (see :func:`export_model`) with its exported weights.

    ``overrides`` (a nested dict) is merged over the exported config, ``checkpoint`` loaded after the
    exported weights, as for :func:`minigpt.models.load_model`; ``device="meta"`` builds shapes only.
    Every tensor of the rebuilt model must come from the export (a missing or foreign name is an
    error naming the file), except LoRA tensors that ``overrides`` add to a model exported without.
    """
    from minigpt.common.registry import registry

    path = str(path)
    manifest = read_manifest(path)
    cfg = load_exported_config(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
    if checkpoint is not None:
        cfg.ckpt = checkpoint
    model_cls = registry.get_model_class(str(cfg.arch))
    if device == "meta":
        cfg.ckpt = None
        with torch.device("meta"):
            return model_cls.from_config(cfg)
    ckpt, cfg.ckpt = cfg.get("ckpt"), None  # exported weights first, then any checkpoint over them
    model = model_cls.from_config(cfg)
    files = [WEIGHTS_FILE] + ([LORA_FILE] if LORA_FILE in manifest["files"] else [])
    loaded: List[str] = []
    for name in files:
        file = os.path.join(path, name)
        got, unexpected = copy_into_model(model, _read_weights(file), file)
        if unexpected:
            raise ValueError(
                f"{file}: {len(unexpected)} tensors have no place in the model built from "
                f"{os.path.join(path, CONFIG_FILE)}, e.g. {unexpected[:5]}"
            )
        loaded += got
    done = set(loaded)
    missing = [canonical_name(k) for k in model.state_dict() if canonical_name(k) not in done]
    if LORA_FILE not in files:  # LoRA asked for by overrides starts fresh (B = 0), as in a new stage
        missing = [k for k in missing if not is_lora_key(k)]
    if missing:
        raise ValueError(
            f"{os.path.join(path, files[-1])}: the export lacks {len(missing)} tensors of the model, "
            f"e.g. {missing[:5]}"
        )
    if ckpt:
        for p in expand_checkpoints(ckpt):
            model.load_checkpoint(p)
        cfg.ckpt = ckpt
    if is_eval:
        model.eval()
    return model.to(device)


# -- command line -----------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m minigpt.models.weights.export",
        description="Export a trained model (LoRA merged or kept) with its tokenizer, processors and config.",
    )
    p.add_argument("--cfg-path", required=True, type=cfg_path_arg, help="the train or eval config that names the model")
    p.add_argument(
        "--ckpt",
        nargs="+",
        default=None,
        metavar="PATH",
        help="trained checkpoint(s): a run's output directory, a checkpoint directory, a trained.safetensors "
        "or a released .pth; several load in order (default: the config's model.ckpt)",
    )
    p.add_argument("--out", required=True, help="the export directory to create (must not exist or be empty)")
    p.add_argument("--keep-lora", action="store_true", help="keep LoRA weights separate instead of merging")
    p.add_argument(
        "--format",
        choices=("minigpt", "hf"),
        default="minigpt",
        help="minigpt: reloads with load_model_and_preprocess; hf: a folder transformers loads without minigpt "
        "(BLIP-2, LLaVA or remote code; LoRA kept as a peft adapter with --keep-lora)",
    )
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="--format hf: the weights' dtype (default: the LLM's)")
    p.add_argument("--push-to-hub", default=None, metavar="ORG/NAME",
                   help="--format hf: upload the folder to this Hub repository afterwards")
    p.add_argument("--private", action="store_true", help="--push-to-hub: create the repository private")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Compose the config, load the checkpoint(s), export; print and return the export directory."""
    from minigpt.common.config import Config
    from minigpt.common.registry import registry

    args = parse_args(argv)
    options = list(args.options)
    if args.ckpt:
        # JSON is YAML: quoted, so a path with ':' or '#' survives the --options parser
        options.append("model.ckpt=" + json.dumps(args.ckpt[0] if len(args.ckpt) == 1 else args.ckpt))
    model_cfg = Config(args.cfg_path, options).model_cfg
    if not model_cfg.get("ckpt"):
        logger.warning("no --ckpt and no model.ckpt in %s: exporting the preset's initial weights", args.cfg_path)
    model = registry.get_model_class(str(model_cfg.arch)).from_config(model_cfg)
    if args.format == "hf":
        from minigpt.models.weights.hf_export import export_hf

        out = export_hf(model.eval(), args.out, merge_lora=not args.keep_lora, dtype=args.dtype,
                        push_to=args.push_to_hub, private=args.private)
    else:
        if args.push_to_hub or args.dtype:
            raise SystemExit("--push-to-hub and --dtype need --format hf")
        out = export_model(model.eval(), args.out, merge_lora=not args.keep_lora)
    print(f"exported {model_cfg.arch}/{model_cfg.model_type} to {out}")
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
