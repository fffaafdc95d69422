"""The mixture-of-modality adapter (MMA) of LaVIN, a registered adapter kind (YAML ``mma``).

``x + scale * (w0 * up0(h) + w1 * up1(h))`` with ``h = dropout(down(x))``: one down-projection to
a small bottleneck and two up-projection paths, both zero-initialised (so the adapter is the
identity at start), mixed by routing weights ``w = softmax(router(z) / temperature)`` (``[B, 2]``).

LaVIN's up-projections are 1x1 convolutions with ``groups`` groups; here they are grouped
:class:`GroupedLinear` layers, the same maths and the same parameter count on a ``[B, T, D]``
tensor without the transposes a ``Conv1d`` needs. As LaVIN, there is no activation between the
down- and up-projections, and the down-projection starts Xavier-uniform with a zero bias.

Where ``z`` comes from (``router``):

* ``first_token``: the first position of the tensor adapted (the normalised class-token state in a
  CLIP block), recomputed at every call: one routing per image.
* ``modality``: the state of the LaVIN modality token at this layer. The LaVIN model runs that
  token through the LLM on its own first (see :class:`~minigpt.models.lavin.model.LaVIN`); while it
  does, the adapter is ``recording`` and keeps the weights it computes from that one-token input;
  every later call of the same batch (the sequence, and each step of cached decoding) reuses them,
  never recomputing them from a position that is not the modality token.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from minigpt.models.composition.adapters import Adapter

ROUTER_SOURCES = ("modality", "first_token")
N_PATHS = 2  # LaVIN mixes two up-projection paths


class GroupedLinear(nn.Module):
    """``Linear(in_dim -> out_dim)`` split into ``groups`` independent blocks (a 1x1 grouped convolution).

    Group ``g`` maps input features ``[g*in/groups, (g+1)*in/groups)`` to output features
    ``[g*out/groups, (g+1)*out/groups)``, as ``Conv1d(in_dim, out_dim, 1, groups=groups)`` does.
    """

    def __init__(self, in_dim: int, out_dim: int, groups: int) -> None:
        super().__init__()
        if in_dim % groups or out_dim % groups:
            raise ValueError(f"GroupedLinear: {in_dim} -> {out_dim} does not split into {groups} groups")
        self.groups = int(groups)
        self.weight = nn.Parameter(torch.empty(groups, out_dim // groups, in_dim // groups))
        self.bias = nn.Parameter(torch.empty(out_dim))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.unflatten(-1, (self.groups, -1))  # [..., G, in/G]
        out = torch.einsum("...gi,goi->...go", parts, self.weight.to(x.dtype))  # [..., G, out/G]
        return out.flatten(-2) + self.bias.to(x.dtype)


class MMAdapter(Adapter):
    """LaVIN's mixture-of-modality adapter: two routed up-projection paths over one bottleneck. YAML name ``mma``."""

    def __init__(
        self,
        dim: int,
        bottleneck: int = 8,
        groups: int = 2,
        dropout: float = 0.1,
        scale: float = 1.0,
        temperature: float = 10.0,
        router: str = "modality",
    ) -> None:
        super().__init__(dim)
        if router not in ROUTER_SOURCES:
            raise ValueError(f"mma adapter: router must be one of {', '.join(ROUTER_SOURCES)}, got {router!r}")
        if temperature <= 0:
            raise ValueError(f"mma adapter: temperature must be positive, got {temperature}")
        self.down = nn.Linear(dim, bottleneck)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        self.paths = nn.ModuleList(GroupedLinear(bottleneck, dim, groups) for _ in range(N_PATHS))
        self.router = nn.Linear(dim, N_PATHS)
        self.dropout = nn.Dropout(dropout)
        self.scale = float(scale)
        self.temperature = float(temperature)
        self.router_source = router
        self.recording = False
        self.routing: Optional[torch.Tensor] = None  # [B, 2], kept from the modality token's pass

    def routing_weights(self, state: torch.Tensor) -> torch.Tensor:
        """``[B, dim]`` router input -> ``[B, 2]`` path weights (float32)."""
        logits = self.router(state.to(self.router.weight.dtype)).float()
        return torch.softmax(logits / self.temperature, dim=-1)

    def _weights_for(self, x: torch.Tensor) -> torch.Tensor:
        if self.router_source == "first_token" or self.recording:
            weights = self.routing_weights(x[:, 0])
            if self.recording:
                self.routing = weights
            return weights
        if self.routing is None:
            raise RuntimeError(
                "mma adapter with router: modality has no routing weights: the model must run its "
                "modality token first (arch lavin does; use router: first_token elsewhere)"
            )
        weights = self.routing
        if weights.shape[0] != x.shape[0]:
            if x.shape[0] % weights.shape[0]:
                raise RuntimeError(
                    f"mma adapter: routing weights for {weights.shape[0]} samples, input of {x.shape[0]}"
                )
            # beam search repeats every sample num_beams times, each copy after its original
            weights = weights.repeat_interleave(x.shape[0] // weights.shape[0], dim=0)
        return weights

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        weights = self._weights_for(x).to(x.dtype)  # [B, 2]
        h = self.dropout(self.down(x.to(self.down.weight.dtype)))  # [B, T, bottleneck]
        mixed = sum(weights[:, i, None, None] * path(h).to(x.dtype) for i, path in enumerate(self.paths))
        return x + self.scale * mixed
