"""The resume state ``last.ckpt``: everything needed to continue a run exactly.

Written by rank 0 after every epoch, atomically, so an interrupted run can continue
from its last finished epoch with ``--resume``: model, optimizer, schedule and gradient
scaler states, the epoch, the history so far, the MLflow run id, and the random-number
states of torch (CPU and CUDA), numpy, Python and the data loader's generator. All
values are tensors, numbers, strings and containers, so the file loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_path
from dsnet.core.torchfile import load_torch_file

RESUME_FORMAT = "dsnet-resume/1"


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Snapshot the random-number states of torch, CUDA, numpy, Python and `generator`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
        "loader": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore a `capture_rng` snapshot (CUDA states only where as many GPUs are visible)."""
    torch.set_rng_state(state["torch"])
    cuda_states = state["cuda"]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["loader"])


def save_resume_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write the resume `state` (see module docstring) to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": RESUME_FORMAT, **state}, tmp)
    return Path(path)


def load_resume_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resume state written by `save_resume_state`.

    Raises:
        InputError: The file is missing, unreadable or not a dsnet resume state.

    """
    state = load_torch_file(
        path,
        missing="no resume state to continue from (train once without --resume)",
        unreadable="unreadable resume state",
    )
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise InputError(path, f"not a dsnet resume state (expected format {RESUME_FORMAT})")
    return state
