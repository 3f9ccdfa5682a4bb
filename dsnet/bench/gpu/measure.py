"""Timing two configurations side by side: training steps or inference calls, bounded.

A training step is the one of `dsnet.training.loop`: forward under ``torch.autocast``
(float16 with a ``GradScaler``, bfloat16 without, or float32), backward, gradient-norm
clipping, SGD step. Inference is the eval-mode forward pass under ``torch.inference_mode``.
The synthetic batch stays on the device, so the rates are the model's, without data loading.

The configurations compared (R50 vs R50+DS, a setting off vs on) are timed round-robin, one
call of each per round, so that a change of load on the machine hits both alike; on CUDA
each call is timed between two ``torch.cuda.synchronize`` and its peak memory read with
``torch.cuda.max_memory_allocated`` (it includes the other model's weights and optimizer
state, which stay resident: a few hundred MiB).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dsnet.bench.gpu.profile import BenchBudget, BenchProfile

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
"""Precision name -> autocast dtype (None: plain float32)."""


@dataclass(frozen=True)
class Timing:
    """The timed calls of one configuration.

    Attributes:
        images_per_s: Images processed per second of its own calls.
        iterations: Timed calls.
        seconds: Their total wall time.
        peak_memory_mib: Peak GPU memory allocated during its calls (None on the CPU).

    """

    images_per_s: float
    iterations: int
    seconds: float
    peak_memory_mib: float | None


def precision_problem(precision: str, device: torch.device) -> str | None:
    """Why `precision` is not measured on `device`, or None when it is."""
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}"
    if precision == "fp16" and device.type != "cuda":
        return "float16 autocast is a CUDA path (on the CPU it is emulated, minutes per step)"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16 support"
    return None


class TrainingStep:
    """One SGD step of a detector on a fixed batch, as `dsnet.training.loop` does it.

    Args:
        model: Detector on the device of `images` (put in train mode here).
        images: The batch, ``B`` FloatTensor[3, S, S] in [0, 1].
        targets: Per image ``boxes`` FloatTensor[N, 4] and ``labels`` Int64Tensor[N].
        precision: A key of `PRECISIONS`.
        profile: SGD settings (``lr``, ``momentum``, ``weight_decay``, ``clip_grad_norm``).

    """

    def __init__(
        self,
        model: nn.Module,
        images: list[Tensor],
        targets: list[dict[str, Tensor]],
        precision: str,
        profile: BenchProfile,
    ) -> None:
        self.model, self.images, self.targets = model.train(), images, targets
        self.device = images[0].device
        self.dtype = PRECISIONS[precision]
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            self.trainable,
            lr=profile.lr,
            momentum=profile.momentum,
            weight_decay=profile.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.clip = profile.clip_grad_norm
        self.losses: list[Tensor] = []

    def __call__(self) -> None:
        """Forward, backward and optimizer step; the loss is kept (on the device)."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = sum(self.model(self.images, self.targets).values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, float(self.clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.losses.append(loss.detach())

    def finite(self) -> bool:
        """Whether every loss so far was finite."""
        return bool(torch.isfinite(torch.stack(self.losses)).all()) if self.losses else True


class InferenceCall:
    """One eval-mode forward pass of a detector on a fixed batch.

    Args:
        model: Detector on the device of `images` (put in eval mode here).
        images: The batch, ``B`` FloatTensor[3, S, S] in [0, 1].
        precision: A key of `PRECISIONS`.

    """

    def __init__(self, model: nn.Module, images: list[Tensor], precision: str) -> None:
        self.model, self.images = model.eval(), images
        self.device = images[0].device
        self.dtype = PRECISIONS[precision]

    def __call__(self) -> None:
        """Detect on the batch (outputs discarded)."""
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None),
        ):
            self.model(self.images)


def time_round_robin(
    calls: Sequence[Callable[[], None]], images: int, device: torch.device, budget: BenchBudget
) -> list[Timing]:
    """Time `calls` round-robin: warm-up rounds, then timed rounds until a bound is hit.

    Args:
        calls: The configurations, each a no-argument callable processing `images` images.
        images: Images per call (the batch size).
        device: Where they run (CUDA: synchronised timing and peak memory).
        budget: ``warmup`` rounds, at most ``iterations`` timed rounds, and no new round
            after ``stage_seconds`` (at least one timed round is always taken).

    Returns:
        One `Timing` per call, in order.

    """
    cuda = device.type == "cuda"
    for _ in range(budget.warmup):
        for call in calls:
            call()
    seconds, peaks = [0.0] * len(calls), [0.0] * len(calls)
    started, rounds = time.perf_counter(), 0
    while rounds < budget.iterations:
        for index, call in enumerate(calls):
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            tick = time.perf_counter()
            call()
            if cuda:
                torch.cuda.synchronize(device)
                peaks[index] = max(peaks[index], torch.cuda.max_memory_allocated(device) / 2**20)
            seconds[index] += time.perf_counter() - tick
        rounds += 1
        if time.perf_counter() - started > budget.stage_seconds:
            break
    return [
        Timing(images * rounds / spent, rounds, spent, peak if cuda else None)
        for spent, peak in zip(seconds, peaks, strict=True)
    ]
