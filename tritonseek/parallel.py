"""Tensor and expert parallelism over torch.distributed (DeepSeek-V3 inference/model.py's scheme).

Activations are replicated on every rank. Attention heads, dense-MLP/shared-expert columns and the
vocabulary are split across ranks (column-parallel in, row-parallel out + all-reduce); routed
experts are split by expert id (rank r holds experts [r·E/N, (r+1)·E/N)), every rank computes its
own experts' share for all tokens and one all-reduce sums the shares, so a foreign expert slot
contributes exactly 0 and a rank whose experts got no token still joins every collective.

Launch with ``torchrun --nproc-per-node N`` (NCCL on CUDA, gloo on CPU); ``TP(…)`` is passed to
the model explicitly, never held in a global.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TP:
    """This process's place in the tensor-parallel group (rank 0 … world_size-1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def split(self, n: int, what: str) -> tuple[int, int]:
        """[start, end) of this rank's 1/world_size share of ``n`` items; raises if n does not divide."""
        if n % self.world_size:
            raise ValueError(f"{what}={n} is not divisible by the tensor-parallel size {self.world_size}")
        k = n // self.world_size
        return self.rank * k, (self.rank + 1) * k

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` (any shape/dtype) over the ranks, in place; returns it (no-op on one rank)."""
        if self.enabled:
            dist.all_reduce(x)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``x`` along the last dimension (rank order)."""
        if not self.enabled:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)


def init_from_env(device_type: str) -> TP:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/MASTER_ADDR env); a single process → TP()."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return TP()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        # Tear the group down before interpreter exit: one left to the C++ destructors aborted a finished
        # CPU --tp 2 run once in CI ("terminate called without an active exception", exit 1).
        atexit.register(_destroy_group)
    return TP(dist.get_rank(), dist.get_world_size())


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
