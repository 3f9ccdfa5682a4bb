"""System metrics of a run: MLflow's monitor samples CPU/GPU/memory/disk/network usage.

`start_monitor` starts ``SystemMetricsMonitor`` on a run (the run's ``system/*``
metrics, every `SYSTEM_METRICS_INTERVAL_S` seconds); `stop_monitor` ends it. Monitoring
never stops a step: a monitor that cannot start is ``None``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

SYSTEM_METRICS_INTERVAL_S = 10.0


def start_monitor(run_id: str) -> SystemMetricsMonitor | None:
    """Start MLflow's system metrics monitor on `run_id` (``None`` when unavailable)."""
    try:
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S)
        monitor.start()
    except Exception:  # noqa: BLE001 - monitoring must never stop a training
        return None
    return monitor


def stop_monitor(monitor: Any) -> None:
    """Stop a monitor from :func:`start_monitor` (nothing for ``None``)."""
    if monitor is not None:
        with contextlib.suppress(Exception):
            monitor.finish()
