"""The one-shot benchmark: every measurement of the paper profile, in one run, within a budget.

Stages, most important first (a stage that would start after ``budget.total_seconds`` is
recorded as skipped, and the JSON is rewritten after every stage, so a run cut short still
leaves what it measured). Every stage times two configurations side by side
(`dsnet.bench.gpu.measure.time_round_robin`):

1. training, R50 vs R50+DS, at the profile's precision and settings;
2. inference at each batch size of the budget, R50 vs R50+DS, same precision and settings;
3. R50+DS with ``channels_last`` off vs on, then ``cudnn_benchmark`` off vs on (CUDA
   only), the other settings as in the profile, for training and for inference at the
   largest batch;
4. the other precisions (fp16, bf16, fp32): training and inference, R50 vs R50+DS;
5. ``compile`` (``torch.compile`` of the backbone) off vs on, last because compiling takes
   the longest and is the likeliest to fail.

Each measurement builds its models afresh from one shared initial state
(`dsnet.bench.gpu.models`), so no setting leaks into the next. A failing configuration
(out of memory, a compiler error, a precision the device lacks) is recorded as
``unavailable: <reason>`` and the run goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torchvision

from dsnet.bench.gpu.measure import (
    PRECISIONS,
    InferenceCall,
    TrainingStep,
    precision_problem,
    time_round_robin,
)
from dsnet.bench.gpu.models import MODELS, ModelFactory, synthetic_batch
from dsnet.bench.gpu.profile import BenchBudget, BenchProfile
from dsnet.bench.gpu.summary import summarise
from dsnet.core.device import autocast_dtype, configure_backends, select_device
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json

SCHEMA = "dsnet-bench-gpu/1"


def reference_precision(profile: BenchProfile, device: torch.device) -> str:
    """The precision training uses with this profile on `device` (`autocast_dtype`)."""
    dtype = autocast_dtype(device, profile.amp, profile.cpu_bf16)
    return {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}[dtype]


def bench_gpu(
    profile: BenchProfile | None = None,
    budget: BenchBudget | None = None,
    device: str = "auto",
    precisions: Sequence[str] = tuple(PRECISIONS),
    out: str | PathLike[str] | None = None,
    tiny: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure training and inference speed of R50 and R50+DS on synthetic slices.

    Args:
        profile: Model and training settings (default: the paper profile).
        budget: Iteration and time bounds (default: fits 5 minutes on one GPU).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        precisions: Precisions of stage 4 (``fp16``, ``bf16``, ``fp32``); the profile's
            own precision is always measured.
        out: JSON file, rewritten atomically after every stage (None: not written).
        tiny: Recorded in the result (the caller chose a test-sized profile).
        seed: Seed of the weights and of the synthetic batches.

    Returns:
        The result (``schema`` `SCHEMA`): environment, profile, budget, one row per
        measured configuration (``rows``, in side-by-side pairs) and the tables derived
        from them (`dsnet.bench.gpu.summary.summarise`).

    Raises:
        InputError: An unknown device or precision, or ``cuda`` without a GPU.

    """
    profile, budget = profile or BenchProfile(), budget or BenchBudget()
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise InputError(
            "precision", f"unknown {unknown[0]!r}; choose from {', '.join(PRECISIONS)}"
        )
    target = select_device(device, setting="device")
    reference = reference_precision(profile, target)
    result = _environment(target, profile, budget, tiny, reference)
    started, cudnn_benchmark = time.perf_counter(), torch.backends.cudnn.benchmark
    with tempfile.TemporaryDirectory(prefix="dsnet-bench-gpu-") as folder:
        factory = ModelFactory(profile, Path(folder), seed)
        for pair in _stages(profile, budget, reference, precisions, target):
            if time.perf_counter() - started > budget.total_seconds:
                skipped = f"skipped: over the {budget.total_seconds:g} s budget"
                rows = [_empty_row(config, skipped) for config in pair]
            else:
                rows = _measure(pair, factory, profile, budget, target, seed)
            result["rows"] += rows
            result["elapsed_s"] = time.perf_counter() - started
            if out is not None:
                atomic_write_json(out, {**result, **summarise(result)})
    torch.backends.cudnn.benchmark = cudnn_benchmark
    result["status"] = "complete"
    result |= summarise(result)
    if out is not None:
        atomic_write_json(out, result)
    return result


def _environment(
    device: torch.device, profile: BenchProfile, budget: BenchBudget, tiny: bool, reference: str
) -> dict[str, Any]:
    name = f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"
    return {
        "schema": SCHEMA,
        "status": "partial",
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": name,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.version.cuda,
        "tiny": tiny,
        "reference_precision": reference,
        "profile": dataclasses.asdict(profile),
        "budget": dataclasses.asdict(budget),
        "rows": [],
        "elapsed_s": 0.0,
    }


def _stages(
    profile: BenchProfile,
    budget: BenchBudget,
    reference: str,
    precisions: Sequence[str],
    device: torch.device,
) -> list[list[dict[str, Any]]]:
    """Every measurement to take, in order, as pairs timed side by side (module docstring)."""
    cudnn = profile.cudnn_benchmark and device.type == "cuda"
    base = {"channels_last": profile.channels_last, "cudnn_benchmark": cudnn, "compile": False}
    largest = max(budget.inference_batches)

    def models(group: str, kind: str, precision: str, batch: int) -> list[dict[str, Any]]:
        return [
            {
                "group": group,
                "kind": kind,
                "model": model,
                "precision": precision,
                "batch_size": batch,
                **base,
            }
            for model in MODELS
        ]

    def main(precision: str) -> list[list[dict[str, Any]]]:
        pairs = [models("main", "train", precision, profile.batch_size)]
        return pairs + [models("main", "inference", precision, b) for b in budget.inference_batches]

    def toggled(setting: str) -> list[list[dict[str, Any]]]:
        return [
            [
                {
                    "group": f"setting:{setting}",
                    "kind": kind,
                    "model": "R50+DS",
                    "precision": reference,
                    "batch_size": batch,
                    **base,
                    setting: value,
                }
                for value in (False, True)
            ]
            for kind, batch in (("train", profile.batch_size), ("inference", largest))
        ]

    stages = main(reference) + toggled("channels_last") + toggled("cudnn_benchmark")
    for precision in precisions:
        if precision != reference:
            stages += main(precision)
    return stages + toggled("compile")


def _measure(
    pair: list[dict[str, Any]],
    factory: ModelFactory,
    profile: BenchProfile,
    budget: BenchBudget,
    device: torch.device,
    seed: int,
) -> list[dict[str, Any]]:
    """Time the configurations of `pair` side by side; a failure marks both unavailable."""
    rows = [_empty_row(config) for config in pair]
    first = pair[0]
    problem = precision_problem(first["precision"], device)
    if first["group"] == "setting:cudnn_benchmark" and device.type != "cuda":
        problem = problem or "cuDNN runs on CUDA only"
    if problem:
        return [{**row, "unavailable": f"unavailable: {problem}"} for row in rows]
    steps: list[TrainingStep | InferenceCall] = []
    try:
        images, targets = synthetic_batch(first["batch_size"], profile.size, device, seed + 1)
        for config in pair:
            backend = budget.compile_backend if config["compile"] else None
            model = factory.build(config["model"], device, config["channels_last"], backend)
            if config["kind"] == "train":
                steps.append(TrainingStep(model, images, targets, config["precision"], profile))
            else:
                steps.append(InferenceCall(model, images, config["precision"]))
        calls = [
            _with_cudnn_benchmark(step, config["cudnn_benchmark"])
            for step, config in zip(steps, pair, strict=True)
        ]
        timings = time_round_robin(calls, first["batch_size"], device, budget)
        finite = [step.finite() if isinstance(step, TrainingStep) else None for step in steps]
    except Exception as exc:  # noqa: BLE001 - a failing configuration is a finding, not a crash
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = f"unavailable: {type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        return [{**row, "unavailable": reason} for row in rows]
    finally:
        steps.clear()
        if any(config["compile"] for config in pair):
            torch.compiler.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return [
        {
            **row,
            "images_per_s": t.images_per_s,
            "iterations": t.iterations,
            "seconds": t.seconds,
            "peak_memory_mib": t.peak_memory_mib,
            "finite_loss": ok,
        }
        for row, t, ok in zip(rows, timings, finite, strict=True)
    ]


def _empty_row(config: dict[str, Any], unavailable: str | None = None) -> dict[str, Any]:
    return {
        **config,
        "images_per_s": None,
        "iterations": 0,
        "seconds": None,
        "peak_memory_mib": None,
        "finite_loss": None,
        "unavailable": unavailable,
    }


def _with_cudnn_benchmark(call: Callable[[], None], cudnn_benchmark: bool) -> Callable[[], None]:
    """`call`, run with ``torch.backends.cudnn.benchmark`` set to `cudnn_benchmark`."""

    def run() -> None:
        configure_backends(cudnn_benchmark)
        call()

    return run
