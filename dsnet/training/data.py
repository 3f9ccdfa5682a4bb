"""Training data loader: shuffling (per rank under DDP), batching, worker processes.

A single process shuffles with a `RandomSampler` driven by one seeded generator, whose
state is part of the resume state, so a resumed run sees the same batches. Under DDP a
`DistributedSampler` gives each rank its own shard, reshuffled per epoch with
``set_epoch``. Workers are started per epoch (not persistent) so that their random
seeds, drawn from the same generator, are reproducible on resume as well.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from dsnet.core.errors import InputError
from dsnet.data.dataset import InputErrorLoader, collate
from dsnet.training.distributed import DistContext


def build_train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    generator: torch.Generator,
    seed: int,
    ctx: DistContext,
    pin_memory: bool = False,
) -> tuple[DataLoader, Sampler]:
    """Build the shuffled training loader of `dataset` for this rank.

    Args:
        dataset: Yields ``(image FloatTensor[3, H, W], target dict)``.
        batch_size: Images per step on this rank.
        workers: Loader worker processes (0: load in the training process).
        generator: Seeded generator for shuffling and worker seeds (single process).
        seed: Shuffling seed of the `DistributedSampler` (DDP).
        ctx: Distributed context.
        pin_memory: Pin host memory (for CUDA training).

    Returns:
        The loader and its sampler (call ``set_epoch`` on a `DistributedSampler`).

    Raises:
        InputError: A batch size or worker count out of range.

    """
    if int(batch_size) < 1:
        raise InputError("train.batch_size", f"must be at least 1, got {batch_size}")
    if int(workers) < 0:
        raise InputError("train.workers", f"must be 0 or more, got {workers}")
    sampler: Sampler
    if ctx.distributed:
        sampler = DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
        )
    else:
        sampler = RandomSampler(dataset, generator=generator)
    loader = InputErrorLoader(
        dataset,
        batch_size=int(batch_size),
        sampler=sampler,
        num_workers=int(workers),
        collate_fn=collate,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=False,
    )
    return loader, sampler
