"""One training epoch of the detector, with the divergence guard.

Works for a plain model and for a DistributedDataParallel-wrapped one: losses are
averaged over all ranks for reporting, and the non-finite check is agreed by all ranks
so that every process stops at the same step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dsnet.core.errors import InputError
from dsnet.training.distributed import DistContext, all_ranks_true, sum_across_ranks
from dsnet.training.history import LOSS_COMPONENTS
from dsnet.training.progress import TrainingProgress


class TrainingDivergedError(InputError):
    """The training loss became NaN or infinite; the run stopped before saving anything.

    It is an `InputError` (CLI exit status 2): a diverging run is almost always caused by
    its parameters (learning rate, warm-up, clipping) or by broken inputs, and the
    message says where it happened and what to change.

    Args:
        epoch: 1-based epoch in which the loss diverged.
        step: 1-based optimizer step within that epoch.
        losses: The loss components of that step.

    """

    def __init__(self, epoch: int, step: int, losses: Mapping[str, float]) -> None:
        self.epoch = epoch
        self.step = step
        self.losses = dict(losses)
        parts = ", ".join(f"{name}={value:.4g}" for name, value in self.losses.items())
        super().__init__(
            "params.train",
            f"training diverged: non-finite loss at epoch {epoch}, step {step} ({parts}); "
            "lower train.lr, lengthen train.warmup_iters or set train.clip_grad_norm; "
            "outputs saved before this run were left untouched",
        )


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did, averaged over all its images on all ranks.

    Attributes:
        epoch: 1-based epoch number.
        loss: Mean total loss per image.
        components: Mean of each Faster R-CNN loss component (`LOSS_COMPONENTS`).
        lr: Learning rate of the epoch's last optimizer step.
        images: Images seen by all ranks.
        seconds: Wall time of the epoch, data loading included.

    """

    epoch: int
    loss: float
    components: dict[str, float]
    lr: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        """Training throughput of the epoch (all ranks together)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def row(self) -> dict[str, Any]:
        """Return the epoch as a ``train_loss.csv`` row (also the logged metrics)."""
        return {
            "epoch": self.epoch,
            "loss": self.loss,
            **self.components,
            "lr": self.lr,
            "images_per_s": self.images_per_s,
        }


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[tuple[list[torch.Tensor], list[dict[str, Any]]]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    *,
    epoch: int,
    device: torch.device,
    autocast: torch.dtype | None,
    clip_grad_norm: float | None,
    ctx: DistContext,
    progress: TrainingProgress,
) -> EpochStats:
    """Run one pass over `loader`, stepping the optimizer and the schedule per batch.

    Args:
        model: Faster R-CNN in any wrapper; in train mode it returns a loss dict.
        loader: Batches ``(images, targets)``: images FloatTensor[3, H, W] in [0, 1],
            targets with ``boxes`` FloatTensor[N, 4] (x1, y1, x2, y2, model pixels) and
            ``labels`` Int64Tensor[N] in 1..3.
        optimizer: The optimizer.
        scheduler: Per-iteration learning-rate schedule.
        scaler: Gradient scaler (enabled for float16 only).
        epoch: 1-based epoch number (for messages).
        device: Where the model lives.
        autocast: Run the forward pass under ``torch.autocast`` with this dtype (None:
            float32).
        clip_grad_norm: Clip the global gradient norm to this value (None/0: off).
        ctx: Distributed context.
        progress: Progress display (advanced once per step).

    Returns:
        The epoch's averaged losses, learning rate and throughput.

    Raises:
        TrainingDivergedError: The total loss of a step is NaN or infinite on any rank.

    """
    model.train()
    # Sums over images: total loss, each component, image count.
    totals = torch.zeros(len(LOSS_COMPONENTS) + 2, dtype=torch.float64)
    lr = optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    for step, (images, targets) in enumerate(loader, start=1):
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not all_ranks_true(bool(torch.isfinite(loss)), ctx, device):
            raise TrainingDivergedError(
                epoch, step, {name: float(value) for name, value in losses.items()}
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip_grad_norm))
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()

        batch = len(images)
        values = [float(loss.detach())]
        values += [
            float(losses[name].detach()) if name in losses else 0.0 for name in LOSS_COMPONENTS
        ]
        totals += torch.tensor([v * batch for v in values] + [batch], dtype=torch.float64)
        progress.step(values[0])

    totals = sum_across_ranks(totals.to(device), ctx).cpu()
    images_seen = int(totals[-1].item())
    means = (totals[:-1] / max(images_seen, 1)).tolist()
    return EpochStats(
        epoch=epoch,
        loss=means[0],
        components=dict(zip(LOSS_COMPONENTS, means[1:], strict=True)),
        lr=float(lr),
        images=images_seen,
        seconds=time.perf_counter() - started,
    )
