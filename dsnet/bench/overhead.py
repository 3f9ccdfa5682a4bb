"""Latency overhead of the attention modules: every detector configuration, one input, one run.

For each backbone family the plain detector (``attention="none"``) is built first; every
attention variant then loads the plain model's state dict, so all tensors they share are
identical and, because a residual attention module starts as the identity, every variant
proposes the same boxes: the box head and the post-processing do the same work, and the
measured difference is the cost of the attention modules alone. The models of one family are
timed round-robin (one call of each per round) so that load changes on the machine hit all of
them alike; the figures reported are medians over the rounds.

Three clocks are read for every call:

* wall time, the latency a user sees;
* CPU time of this process (``time.process_time``), which unlike wall time does not count
  the time the process waited for a core on a machine shared with other work;
* CPU time spent inside the attention modules themselves (forward hooks), the direct
  measure of their cost: on a loaded machine the end-to-end ratios scatter by a few per
  cent, while this share of the plain detector's CPU time stays steady.

The two CPU clocks mean what they say on CPU runs; on CUDA they count only the host's work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich import box
from rich.table import Table
from torch import nn

from dsnet.core.errors import InputError
from dsnet.models import BACKBONES, build_detector
from dsnet.models.backbones import LAST_ATTENTION, STEM_ATTENTION

CONFIGURATIONS: dict[str, tuple[str, ...]] = {
    "resnet50": ("none", "se", "sk", "ds"),
    "vgg16": ("none", "ds"),
    "mobilenet_v3": ("none", "ds"),
}
"""The paper's configurations (Tables 1 and 2): attention variants per backbone."""

MIN_SIZE = 64


@dataclass(frozen=True)
class OverheadRow:
    """One configuration's latency (medians over the timed rounds).

    Attributes:
        backbone: Backbone name.
        attention: Attention name (``none`` is the family's reference).
        median_ms: Wall-clock latency of one forward pass, milliseconds per image.
        ratio: ``median_ms`` over that of the plain detector of the same backbone.
        cpu_ms: CPU time of this process per forward pass, milliseconds.
        cpu_ratio: ``cpu_ms`` over that of the plain detector of the same backbone.
        attention_cpu_ms: CPU time spent inside the attention modules per forward pass.
        attention_share: ``attention_cpu_ms`` over the plain detector's ``cpu_ms``.

    """

    backbone: str
    attention: str
    median_ms: float
    ratio: float
    cpu_ms: float
    cpu_ratio: float
    attention_cpu_ms: float
    attention_share: float


@dataclass(frozen=True)
class Latencies:
    """Per-call timings of one model, milliseconds.

    Attributes:
        wall_ms: Wall-clock time of each timed call.
        cpu_ms: CPU time of this process during each timed call.
        attention_cpu_ms: CPU time spent inside the model's attention modules in each call.

    """

    wall_ms: list[float]
    cpu_ms: list[float]
    attention_cpu_ms: list[float]


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


class InsideTimer:
    """CPU time spent inside some (not nested) modules, through forward hooks.

    Args:
        modules: The modules to time.

    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self._total = 0.0
        self._started = 0.0
        self._handles = [
            handle
            for module in modules
            for handle in (
                module.register_forward_pre_hook(self._start),
                module.register_forward_hook(self._stop),
            )
        ]

    def _start(self, module: nn.Module, args: tuple) -> None:
        self._started = time.process_time()

    def _stop(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._total += time.process_time() - self._started

    def take_ms(self) -> float:
        """Return the milliseconds accumulated since the last call, and start again at 0."""
        total, self._total = self._total, 0.0
        return total * 1000.0

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules a `build_detector` model carries (none for ``attention="none"``)."""
    names = (STEM_ATTENTION, LAST_ATTENTION)
    return [module for name, module in model.named_modules() if name.endswith(names)]


def time_models(
    models: Sequence[nn.Module], images: list[torch.Tensor], repeats: int, warmup: int
) -> list[Latencies]:
    """Time one forward pass of each model on `images`, round-robin, in inference mode.

    Args:
        models: `build_detector` models in eval mode, on the device of `images`.
        images: The same input for all, ``list[FloatTensor[3, H, W]]``.
        repeats: Timed rounds; each round calls every model once.
        warmup: Untimed rounds before.

    Returns:
        Per model, its `repeats` wall-clock, CPU and attention CPU times.

    """
    cuda = images[0].is_cuda
    latencies = [Latencies([], [], []) for _ in models]
    timers = [InsideTimer(attention_modules(model)) for model in models]
    try:
        with torch.inference_mode():
            for round_index in range(warmup + repeats):
                for model, times, timer in zip(models, latencies, timers, strict=True):
                    if cuda:
                        torch.cuda.synchronize()
                    wall, cpu = time.perf_counter(), time.process_time()
                    model(images)
                    if cuda:
                        torch.cuda.synchronize()
                    wall_ms = (time.perf_counter() - wall) * 1000.0
                    cpu_ms = (time.process_time() - cpu) * 1000.0
                    attention_ms = timer.take_ms()
                    if round_index >= warmup:
                        times.wall_ms.append(wall_ms)
                        times.cpu_ms.append(cpu_ms)
                        times.attention_cpu_ms.append(attention_ms)
    finally:
        for timer in timers:
            timer.remove()
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
        repeats: Timed rounds (medians reported).
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
            torch.manual_seed(seed)
            rows += _family_rows(backbone, images, repeats, warmup, target)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    name = f"cuda:{torch.cuda.get_device_name(target)}" if target.type == "cuda" else "cpu"
    return OverheadResult(rows, size, repeats, name, used_threads)


def overhead_table(result: OverheadResult) -> Table:
    """Render `result` as a rich table (ms/image and ratios to the plain backbone)."""
    table = Table(
        title=f"Attention overhead: {result.size}×{result.size}, batch 1, eval, "
        f"{result.device}, {result.threads} threads, median of {result.repeats}",
        caption="ms: wall-clock ms/image; ×: ratio to the plain detector of the backbone; "
        "attn: CPU time inside the attention modules (% of the plain detector's CPU time)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("backbone", "attention"):
        table.add_column(column, no_wrap=True)
    for column in ("ms", "×", "CPU ms", "CPU ×", "attn ms", "attn %"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.rows:
        table.add_row(
            row.backbone,
            row.attention,
            f"{row.median_ms:.1f}",
            f"{row.ratio:.3f}",
            f"{row.cpu_ms:.1f}",
            f"{row.cpu_ratio:.3f}",
            f"{row.attention_cpu_ms:.2f}",
            f"{row.attention_share:.2%}",
        )
    return table


def _family_rows(
    backbone: str, images: list[torch.Tensor], repeats: int, warmup: int, device: torch.device
) -> list[OverheadRow]:
    attentions = CONFIGURATIONS[backbone]
    models = family_models(backbone, attentions, images[0].shape[-1], device)
    latencies = time_models(models, images, repeats, warmup)
    wall = [statistics.median(t.wall_ms) for t in latencies]
    cpu = [statistics.median(t.cpu_ms) for t in latencies]
    inside = [statistics.median(t.attention_cpu_ms) for t in latencies]
    plain = attentions.index("none")
    return [
        OverheadRow(backbone, attention, w, w / wall[plain], c, c / cpu[plain], a, a / cpu[plain])
        for attention, w, c, a in zip(attentions, wall, cpu, inside, strict=True)
    ]


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError("device", f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA is not available on this machine")
    return torch.device(device)
