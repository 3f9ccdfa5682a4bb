#!/usr/bin/env bash
# Regenerate the committed dependency locks from pyproject.toml, one per install set:
#   main.lock      the library and CLI          (README: main job)
#   pipeline.lock  + the Kubeflow extras        (the container image)
#   test.lock      + pipeline + test tools      (README: tests, .ci/run)
# Each pins every package, so pip (23.x included) installs them without backtracking.
# Run after changing dependencies in pyproject.toml:  bash requirements/lock.sh
# Needs uv (`pip install uv`), which resolves in seconds; the output is plain pip format.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || { echo "lock.sh: uv not found (pip install uv)" >&2; exit 2; }
# Linux x86-64, CPython 3.11: the platform of the image, CI and the README.
target=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-index-url
        --custom-compile-command "bash requirements/lock.sh")
# The widest set first; the smaller ones are constrained by it, so one package has one
# version in every lock (the main job and the tests run the same world).
uv pip compile pyproject.toml --extra test "${target[@]}" -o requirements/test.lock
uv pip compile pyproject.toml --extra pipeline -c requirements/test.lock "${target[@]}" \
  -o requirements/pipeline.lock
uv pip compile pyproject.toml -c requirements/test.lock "${target[@]}" -o requirements/main.lock
