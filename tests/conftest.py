"""Shared pytest fixtures. Area-specific fixtures live beside their tests."""

from __future__ import annotations

import os

import pytest

# Tests never reach the network; keep third-party libraries from trying.
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def params():
    """The repository's default parameters (params.yaml)."""
    from pathlib import Path

    from dsnet.core.config import load_params

    return load_params([Path(__file__).resolve().parents[1] / "params.yaml"])


@pytest.fixture()
def one_torch_thread():
    """Run the test with one torch thread (shared 2-core machine); restore the setting after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Real MLflow / S3 servers and stores for the lifecycle tests (fixtures in tests/servers.py).
pytest_plugins = ["servers"]
