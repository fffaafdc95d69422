"""An lmms-eval model for minigpt checkpoints, so the suites the field runs through lmms-eval run on them.

Installed with ``pip install 'minigpt-kit[lmms]'``; lmms-eval finds it through its entry-point group
``lmms_eval.models`` (declared in this package's ``pyproject.toml``), so no fork of lmms-eval::

    lmms-eval --model minigpt \\
        --model_args pretrained=minigpt_v2,model_type=tiny,task_tag=vqa \\
        --tasks gqa --batch_size 8

``pretrained`` is a registered architecture name (with ``model_type``, a preset of it) or the path
of an export directory (``model_type`` left out); ``checkpoint`` optionally loads a training
checkpoint on top. Requests are answered by :meth:`minigpt.models.generation.chat.Chat.answer_batch`: the
first image of each request goes in front of its text as the chat's image slot, generation stops
at the template's stop strings, the request's ``until`` strings and ``max_new_tokens``.
Log-likelihood requests (tasks with ``output_type: loglikelihood`` / ``multiple_choice``) are scored
by the answer loss: the summed log-probability of the continuation's tokens laid out as a training
answer (:mod:`minigpt.models.generation.likelihood`).

Under a multi-process launch (``accelerate launch`` / ``torchrun``) each process answers its own
share: the adapter reports the process's rank and the world size, and lmms-eval's evaluator hands
each rank every ``world_size``-th document. Boxes: MiniGPT-v2-style models answer grounding
questions with ``{<x1><y1><x2><y2>}`` on a 0-100 grid; ``box_format=xyxy_unit`` rewrites each such box
as ``[x1, y1, x2, y2]`` in 0-1 image fractions, the form lmms-eval's RefCOCO tasks parse.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model
from tqdm import tqdm

from minigpt.common import grounding
from minigpt.models import load_model_and_preprocess
from minigpt.models.generation.chat import Chat

logger = logging.getLogger(__name__)

MODEL_ID = "minigpt"  # the name ``lmms-eval --model`` takes
DEFAULT_MAX_NEW_TOKENS = 256
BOX_FORMATS = ("minigpt", "xyxy_unit")


def lmms_eval_manifest():
    """The ``lmms_eval.models`` entry point: the manifest naming :class:`MiniGPTLMMS` for ``--model minigpt``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.MiniGPTLMMS")


def _as_int(value: Any, name: str, default: int) -> int:
    if value is None or value == "auto" or (isinstance(value, str) and value.startswith("auto")):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"minigpt lmms-eval model: {name} must be an integer, got {value!r}") from exc


def _process_grid() -> Tuple[int, int]:
    """``(rank, world size)`` of this process: torch.distributed's when initialised, else the launcher's
    environment (``RANK`` / ``WORLD_SIZE``, set by torchrun and accelerate), else a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank = _as_int(os.environ.get("RANK"), "RANK", 0)
    world = _as_int(os.environ.get("WORLD_SIZE"), "WORLD_SIZE", 1)
    if not 0 <= rank < world:
        raise ValueError(f"minigpt lmms-eval model: RANK={rank} outside WORLD_SIZE={world}")
    return rank, world


def unit_boxes(text: str) -> str:
    """``text`` with every ``{<x1><y1><x2><y2>}`` grid box written as ``[x1, y1, x2, y2]`` in 0-1 fractions."""

    def unit(match: "re.Match[str]") -> str:
        values = [min(max(int(v), 0), grounding.GRID) / grounding.GRID for v in match.groups()]
        lead = re.match(r"\s*", match.group(0)).group(0)  # a box without braces matches its leading spaces too
        return lead + "[" + ", ".join(f"{v:.2f}" for v in values) + "]"

    return grounding.BOX_PATTERN.sub(unit, text)


def _default_device() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    # one process per GPU under accelerate/torchrun: bind to this process's GPU
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


@register_model(MODEL_ID)
class MiniGPTLMMS(lmms):
    """lmms-eval's model interface over a minigpt model (``--model minigpt``). Not in minigpt's registry.

    Model arguments (``--model_args k=v,...``): ``pretrained`` (required), ``model_type``,
    ``checkpoint``, ``device``, ``dtype`` (``float16``/``bfloat16``/``float32``), ``batch_size``,
    ``max_new_tokens`` (used when a task sets none), ``task_tag`` (a MiniGPT-v2 task such as
    ``vqa``: its ``[vqa]`` tag is put in front of every question, as MiniGPT-v2's evaluation does) and
    ``box_format`` (``minigpt``, the model's own ``{<x1><y1><x2><y2>}``, or ``xyxy_unit``).
    From Python, ``model=`` hands over an already loaded model instead of loading ``pretrained``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        model_type: Optional[str] = None,
        checkpoint: Optional[str] = None,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        batch_size: Any = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        task_tag: Optional[str] = None,
        box_format: str = "minigpt",
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        # lmms-eval passes its own settings (max_batch_size, ...) to every model; say which we ignore
        ignored = {k: v for k, v in kwargs.items() if v is not None}
        if ignored:
            logger.warning("minigpt lmms-eval model ignores arguments %s", sorted(ignored))
        self._device = str(device) if device else _default_device()
        if model is None:
            model, _, _ = load_model_and_preprocess(
                str(pretrained),
                None if model_type is None else str(model_type),
                is_eval=True,
                device=self._device,
                checkpoint=None if checkpoint is None else str(checkpoint),
            )
        if dtype:
            dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
            if str(dtype) not in dtypes:
                raise ValueError(f"minigpt lmms-eval model: dtype must be one of {sorted(dtypes)}, got {dtype!r}")
            model = model.to(dtypes[str(dtype)])
        self.model = model
        self.chat = Chat(model)
        self.batch_size = max(1, _as_int(batch_size, "batch_size", 1))
        self.max_new_tokens = _as_int(max_new_tokens, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if task_tag is not None:
            grounding.task_prompt(str(task_tag), "")  # fails early, naming the known tags
        self.task_tag = None if task_tag is None else str(task_tag)
        self._warned_multi_image = False
        if str(box_format) not in BOX_FORMATS:
            raise ValueError(f"minigpt lmms-eval model: box_format must be one of {list(BOX_FORMATS)}, got {box_format!r}")
        self.box_format = str(box_format)
        self._rank, self._world_size = _process_grid()

    @property
    def device(self) -> str:
        return self._device

    # -- requests ------------------------------------------------------------------------------
    def _question(self, context: str) -> str:
        # lmms-eval's contexts may carry an "<image>" placeholder; minigpt places its own image slot
        text = context.replace("<image>", " ").strip()
        return grounding.task_prompt(self.task_tag, text) if self.task_tag else text

    def _visual(self, doc_to_visual: Any, doc_id: Any, task: str, split: str) -> Any:
        if doc_to_visual is None:
            return None
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        if visuals is None:
            return None
        if not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        visuals = [v for v in visuals if v is not None]
        if len(visuals) > 1 and not self._warned_multi_image:
            logger.warning("minigpt models take one image per question; using the first of %d", len(visuals))
            self._warned_multi_image = True
        return visuals[0] if visuals else None

    def _generation(self, gen_kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
        gen = dict(gen_kwargs or {})
        until = gen.pop("until", None)
        if until is None:
            until = []
        elif isinstance(until, str):
            until = [until]
        elif not isinstance(until, (list, tuple)):
            raise ValueError(f"gen_kwargs['until'] must be a string or a list of strings, got {type(until).__name__}")
        until = [u for u in until if u]
        temperature = float(gen.pop("temperature", 0.0) or 0.0)
        do_sample = bool(gen.pop("do_sample", temperature > 0))
        out: Dict[str, Any] = {
            "max_new_tokens": _as_int(gen.pop("max_new_tokens", None), "max_new_tokens", self.max_new_tokens),
            "num_beams": _as_int(gen.pop("num_beams", None), "num_beams", 1),
            "do_sample": do_sample,
            # the template's own stops end the answer turn; the task's `until` strings end it as well
            "stop_strings": self.model.resolve_stop_strings(None) + list(until),
        }
        if do_sample:
            out["temperature"] = temperature if temperature > 0 else 1.0
            top_p = gen.pop("top_p", None)
            if top_p is not None:
                out["top_p"] = float(top_p)
        for key in ("repetition_penalty",):
            if gen.get(key) is not None:
                out[key] = float(gen[key])
        return out, list(until)

    @staticmethod
    def _cut(text: str, until: Sequence[str]) -> str:
        # stop strings end generation, but the decoded text can still run past them within one token
        cut = len(text)
        for u in until:
            at = text.find(u)
            if at != -1:
                cut = min(cut, at)
        return text[:cut].strip()

    def generate_until(self, requests: List[Instance]) -> List[str]:
        """Answers to ``generate_until`` requests, in request order; batched by equal generation settings."""
        results: List[Optional[str]] = [None] * len(requests)
        groups: Dict[str, List[int]] = {}
        for i, req in enumerate(requests):
            gen_kwargs = req.args[1] if len(req.args) > 1 else {}
            groups.setdefault(json.dumps(gen_kwargs, sort_keys=True, default=str), []).append(i)
        bar = tqdm(total=len(requests), desc="minigpt generate_until", unit="req", disable=self._rank != 0)
        for indices in groups.values():
            gen, until = self._generation(requests[indices[0]].args[1])
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                questions, images = [], []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args[:6]
                    questions.append(self._question(context))
                    images.append(self._visual(doc_to_visual, doc_id, task, split))
                with torch.inference_mode():
                    answers = self.chat.answer_batch(images, questions, **gen)
                for i, answer in zip(chunk, answers):
                    text = self._cut(answer, until)
                    results[i] = unit_boxes(text) if self.box_format == "xyxy_unit" else text
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], requests[i].args[1]), results[i])
                bar.update(len(chunk))
        bar.close()
        return [r if r is not None else "" for r in results]

    def loglikelihood(self, requests: List[Instance]) -> List[Tuple[float, bool]]:
        """``(log-likelihood, is greedy)`` of each request's continuation after its context (and image)."""
        results: List[Tuple[float, bool]] = []
        bar = tqdm(total=len(requests), desc="minigpt loglikelihood", unit="req", disable=self._rank != 0)
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            questions, images, continuations = [], [], []
            for req in chunk:
                context, target, doc_to_visual, doc_id, task, split = req.args[:6]
                if not isinstance(target, str):  # a doc_to_target function, as lmms-eval may pass
                    target = target(self.task_dict[task][split][doc_id])
                questions.append(self._question(context))
                images.append(self._visual(doc_to_visual, doc_id, task, split))
                continuations.append(str(target))
            with torch.inference_mode():
                scored = self.chat.continuation_logprobs(images, questions, continuations)
            for req, value in zip(chunk, scored):
                self.cache_hook.add_partial("loglikelihood", (req.args[0], req.args[1]), value)
            results += scored
            bar.update(len(chunk))
        bar.close()
        return results

    def generate_until_multi_round(self, requests: List[Instance]) -> List[str]:
        raise NotImplementedError("the minigpt lmms-eval model does not run multi-round tasks; use minigpt.models.generation.chat.Chat")
