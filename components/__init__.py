"""KFP v2 components of DSNet-Ops: one thin, typed component per pipeline step.

Each component is a lightweight Python component running in the ``dsnet`` image
(``infra/docker/Dockerfile``), which already holds dsnet, kfp and their dependencies: no
``pip install`` at run time (``install_kfp_package=False``, no ``packages_to_install``).
The function body imports `dsnet` and calls one step function; the component source is
embedded in the compiled pipeline.

The image is named once, in ``infra/k8s/image/kustomization.yaml`` (the kustomize
component both overlays use); it is read here at compile time (:data:`DEFAULT_IMAGE`).
``DSNET_IMAGE`` overrides it for one compile (tests, CI). Registry credentials: the
Secrets named in ``DSNET_IMAGE_PULL_SECRETS`` (comma-separated, default none) become
``imagePullSecrets`` of every step and of the TrainJob nodes.

Platform settings (GPUs, node selectors, tolerations, secrets, volumes, caching) are not
set here: the pipeline attaches them to the tasks (``pipeline/dsnet_pipeline.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import yaml
from kfp import dsl

IMAGE_SETTING = (
    Path(__file__).resolve().parents[1] / "infra" / "k8s" / "image" / "kustomization.yaml"
)


def image_reference(setting: Path = IMAGE_SETTING) -> str:
    """The ``dsnet`` image of the kustomize component: ``newName:newTag``."""
    images = yaml.safe_load(setting.read_text(encoding="utf-8"))["images"]
    (entry,) = [image for image in images if image["name"] == "dsnet"]
    return f"{entry['newName']}:{entry['newTag']}"


DEFAULT_IMAGE = image_reference()
BASE_IMAGE = os.environ.get("DSNET_IMAGE") or DEFAULT_IMAGE
IMAGE_PULL_SECRETS = [s for s in os.environ.get("DSNET_IMAGE_PULL_SECRETS", "").split(",") if s]


def dsnet_component(func: Callable) -> Callable:
    """Make `func` a lightweight KFP component running in the ``dsnet`` image."""
    return dsl.component(func, base_image=BASE_IMAGE, install_kfp_package=False)
