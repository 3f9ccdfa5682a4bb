"""Reading PyTorch files a user hands us: safely, with one-line errors.

Checkpoints, resume states and initial weights are all read here, always with
``torch.load(..., weights_only=True)`` so a file can never run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dsnet.core.errors import InputError


def load_failure(exc: BaseException) -> str:
    """Summarise why ``torch.load`` failed in one line (the unpickler's verdict if any).

    torch's advice to retry with ``weights_only=False`` (which would run the file's code)
    and its documentation pointer are left out.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    verdict = [line for line in lines if line.startswith("WeightsUnpickler error:")]
    facts = [
        line
        for line in lines
        if "weights_only" not in line
        and not line.startswith(("Weights only load failed", "Check the documentation"))
    ]
    text = (verdict or facts or [type(exc).__name__])[0]
    return text.split(". Please use")[0].removeprefix("WeightsUnpickler error: ")


def load_torch_file(path: str | os.PathLike[str], *, missing: str, unreadable: str) -> Any:
    """Load a PyTorch file onto the CPU with ``weights_only=True``.

    Args:
        path: The file.
        missing: Reason given when the file does not exist.
        unreadable: Reason given when ``torch.load`` fails; the failure's summary follows
            in parentheses.

    Returns:
        Whatever the file holds (tensors, dicts, lists, numbers, strings).

    Raises:
        InputError: The file is missing or not loadable.

    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse a user's file is bad input
        raise InputError(path, f"{unreadable} ({load_failure(exc)})") from None
