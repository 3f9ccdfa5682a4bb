"""KFP v2 components of DSNet-Ops: one thin, typed component per pipeline step.

Each component is a lightweight Python component running in the ``dsnet`` image
(``infra/docker/Dockerfile``), which already holds dsnet, kfp and their dependencies: no
``pip install`` at run time (``install_kfp_package=False``, no ``packages_to_install``).
The function body imports `dsnet` and calls one step function; the component source is
embedded in the compiled pipeline.

The image comes from one setting, the environment variable ``DSNET_IMAGE`` read once
here at compile time (default :data:`DEFAULT_IMAGE`); compile with your registry's tag:
``DSNET_IMAGE=registry.example.org/dsnet:1.2.0 python pipeline/compile.py``.

Platform settings (GPUs, node selectors, tolerations, secrets, volumes, caching) are not
set here: the pipeline attaches them to the tasks (``pipeline/dsnet_pipeline.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kfp import dsl

DEFAULT_IMAGE = "registry.example.com/dsnet:0.1.0"
BASE_IMAGE = os.environ.get("DSNET_IMAGE") or DEFAULT_IMAGE


def dsnet_component(func: Callable) -> Callable:
    """Make `func` a lightweight KFP component running in the ``dsnet`` image."""
    return dsl.component(func, base_image=BASE_IMAGE, install_kfp_package=False)
