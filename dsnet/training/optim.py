"""SGD with a linear warm-up followed by a multistep learning-rate schedule.

The schedule is stepped once per iteration (optimizer step). Milestones are given in
epochs, as in ``params.yaml`` (``train.lr_milestones``), and converted to iterations
with the number of iterations per epoch.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dsnet.core.errors import InputError

WARMUP_START_FACTOR = 0.001


class WarmupMultiStep:
    """Learning-rate factor at an iteration: linear warm-up, then step decays.

    ``factor(i) = warmup(i) * gamma ** (number of milestones <= i)`` with
    ``warmup(i) = start + (1 - start) * i / warmup_iters`` for ``i < warmup_iters``
    and 1 afterwards. A plain object (numbers and lists only) so that
    ``LambdaLR.state_dict()`` stores it and ``torch.load(weights_only=True)`` reads it.

    Args:
        warmup_iters: Iterations of linear warm-up (0 disables it).
        milestones: Iterations at which the rate is multiplied by `gamma`, ascending.
        gamma: Decay factor at each milestone.
        warmup_start: Factor at iteration 0.

    """

    def __init__(
        self,
        warmup_iters: int,
        milestones: Sequence[int],
        gamma: float,
        warmup_start: float = WARMUP_START_FACTOR,
    ) -> None:
        self.warmup_iters = int(warmup_iters)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_start = float(warmup_start)

    def __call__(self, iteration: int) -> float:
        """Return the multiplier of the base learning rate at `iteration` (0-based)."""
        decay = self.gamma ** bisect.bisect_right(self.milestones, iteration)
        if iteration >= self.warmup_iters:
            return decay
        progress = iteration / self.warmup_iters
        return decay * (self.warmup_start + (1.0 - self.warmup_start) * progress)


def build_optimizer(model: torch.nn.Module, train_cfg: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD over the trainable parameters of `model`.

    Args:
        model: The detector.
        train_cfg: The ``train`` section: ``lr``, ``momentum``, ``weight_decay``.

    Returns:
        The optimizer.

    Raises:
        InputError: A learning rate that is not a positive number.

    """
    lr = float(train_cfg.get("lr", 0.01))
    if not lr > 0:
        raise InputError("train.lr", f"must be a positive number, got {lr}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        trainable,
        lr=lr,
        momentum=float(train_cfg.get("momentum", 0.9)),
        weight_decay=float(train_cfg.get("weight_decay", 1e-4)),
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: Mapping[str, Any], iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Build the per-iteration warm-up + multistep schedule of `train_cfg`.

    Args:
        optimizer: The optimizer whose learning rate is scheduled.
        train_cfg: The ``train`` section: ``warmup_iters``, ``lr_milestones`` (epochs),
            ``lr_gamma``.
        iters_per_epoch: Optimizer steps per epoch (on this rank).

    Returns:
        A ``LambdaLR`` to step after every optimizer step.

    """
    milestones = [int(m) * iters_per_epoch for m in train_cfg.get("lr_milestones") or []]
    schedule = WarmupMultiStep(
        warmup_iters=int(train_cfg.get("warmup_iters", 0)),
        milestones=milestones,
        gamma=float(train_cfg.get("lr_gamma", 0.1)),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
