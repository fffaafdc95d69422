"""The decoding loop's KV cache: transformers' cache with its full-attention layers in preallocated buffers."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model``'s forward takes its KV cache by: ``cache`` (transformers >= 5.24), else ``past_key_values``.

    transformers 5.24 renamed the argument and keeps the old name behind a deprecation wrapper that
    warns, and reading an output's ``past_key_values`` checks for tracing (on a CUDA build without a
    GPU, a failing driver query) at every call: a decoding loop pays both per token.
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` writing into ``[B, heads, capacity, head_dim]`` buffers; ``keys``/``values`` are views.

    For :func:`decode`, which only appends: beam reordering and cropping are not supported. A
    sequence longer than ``capacity`` grows the buffers (one copy) rather than failing.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self._k = key_states.new_empty((b, h, self.capacity, d))
            self._v = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
            self.is_initialized = True
        end = self.length + key_states.shape[-2]
        self._reserve(end)
        self._k[:, :, self.length : end].copy_(key_states)
        self._v[:, :, self.length : end].copy_(value_states)
        self._advance(end)
        return self.keys, self.values

    def _reserve(self, end: int) -> None:
        if end > self._k.shape[-2]:
            extra = max(end, 2 * self._k.shape[-2]) - self._k.shape[-2]
            self._k = torch.cat(
                [self._k, self._k.new_empty((*self._k.shape[:2], extra, self._k.shape[3]))], -2
            )
            self._v = torch.cat(
                [self._v, self._v.new_empty((*self._v.shape[:2], extra, self._v.shape[3]))], -2
            )

    def _advance(self, end: int) -> None:
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]  # [B, heads, end, head_dim]

    def append_split_key(self, key_rot: torch.Tensor, key_pass: torch.Tensor, value: torch.Tensor) -> None:
        """Append one position whose keys come in two parts along ``head_dim``: ``[B, heads, 1, r]`` and the rest.

        The same cache contents as ``update`` with the two parts concatenated, without building that tensor.
        """
        end = self.length + 1
        self._reserve(end)
        r = key_rot.shape[-1]
        self._k[:, :, self.length : end, :r].copy_(key_rot)
        self._k[:, :, self.length : end, r:].copy_(key_pass)
        self._v[:, :, self.length : end].copy_(value)
        self._advance(end)

    def get_seq_length(self) -> int:
        return self.length

    def _append_only(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("the preallocated decode cache only appends (no beams, no cropping)")

    crop = reorder_cache = batch_repeat_interleave = batch_select_indices = _append_only


def preallocated_cache(config: Any, capacity: int) -> Optional[DynamicCache]:
    """A transformers ``DynamicCache`` whose full-attention layers are :class:`PreallocatedLayer` of ``capacity``.

    transformers' ``DynamicLayer`` concatenates each new token's keys and values onto a copy of
    the whole cache, so every decoding step copies all of it (``batch x length`` per layer: at
    batch 8 more memory traffic than reading the weights, for the models benchmarked here).
    Layers of other kinds (sliding windows, linear attention) keep transformers' own. None when
    the config yields no plain layer to replace.
    """
    cache = DynamicCache(config=config)
    swapped = 0
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = PreallocatedLayer(capacity)
            swapped += 1
    return cache if swapped else None
