"""Print the pins of a requirements lock that a local wheel folder can install here.

Used by the image build with a wheel folder (build context ``wheels``): where the package
index and ``--find-links`` offer the same version, pip takes the index's file, so the build
first installs these pins from the folder alone (``pip install --no-index --find-links``),
and the lock's install that follows finds them already met. A wheel counts when its name and
version are the pin's and its tags fit this interpreter: CPython ``cpXY`` (or ``abi3`` from
an older one) or ``py3``, and Linux on this machine's architecture or ``any``.

Usage::

    python infra/docker/local_wheels.py LOCK DIR
"""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

from torch_requirements import lock_pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fits_here(python: str, abi: str, plat: str) -> bool:
    """Whether wheel tags ``python-abi-plat`` install on this interpreter and machine."""
    major, minor = sys.version_info[:2]
    pythons = python.split(".")
    cpython = f"cp{major}{minor}" in pythons or (
        abi == "abi3"
        and any(p.startswith(f"cp{major}") and int(p[3:] or 0) <= minor for p in pythons)
    )
    pure = bool({f"py{major}", f"py{major}{minor}"} & set(pythons)) and abi == "none"
    linux = plat == "any" or any(
        p.startswith(("manylinux", "linux")) and p.endswith(platform.machine())
        for p in plat.split(".")
    )
    return (cpython or pure) and linux


def local_pins(lock: Path, folder: Path) -> list[str]:
    """Return the requirement lines of `lock` that a wheel in `folder` satisfies exactly."""
    pins = {_normal(name): line for name, line in lock_pins(lock).items() if "==" in line}
    found = {}
    for wheel in folder.glob("*.whl"):
        parts = wheel.name[: -len(".whl")].split("-")
        if len(parts) not in (5, 6) or not fits_here(*parts[-3:]):
            continue
        name = _normal(parts[0])
        if name in pins and re.split(r"[\s;]", pins[name].split("==", 1)[1])[0] == parts[1]:
            found[name] = pins[name]
    return [found[name] for name in sorted(found)]


if __name__ == "__main__":
    print("\n".join(local_pins(Path(sys.argv[1]), Path(sys.argv[2]))))
