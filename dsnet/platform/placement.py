"""Where a training or evaluation pod runs: CPU pod, or GPUs plus the GPU pool's toleration.

One function, :func:`pod_placement`, turns the run's ``gpu_count`` into everything the
Kubernetes scheduler sees: the accelerator resource and count, CPU and memory requests and
limits, tolerations and node selector. The pipeline's ``placement`` step calls it at run
time and the ``train``/``evaluate`` tasks take its outputs as their resources and
Kubernetes settings (``pipeline/dsnet_pipeline.py``), so ``gpu_count`` is a run parameter
and a CPU-only run (``gpu_count = 0``) carries no GPU resource, toleration or node
selector: it schedules on any node, e.g. a kind cluster. The TrainJob of distributed
training (`dsnet.platform.trainjob`) uses the same rules per node.

The KFP 2.17 driver drops the accelerator when its resource type resolves to ``""`` and
applies node selector and tolerations given as JSON parameters (docs/pipeline.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsnet.core.errors import InputError

# (CPU request, CPU limit, memory request, memory limit)
CPU_POD = ("1", "4", "4G", "8G")  # modest: fits a laptop kind node
GPU_POD = ("8", "16", "32G", "64G")  # DataLoader workers and host-side copies per GPU pod


def gpu_tolerations(gpu_type: str) -> list[dict[str, str]]:
    """Tolerate the taint GPU pools carry, ``<gpu resource>:NoSchedule`` (any value)."""
    return [{"key": gpu_type, "operator": "Exists", "effect": "NoSchedule"}]


def pod_placement(
    gpu_count: int,
    gpu_type: str = "nvidia.com/gpu",
    node_selector: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Resources and scheduling of one pod with `gpu_count` GPUs (0: a CPU pod).

    Args:
        gpu_count: GPUs of the pod; 0 places a CPU pod anywhere.
        gpu_type: Extended resource of the GPUs (``nvidia.com/gpu``, ``amd.com/gpu``);
            its name is also the tolerated taint key.
        node_selector: Node labels of the GPU pool (optional; GPU pods otherwise rely on
            the resource and the toleration). Ignored for a CPU pod.

    Returns:
        ``accelerator`` (resource name, ``""`` for a CPU pod), ``gpus`` (count as text),
        ``cpu_request``, ``cpu_limit``, ``memory_request``, ``memory_limit`` (quantities as
        text), ``tolerations`` (list of Toleration dicts) and ``node_selector`` (dict).

    Raises:
        InputError: A negative count, or GPUs without a resource name.
    """
    if gpu_count < 0:
        raise InputError("gpu_count", f"must be >= 0, got {gpu_count}")
    if gpu_count and not gpu_type:
        raise InputError("gpu_type", "must name the GPU resource, e.g. nvidia.com/gpu")
    cpu, cpu_limit, memory, memory_limit = GPU_POD if gpu_count else CPU_POD
    return {
        "accelerator": gpu_type if gpu_count else "",
        "gpus": str(gpu_count),
        "cpu_request": cpu,
        "cpu_limit": cpu_limit,
        "memory_request": memory,
        "memory_limit": memory_limit,
        "tolerations": gpu_tolerations(gpu_type) if gpu_count else [],
        "node_selector": dict(node_selector or {}) if gpu_count else {},
    }
