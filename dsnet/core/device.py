"""Device, CPU threads and backend flags for training.

``train.device``: ``auto`` picks CUDA when a GPU is visible and the CPU otherwise;
``cpu`` and ``cuda`` force one. Under torchrun each process takes ``cuda:LOCAL_RANK``.

Precision: ``train.amp`` is mixed precision on CUDA (float16 autocast + GradScaler) and
ignored on the CPU; ``train.cpu_bf16`` runs the CPU forward pass under bfloat16
autocast (``auto``: only where the CPU computes bfloat16 natively, AVX512-BF16 or AMX;
elsewhere it would be emulated and slower). Weights, optimizer and losses stay float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dsnet.core.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def select_device(name: str, local_rank: int = 0, setting: str = "train.device") -> torch.device:
    """Resolve a device setting (``train.device``, ``evaluate.device``) to a torch device.

    Args:
        name: ``auto``, ``cpu`` or ``cuda``.
        local_rank: This process's GPU index on its node (torchrun ``LOCAL_RANK``).
        setting: The parameter's name, for error messages.

    Returns:
        ``cuda:<local_rank>`` or ``cpu``.

    Raises:
        InputError: An unknown name, or ``cuda`` without a visible GPU.

    """
    name = str(name or "auto").lower()
    if name not in DEVICE_CHOICES:
        raise InputError(setting, f"must be one of {', '.join(DEVICE_CHOICES)}, got {name}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(setting, "cuda requested but no CUDA device is visible")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without sched_getaffinity
        return os.cpu_count() or 1


def configure_threads(threads: int | str | None, processes_per_node: int = 1) -> int:
    """Set torch's intra-op threads for this process and return the number used.

    Args:
        threads: ``train.threads``: a positive count, or ``auto``/None for the available
            cores shared evenly among the training processes on this node.
        processes_per_node: Training processes on this node (torchrun
            ``LOCAL_WORLD_SIZE``).

    Returns:
        The thread count set with ``torch.set_num_threads``.

    """
    if threads in (None, "auto"):
        count = max(1, available_cpus() // max(1, processes_per_node))
    else:
        count = int(threads)
        if count < 1:
            raise InputError("train.threads", f"must be 'auto' or a positive count, got {threads}")
    torch.set_num_threads(count)
    return count


def configure_backends(cudnn_benchmark: bool = True) -> None:
    """Set ``torch.backends.cudnn.benchmark`` (``train.cudnn_benchmark``).

    With it cuDNN times its kernels for each new input shape and keeps the fastest; input
    sizes are fixed per profile, so that happens once. It only matters on CUDA.

    Args:
        cudnn_benchmark: The setting (harmless on the CPU, where cuDNN is not used).

    """
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)


def autocast_dtype(
    device: torch.device, amp: bool, cpu_bf16: bool | str | None = False
) -> torch.dtype | None:
    """The autocast dtype of the forward pass, or None for plain float32.

    Args:
        device: The training device.
        amp: ``train.amp``: float16 mixed precision on CUDA.
        cpu_bf16: ``train.cpu_bf16``: ``true``, ``false`` or ``auto`` (bfloat16 on the CPU
            when it has native bfloat16 support).

    Returns:
        ``torch.float16`` (CUDA + amp), ``torch.bfloat16`` (CPU + cpu_bf16) or None.

    """
    if device.type == "cuda":
        return torch.float16 if amp else None
    if str(cpu_bf16).lower() == "auto":
        return torch.bfloat16 if native_cpu_bf16() else None
    if cpu_bf16 not in (True, False, None):
        raise InputError("train.cpu_bf16", f"must be true, false or auto, got {cpu_bf16!r}")
    return torch.bfloat16 if cpu_bf16 else None


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (oneDNN with AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def device_description(device: Any) -> str:
    """Describe the device the timings were taken on, for people."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip() + ", "
                break
    except OSError:
        pass
    return f"cpu ({cpu}{torch.get_num_threads()} threads)"


def synchronize(device: Any) -> None:
    """Wait for queued GPU work so that a timer measures it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
