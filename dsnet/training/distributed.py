"""DistributedDataParallel under torchrun: process group, rank roles and collectives.

``torchrun --nproc_per_node N -m dsnet train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; :func:`from_env` reads them. Without them
training runs as a single process and every helper here is a no-op. The backend is
NCCL on GPUs and Gloo on the CPU. Rank 0 alone logs, draws progress and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the training job.

    Attributes:
        rank: Global rank (0 for a single process).
        world_size: Number of training processes.
        local_rank: Rank on this node (GPU index).
        local_world_size: Processes on this node.

    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0


def from_env() -> DistContext:
    """Read the torchrun environment (single-process defaults when absent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
    )


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (Gloo on CPU, NCCL on CUDA) unless already joined."""
    if not ctx.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=TIMEOUT,
    )


def destroy_process_group(ctx: DistContext) -> None:
    """Leave the process group if this process joined one."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if ctx.distributed:
        dist.barrier()


def all_ranks_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Whether `flag` holds on every rank (so all ranks take the same branch)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def sum_across_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum of `values` (any shape) over all ranks; identity for one process."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, in place.

    DDP synchronises buffers at the start of each forward pass, so after the last step
    each rank still holds its own running statistics; this makes every rank's model
    equal to the one rank 0 saves.
    """
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)
