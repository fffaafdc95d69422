"""How the trained model is spread over the processes of a run (``run.distributed``: ddp | fsdp).

One process: the model itself. DDP: a :class:`DistributedDataParallel` around it, built once, when
the model has trainable parameters. FSDP: torch's FSDP2 ``fully_shard`` applied in place (each
transformer block, then the root), which also changes how the trained tensors and the optimizer
state are gathered for a checkpoint and put back on resume.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ContextManager, Dict, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel

from minigpt.common import dist_utils

logger = logging.getLogger(__name__)

MODES = ("ddp", "fsdp")


class ParallelModel:
    """The model as this run's processes hold it: plain, DDP-wrapped or FSDP-sharded.

    ``mode`` is ``run.distributed``; outside ``torchrun`` (one process) both modes train the bare
    model. Call :meth:`shard` after loading weights and before building the optimizer (FSDP
    replaces the parameters), and :meth:`wrapped` for the module the training step runs; the bare
    model stays at ``.model`` (what is saved, evaluated and sampled from), so nothing unwraps.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"run.distributed={mode!r}: expected ddp or fsdp")
        self.model = model
        self.device = device
        self.mode = mode
        self._ddp: Optional[DistributedDataParallel] = None

    @property
    def sharded(self) -> bool:
        """Whether the model is (to be) sharded with FSDP: ``fsdp`` in a multi-process run."""
        return self.mode == "fsdp" and dist_utils.is_dist()

    def shard(self) -> None:
        """FSDP only (a no-op otherwise): shard each transformer block, then the root, with ``fully_shard``."""
        if not self.sharded:
            return
        import torch.distributed as dist
        from torch.distributed.fsdp import fully_shard

        # each rank built its model after seeding with seed + rank; DDP broadcasts rank 0's weights
        # when it wraps the model, fully_shard does not, so do it here (also carries resumed weights)
        with torch.no_grad():
            for t in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(t.data, src=0)
        blocks = [m for m in self.model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]
        for block in blocks:
            fully_shard(block)
        fully_shard(self.model)
        logger.info("FSDP: %d block(s) sharded across %d processes", len(blocks), dist_utils.get_world_size())

    def wrapped(self) -> torch.nn.Module:
        """The module a training step runs: the DDP wrapper in a multi-process DDP run, else the model."""
        if self.sharded:
            return self.model  # sharded in place by shard() before the optimizer is built
        if dist_utils.is_dist() and any(p.requires_grad for p in self.model.parameters()):
            if self._ddp is None:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self._ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=False)
            return self._ddp
        return self.model

    @staticmethod
    def accumulating(net: torch.nn.Module, sync: bool) -> ContextManager[Any]:
        """DDP: skip the gradient all-reduce of a micro-batch that is not the last of its step."""
        if sync or not isinstance(net, DistributedDataParallel):
            return contextlib.nullcontext()
        return net.no_sync()

    def full_states(
        self, optimizer: torch.optim.Optimizer
    ) -> Tuple[Optional[Dict[str, torch.Tensor]], Optional[Dict[str, Any]]]:
        """FSDP: the full trained tensors and optimizer state, gathered on every rank (a collective).

        ``(None, None)`` when not sharded: the checkpoint then reads the model and optimizer itself.
        """
        if not self.sharded:
            return None, None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        from minigpt.models.weights.checkpoint import trained_state_dict

        trained = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
                   for k, v in trained_state_dict(self.model).items()}
        optim = get_optimizer_state_dict(
            self.model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return trained, optim

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
        """Put a saved (full) optimizer state back; FSDP scatters it onto the shards."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)
