"""Print the torch and torchvision requirements pinned in pyproject.toml, one per line.

Used by the image build for the CPU variant: those two packages are installed first from
the PyTorch CPU wheel index, then ``pip install .[pipeline]`` finds them satisfied (a
``+cpu`` local version matches the plain pin). The pins stay in pyproject.toml only.

Usage: ``python infra/docker/torch_requirements.py pyproject.toml > torch.txt``
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TORCH_PACKAGES = ("torch", "torchvision")


def torch_requirements(pyproject: Path) -> list[str]:
    """Return the requirement strings of `TORCH_PACKAGES` from `pyproject`'s dependencies.

    Raises:
        SystemExit: A package of `TORCH_PACKAGES` is not listed.
    """
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    found = {}
    for requirement in dependencies:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
        if name in TORCH_PACKAGES:
            found[name] = requirement
    missing = [name for name in TORCH_PACKAGES if name not in found]
    if missing:
        raise SystemExit(f"{pyproject}: no dependency on {', '.join(missing)}")
    return [found[name] for name in TORCH_PACKAGES]


if __name__ == "__main__":
    print(
        "\n".join(torch_requirements(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
    )
