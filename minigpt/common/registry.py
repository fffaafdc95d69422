"""The one registry that maps YAML names to classes.

Every component a config can name — models, processors, dataset builders, tasks, runners,
lr schedulers, the model parts (vision encoders, projectors, LLMs), adapters, output heads and text-to-image
generators (``t2i``) —
is looked up here by its exact name. The built-in names live in one place, the table below
(``name -> "module:Class"``); a module is imported only when one of its names is asked for, so
``import minigpt`` stays light, and built-in classes carry no registration decorator. Third-party
packages add components (and new kinds) through the ``minigpt.plugins`` entry-point group, with
the ``register_<kind>`` decorators.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional

PLUGIN_GROUP = "minigpt.plugins"

KINDS = (
    "model",
    "processor",
    "builder",
    "task",
    "runner",
    "lr_scheduler",
    "vision_encoder",
    "projector",
    "llm",
    "adapter",
    "head",
    "t2i",
)

# kind -> name -> "module:attribute": the one list of built-in names. tests/common/test_registry.py
# checks that every entry resolves to a class and that no built-in module registers names itself.
_BUILTIN: Dict[str, Dict[str, str]] = {
    "model": {
        "tinygptv": "minigpt.models.families:TinyGPTV",
        "minigpt4": "minigpt.models.families:MiniGPT4",
        "minigpt_v2": "minigpt.models.families:MiniGPTv2",
        "vision_pretrain": "minigpt.models.vision_pretrain:VisionPretrain",
        "lavin": "minigpt.models.lavin.model:LaVIN",
        "mm_llama": "minigpt.models.families:MMLLaMA",
        "dreamllm": "minigpt.models.dream.model:DreamLLM",
    },
    "processor": {
        "image_train": "minigpt.processors.image:ImageTrainProcessor",
        "image_eval": "minigpt.processors.image:ImageEvalProcessor",
        "caption_text": "minigpt.processors.text:CaptionTextProcessor",
        "video_train": "minigpt.processors.video:VideoTrainProcessor",
        "video_eval": "minigpt.processors.video:VideoEvalProcessor",
        "video_imagebind": "minigpt.processors.imagebind_video:ImageBindVideoProcessor",
        "image_center_crop": "minigpt.processors.image:ImageCenterCropProcessor",
    },
    "builder": {
        "cc_sbu": "minigpt.datasets.builders.caption_builders:CCSBUBuilder",
        "laion": "minigpt.datasets.builders.caption_builders:LaionBuilder",
        "cc_sbu_align": "minigpt.datasets.builders.caption_builders:CCSBUAlignBuilder",
        "coco_caption": "minigpt.datasets.builders.caption_builders:COCOCaptionBuilder",
        "coco_vqa": "minigpt.datasets.builders.vqa_builders:COCOVQABuilder",
        "refcoco": "minigpt.datasets.builders.refcoco_builders:RefCOCOBuilder",
        "invrefcoco": "minigpt.datasets.builders.refcoco_builders:InvRefCOCOBuilder",
        "llava_conversation": "minigpt.datasets.builders.llava_builders:LlavaConversationBuilder",
        "llava_detail": "minigpt.datasets.builders.llava_builders:LlavaDetailBuilder",
        "llava_reason": "minigpt.datasets.builders.llava_builders:LlavaReasonBuilder",
        "okvqa": "minigpt.datasets.builders.vqa_builders:OKVQABuilder",
        "aokvqa": "minigpt.datasets.builders.vqa_builders:AOKVQABuilder",
        "gqa": "minigpt.datasets.builders.vqa_builders:GQABuilder",
        "ocrvqa": "minigpt.datasets.builders.vqa_builders:OCRVQABuilder",
        "textcaps": "minigpt.datasets.builders.caption_builders:TextCapsBuilder",
        "unnatural_instruction": "minigpt.datasets.builders.text_builders:UnnaturalInstructionBuilder",
        "alpaca": "minigpt.datasets.builders.text_builders:AlpacaBuilder",
        "scienceqa": "minigpt.datasets.builders.scienceqa_builders:ScienceQABuilder",
        "refcocop": "minigpt.datasets.builders.refcoco_builders:RefCOCOPlusBuilder",
        "refcocog": "minigpt.datasets.builders.refcoco_builders:RefCOCOgBuilder",
        "invrefcocop": "minigpt.datasets.builders.refcoco_builders:InvRefCOCOPlusBuilder",
        "invrefcocog": "minigpt.datasets.builders.refcoco_builders:InvRefCOCOgBuilder",
        "flickr_grounded_caption": "minigpt.datasets.builders.flickr_builders:FlickrGroundedCaptionBuilder",
        "flickr_caption_to_phrase": "minigpt.datasets.builders.flickr_builders:FlickrCaptionToPhraseBuilder",
        "flickr_object_to_phrase": "minigpt.datasets.builders.flickr_builders:FlickrObjectToPhraseBuilder",
        "video_instruct": "minigpt.datasets.builders.video_builders:VideoInstructBuilder",
        "multitask_conversation": "minigpt.datasets.builders.minigptv2_builders:MultiTaskConversationBuilder",
        "refvg": "minigpt.datasets.builders.minigptv2_builders:RefVGBuilder",
        "llava_instruct_150k": "minigpt.datasets.builders.llava_builders:LlavaInstruct150KBuilder",
        "llava_cc3m": "minigpt.datasets.builders.llava_builders:LlavaCC3MBuilder",
        "videochat_instruct": "minigpt.datasets.builders.video_builders:VideoChatInstructBuilder",
        "synthetic_caption_wds": "minigpt.datasets.builders.synthetic_builders:SyntheticCaptionWdsBuilder",
        "synthetic_cc_sbu_align": "minigpt.datasets.builders.synthetic_builders:SyntheticCCSBUAlignBuilder",
        "synthetic_coco_caption": "minigpt.datasets.builders.synthetic_builders:SyntheticCOCOCaptionBuilder",
        "synthetic_vqa": "minigpt.datasets.builders.synthetic_builders:SyntheticVQABuilder",
        "synthetic_refcoco": "minigpt.datasets.builders.synthetic_builders:SyntheticRefCOCOBuilder",
        "synthetic_invrefcoco": "minigpt.datasets.builders.synthetic_builders:SyntheticInvRefCOCOBuilder",
        "synthetic_llava": "minigpt.datasets.builders.synthetic_builders:SyntheticLlavaBuilder",
        "synthetic_scene_labels": "minigpt.datasets.builders.synthetic_builders:SyntheticSceneLabelsBuilder",
        "synthetic_scienceqa": "minigpt.datasets.builders.synthetic_builders:SyntheticScienceQABuilder",
        "synthetic_alpaca": "minigpt.datasets.builders.synthetic_builders:SyntheticAlpacaBuilder",
        "photochat": "minigpt.datasets.builders.generation_builders:PhotoChatBuilder",
        "mmc4": "minigpt.datasets.builders.generation_builders:MMC4Builder",
        "t2i_pairs": "minigpt.datasets.builders.generation_builders:TextToImagePairsBuilder",
        "synthetic_photochat": "minigpt.datasets.builders.generation_builders:SyntheticPhotoChatBuilder",
        "synthetic_mmc4": "minigpt.datasets.builders.generation_builders:SyntheticMMC4Builder",
        "synthetic_t2i_pairs": "minigpt.datasets.builders.generation_builders:SyntheticTextToImagePairsBuilder",
        "synthetic_videochat": "minigpt.datasets.builders.synthetic_builders:SyntheticVideoChatBuilder",
        "synthetic_drawing": "minigpt.datasets.builders.dream_builders:SyntheticDrawingBuilder",
    },
    "task": {
        "image_text_pretrain": "minigpt.tasks.image_text_pretrain:ImageTextPretrainTask",
        "image_creation": "minigpt.tasks.dream_task:ImageCreationTask",
    },
    "runner": {
        "runner_iter": "minigpt.runners.runner_iter:RunnerIter",
        "runner_epoch": "minigpt.runners.runner_epoch:RunnerEpoch",
    },
    "lr_scheduler": {
        "linear_warmup_cosine_lr": "minigpt.common.optims:LinearWarmupCosineLRScheduler",
        "linear_warmup_cosine_epoch_lr": "minigpt.common.optims:LinearWarmupCosineEpochLRScheduler",
        "linear_warmup_step_lr": "minigpt.common.optims:LinearWarmupStepLRScheduler",
        "constant_lr": "minigpt.common.optims:ConstantLRScheduler",
    },
    "vision_encoder": {
        "tiny_vit": "minigpt.models.parts.vision_encoders.tiny_vit:TinyViTEncoder",
        "eva_vit_g": "minigpt.models.parts.vision_encoders.eva_vit:EVAViTEncoder",
        "clip_vit": "minigpt.models.parts.vision_encoders.clip_vit:CLIPViTEncoder",
        "clip_vit_cls": "minigpt.models.parts.vision_encoders.clip_vit:CLIPViTCLSStates",
        "precomputed": "minigpt.models.parts.vision_encoders.precomputed:PrecomputedFeatures",
        "imagebind_vit": "minigpt.models.parts.vision_encoders.imagebind_vit:ImageBindViTEncoder",
    },
    "projector": {
        "linear": "minigpt.models.parts.projectors:LinearProjector",
        "mlp": "minigpt.models.parts.projectors:MLPProjector",
        "concat_linear": "minigpt.models.parts.projectors:ConcatLinearProjector",
        "qformer_linear": "minigpt.models.parts.projectors.qformer:QFormerLinearProjector",
    },
    "llm": {
        "hf_causal_lm": "minigpt.models.parts.llms.hf_causal_lm:HFCausalLM",
    },
    "adapter": {
        "bottleneck": "minigpt.models.composition.adapters:BottleneckAdapter",
        "mma": "minigpt.models.lavin.mma:MMAdapter",
    },
    "head": {
        "dream_diffusion": "minigpt.models.dream.diffusion_head:DreamDiffusionHead",
    },
    "t2i": {
        "diffusers": "minigpt.models.t2i_diffusers:DiffusersTextToImage",
        "synthetic_shapes": "minigpt.datasets.synthetic.caption_drawing:SyntheticShapesTextToImage",
    },
}


class RegistryError(KeyError):
    """An unknown or clashing registry name. The message names the culprit and close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly instead
        return str(self.args[0]) if self.args else ""


class Registry:
    """Name -> class tables, one per kind, with lazy built-ins and entry-point plugins."""

    def __init__(self) -> None:
        self._classes: Dict[str, Dict[str, Any]] = {k: {} for k in KINDS}
        self._lazy: Dict[str, Dict[str, str]] = {k: dict(_BUILTIN.get(k, {})) for k in KINDS}
        self._paths: Dict[str, str] = {}
        self._plugins_loaded = False
        self._lock = threading.RLock()

    # -- registration ---------------------------------------------------------------------
    def _register(self, kind: str, name: str, override: bool = False) -> Callable:
        if kind not in self._classes:
            raise RegistryError(f"unknown registry kind {kind!r}; kinds are {', '.join(self._classes)}")

        def wrap(cls):
            with self._lock:
                taken = self._classes[kind].get(name)
                if taken is not None and taken is not cls and not override:
                    same = (
                        getattr(taken, "__module__", None) == getattr(cls, "__module__", None)
                        and getattr(taken, "__qualname__", None) == getattr(cls, "__qualname__", None)
                    )
                    if not same:
                        raise RegistryError(
                            f"{kind} name {name!r} is already registered to "
                            f"{taken.__module__}.{taken.__qualname__}; pass override=True to replace it"
                        )
                lazy = self._lazy[kind].get(name)
                if lazy is not None and not override:
                    module, _, attr = lazy.partition(":")
                    in_module = cls.__module__ == module or cls.__module__.startswith(module + ".")
                    if not (in_module and cls.__qualname__ == attr):
                        raise RegistryError(
                            f"{kind} name {name!r} is reserved by the built-in {lazy}; "
                            "pass override=True to replace it"
                        )
                self._classes[kind][name] = cls
                try:
                    cls._registry_name = name
                except (AttributeError, TypeError):
                    pass
            return cls

        return wrap

    def register_model(self, name: str, override: bool = False) -> Callable:
        return self._register("model", name, override)

    def register_processor(self, name: str, override: bool = False) -> Callable:
        return self._register("processor", name, override)

    def register_builder(self, name: str, override: bool = False) -> Callable:
        return self._register("builder", name, override)

    def register_task(self, name: str, override: bool = False) -> Callable:
        return self._register("task", name, override)

    def register_runner(self, name: str, override: bool = False) -> Callable:
        return self._register("runner", name, override)

    def register_lr_scheduler(self, name: str, override: bool = False) -> Callable:
        return self._register("lr_scheduler", name, override)

    def register_vision_encoder(self, name: str, override: bool = False) -> Callable:
        return self._register("vision_encoder", name, override)

    def register_projector(self, name: str, override: bool = False) -> Callable:
        return self._register("projector", name, override)

    def register_llm(self, name: str, override: bool = False) -> Callable:
        return self._register("llm", name, override)

    def register_adapter(self, name: str, override: bool = False) -> Callable:
        return self._register("adapter", name, override)

    def register_head(self, name: str, override: bool = False) -> Callable:
        return self._register("head", name, override)

    def add_kind(self, kind: str) -> None:
        """A new kind of component (a plugin's); then ``register(kind, name)``, ``get_class``, ``list`` serve it.

        Adding an existing kind is a no-op, so a plugin loaded twice does no harm.
        """
        if not kind.isidentifier():
            raise RegistryError(f"a registry kind is an identifier, got {kind!r}")
        with self._lock:
            self._classes.setdefault(kind, {})
            self._lazy.setdefault(kind, {})

    def register(self, kind: str, name: str, override: bool = False) -> Callable:
        """Decorator registering a class under ``name`` for any kind, including plugin-added ones."""
        return self._register(kind, name, override)

    def kinds(self) -> List[str]:
        return list(self._classes)

    def unregister(self, kind: str, name: str) -> None:
        """Remove a name registered at run time (tests and interactive sessions use this)."""
        with self._lock:
            if name not in self._classes.get(kind, {}):
                raise RegistryError(f"{kind} name {name!r} is not registered")
            del self._classes[kind][name]

    # -- plugins --------------------------------------------------------------------------
    def load_plugins(self, force: bool = False) -> List[str]:
        """Import every ``minigpt.plugins`` entry point once; a callable one gets the registry."""
        with self._lock:
            if self._plugins_loaded and not force:
                return []
            self._plugins_loaded = True
            loaded = []
            for ep in metadata.entry_points(group=PLUGIN_GROUP):
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plugin must say which one it is
                    raise RegistryError(
                        f"minigpt plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}"
                    ) from exc
                if callable(obj) and not isinstance(obj, type):
                    obj(self)
                loaded.append(ep.name)
            return loaded

    # -- look-up --------------------------------------------------------------------------
    def _names(self, kind: str) -> List[str]:
        return sorted(set(self._classes[kind]) | set(self._lazy[kind]))

    def get_class(self, kind: str, name: str) -> Any:
        if kind not in self._classes and not self._plugins_loaded:
            self.load_plugins()  # a plugin may add the kind
        if kind not in self._classes:
            raise RegistryError(f"unknown registry kind {kind!r}; kinds are {', '.join(self._classes)}")
        if not isinstance(name, str):
            raise RegistryError(f"{kind} name must be a string, got {name!r}")
        with self._lock:
            cls = self._classes[kind].get(name)
            if cls is not None:
                return cls
            lazy = self._lazy[kind].get(name)
            if lazy is not None:
                module, _, attr = lazy.partition(":")
                cls = getattr(importlib.import_module(module), attr, None)
                if cls is None:
                    raise RegistryError(f"{kind} {name!r}: module {module} has no {attr}")
                self._classes[kind][name] = cls
                cls._registry_name = name
                return cls
            if not self._plugins_loaded:
                self.load_plugins()
                if name in self._classes[kind]:
                    return self._classes[kind][name]
        names = self._names(kind)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise RegistryError(
            f"unknown {kind} name {name!r}.{hint} Registered {kind}s: {', '.join(names) or '(none)'}"
        )

    def name_of(self, cls: Any) -> Optional[str]:
        """The registered name of ``cls`` itself (not of a registered base class), or None."""
        own = vars(cls).get("_registry_name") if isinstance(cls, type) else None
        if own is not None:
            return own
        target = f"{getattr(cls, '__module__', '')}:{getattr(cls, '__qualname__', '')}"
        for names in self._lazy.values():
            for name, path in names.items():
                if path == target:
                    return name
        return None

    def list(self, kind: str) -> List[str]:
        self.load_plugins()
        if kind not in self._classes:
            raise RegistryError(f"unknown registry kind {kind!r}; kinds are {', '.join(self._classes)}")
        return self._names(kind)

    def get_model_class(self, name: str):
        return self.get_class("model", name)

    def get_processor_class(self, name: str):
        return self.get_class("processor", name)

    def get_builder_class(self, name: str):
        return self.get_class("builder", name)

    def get_task_class(self, name: str):
        return self.get_class("task", name)

    def get_runner_class(self, name: str):
        return self.get_class("runner", name)

    def get_lr_scheduler_class(self, name: str):
        return self.get_class("lr_scheduler", name)

    def get_vision_encoder_class(self, name: str):
        return self.get_class("vision_encoder", name)

    def get_projector_class(self, name: str):
        return self.get_class("projector", name)

    def get_llm_class(self, name: str):
        return self.get_class("llm", name)

    def list_models(self) -> List[str]:
        return self.list("model")

    def list_processors(self) -> List[str]:
        return self.list("processor")

    def list_datasets(self) -> List[str]:
        return self.list("builder")

    list_builders = list_datasets

    def list_tasks(self) -> List[str]:
        return self.list("task")

    def list_runners(self) -> List[str]:
        return self.list("runner")

    def list_lr_schedulers(self) -> List[str]:
        return self.list("lr_scheduler")

    def list_vision_encoders(self) -> List[str]:
        return self.list("vision_encoder")

    def list_projectors(self) -> List[str]:
        return self.list("projector")

    def list_llms(self) -> List[str]:
        return self.list("llm")

    def get_adapter_class(self, name: str):
        return self.get_class("adapter", name)

    def get_head_class(self, name: str):
        return self.get_class("head", name)

    def list_adapters(self) -> List[str]:
        return self.list("adapter")

    def list_heads(self) -> List[str]:
        return self.list("head")

    def register_t2i(self, name: str, override: bool = False) -> Callable:
        return self._register("t2i", name, override)

    def get_t2i_class(self, name: str):
        return self.get_class("t2i", name)

    def list_t2i(self) -> List[str]:
        return self.list("t2i")

    # -- named paths (e.g. the data root) -------------------------------------------------
    def register_path(self, name: str, path: str) -> None:
        self._paths[name] = str(path)

    def get_path(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._paths.get(name, default)


registry = Registry()
