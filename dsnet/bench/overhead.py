"""Latency overhead of the attention modules: every detector configuration, one input, one run.

For each backbone family the plain detector (``attention="none"``) is built first; every
attention variant then loads the plain model's state dict, so all tensors they share are
identical and, because a residual attention module starts as the identity, every variant
proposes the same boxes: the box head and the post-processing do the same work, and the
measured difference is the cost of the attention modules alone. The models of one family are
timed round-robin (one call of each per round) so that load changes on the machine hit all of
them alike; the figure reported is the median over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.table import Table
from torch import nn

from dsnet.errors import InputError
from dsnet.models import BACKBONES, build_detector

CONFIGURATIONS: dict[str, tuple[str, ...]] = {
    "resnet50": ("none", "se", "sk", "ds"),
    "vgg16": ("none", "ds"),
    "mobilenet_v3": ("none", "ds"),
}
"""The paper's configurations (Tables 1 and 2): attention variants per backbone."""

MIN_SIZE = 64


@dataclass(frozen=True)
class OverheadRow:
    """One configuration's latency.

    Attributes:
        backbone: Backbone name.
        attention: Attention name (``none`` is the family's reference).
        median_ms: Median latency of one forward pass, milliseconds per image.
        ratio: ``median_ms`` over that of the plain detector of the same backbone.

    """

    backbone: str
    attention: str
    median_ms: float
    ratio: float


@dataclass(frozen=True)
class OverheadResult:
    """Latencies of all configurations measured in one run.

    Attributes:
        rows: One `OverheadRow` per configuration, plain detector first in each family.
        size: Input side in pixels (``size × size``, batch 1; no resizing by the model).
        repeats: Timed rounds per configuration.
        device: Device the models ran on (``cpu`` or ``cuda:<name>``).
        threads: CPU threads torch used.

    """

    rows: list[OverheadRow]
    size: int
    repeats: int
    device: str
    threads: int


def time_models(
    models: Sequence[nn.Module], images: list[torch.Tensor], repeats: int, warmup: int
) -> list[list[float]]:
    """Time one forward pass of each model on `images`, round-robin, in inference mode.

    Args:
        models: Models in eval mode, on the device of `images`.
        images: The same input for all, ``list[FloatTensor[3, H, W]]``.
        repeats: Timed rounds; each round calls every model once.
        warmup: Untimed rounds before.

    Returns:
        Per model, the `repeats` latencies in milliseconds.

    """
    cuda = images[0].is_cuda
    latencies: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for round_index in range(warmup + repeats):
            for model, times in zip(models, latencies, strict=True):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(images)
                if cuda:
                    torch.cuda.synchronize()
                if round_index >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    return latencies


def family_models(
    backbone: str, attentions: Sequence[str], size: int, device: torch.device
) -> list[nn.Module]:
    """Eval-mode detectors of one backbone that share every tensor except the attention.

    Args:
        backbone: Backbone name.
        attentions: Attention names; ``"none"`` must be among them.
        size: Input side; ``min_size = max_size = size`` so the model does not resize.
        device: Where to put the models.

    Returns:
        One model per entry of `attentions`, in that order.

    """
    plain = build_detector(backbone, "none", min_size=size, max_size=size)
    shared = plain.state_dict()
    models = []
    for attention in attentions:
        model = plain
        if attention != "none":
            model = build_detector(backbone, attention, min_size=size, max_size=size)
            model.load_state_dict(shared, strict=False)
        models.append(model.eval().to(device))
    return models


def benchmark_overhead(
    size: int = 256,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    device: str = "auto",
    backbones: Sequence[str] = BACKBONES,
    seed: int = 0,
) -> OverheadResult:
    """Measure the latency of every configuration of `CONFIGURATIONS` at batch 1.

    Args:
        size: Side of the square input image in pixels (at least 64).
        repeats: Timed rounds (median reported).
        warmup: Untimed rounds first.
        threads: CPU threads for torch (``None``: leave torch's setting).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        backbones: Families to measure (default all).
        seed: Seed of the weights and of the input image.

    Returns:
        The `OverheadResult`.

    Raises:
        InputError: A bad size, count, device or backbone name.

    """
    if size < MIN_SIZE:
        raise InputError("size", f"must be at least {MIN_SIZE} pixels, got {size}")
    if repeats < 1 or warmup < 0:
        raise InputError("repeats", f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if threads is not None and threads < 1:
        raise InputError("threads", f"must be at least 1, got {threads}")
    unknown = [name for name in backbones if name not in BACKBONES]
    if unknown:
        raise InputError("backbone", f"unknown {unknown[0]!r}; choose from {', '.join(BACKBONES)}")
    target = _resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        images = [torch.rand(3, size, size, generator=generator).to(target)]
        rows = []
        for backbone in backbones:
            attentions = CONFIGURATIONS[backbone]
            torch.manual_seed(seed)
            models = family_models(backbone, attentions, size, target)
            medians = [statistics.median(t) for t in time_models(models, images, repeats, warmup)]
            del models
            plain_ms = medians[attentions.index("none")]
            rows += [
                OverheadRow(backbone, attention, ms, ms / plain_ms)
                for attention, ms in zip(attentions, medians, strict=True)
            ]
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    name = f"cuda:{torch.cuda.get_device_name(target)}" if target.type == "cuda" else "cpu"
    return OverheadResult(rows, size, repeats, name, used_threads)


def overhead_table(result: OverheadResult) -> Table:
    """Render `result` as a rich table (ms/image and ratio to the plain backbone)."""
    table = Table(
        title=f"Attention overhead: {result.size}×{result.size}, batch 1, eval, "
        f"{result.device}, {result.threads} threads, median of {result.repeats}"
    )
    table.add_column("backbone")
    table.add_column("attention")
    table.add_column("ms/image", justify="right")
    table.add_column("× plain", justify="right")
    for row in result.rows:
        table.add_row(row.backbone, row.attention, f"{row.median_ms:.1f}", f"{row.ratio:.3f}")
    return table


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError("device", f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA is not available on this machine")
    return torch.device(device)
