"""Read the torch pins, or the lock without its CUDA runtime, from a requirements lock.

Used by the image build for the CPU variant: torch and torchvision are installed first from
the PyTorch CPU wheel index, then the rest of the lock without the CUDA runtime packages
that only the CUDA torch wheels need (a ``+cpu`` local version satisfies the plain pin).
The pins live in the lock (``requirements/*.lock``, made by ``requirements/lock.sh``) only.

Usage::

    python infra/docker/torch_requirements.py LOCK               # the torch + torchvision pins
    python infra/docker/torch_requirements.py --without-cuda LOCK  # every pin but CUDA runtime
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TORCH_PACKAGES = ("torch", "torchvision")
CUDA_RUNTIME = re.compile(r"^(nvidia-|cuda-|triton$)")
"""Packages that the CUDA torch wheels pull in and a CPU-only torch does not need."""


def lock_pins(lock: Path) -> dict[str, str]:
    """Return ``{name: requirement line}`` for every pinned package of a pip lock file."""
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            pins[re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower()] = line
    return pins


def torch_requirements(lock: Path) -> list[str]:
    """Return the requirement lines of `TORCH_PACKAGES` pinned in `lock`.

    Raises:
        SystemExit: A package of `TORCH_PACKAGES` is not pinned there.
    """
    pins = lock_pins(lock)
    missing = [name for name in TORCH_PACKAGES if name not in pins]
    if missing:
        raise SystemExit(f"{lock}: no pin for {', '.join(missing)}")
    return [pins[name] for name in TORCH_PACKAGES]


def without_cuda(lock: Path) -> list[str]:
    """Return every requirement line of `lock` except the CUDA runtime packages."""
    return [line for name, line in lock_pins(lock).items() if not CUDA_RUNTIME.match(name)]


if __name__ == "__main__":
    args = sys.argv[1:]
    select = without_cuda if args[:1] == ["--without-cuda"] else torch_requirements
    args = args[1:] if select is without_cuda else args
    print("\n".join(select(Path(args[0] if args else "requirements/pipeline.lock"))))
