"""Arguments of a pipeline run, checked against the compiled pipeline YAML.

``dsnet pipeline run | schedule | local`` never import the pipeline code: they read the
parameter names and types from the compiled package (``root.inputDefinitions``), so a
misspelt or mistyped argument fails here, before anything is submitted.

- ``--arg name=value`` (value parsed as YAML) sets a pipeline parameter.
- ``-p profile.yaml`` / ``-S section.key=value`` build the ``params_profile`` (YAML text of
  a mapping) that the pipeline deep-merges over the image's ``params.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dsnet.core.config import apply_override, deep_merge, read_yaml
from dsnet.core.errors import InputError

PROFILE_PARAMETER = "params_profile"
DEFAULT_PACKAGE = Path("pipeline/dsnet_pipeline.yaml")
_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (float, int),
    "BOOLEAN": (bool,),
    "STRUCT": (dict,),
    "LIST": (list,),
}


def pipeline_inputs(package: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read the run parameters of a compiled pipeline.

    Args:
        package: The compiled pipeline YAML (``pipeline/dsnet_pipeline.yaml``).

    Returns:
        ``{name: {"type": "STRING" | "NUMBER_INTEGER" | ..., "default": value or None}}``.

    Raises:
        InputError: The file is missing or is not a compiled KFP pipeline.

    """
    package = Path(package)
    try:
        documents = list(yaml.safe_load_all(package.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise InputError(
            package, "compiled pipeline not found (python pipeline/compile.py)"
        ) from None
    except yaml.YAMLError:
        raise InputError(package, "not a YAML file") from None
    spec = documents[0] if documents and isinstance(documents[0], dict) else {}
    if "pipelineInfo" not in spec or "root" not in spec:
        raise InputError(package, "not a compiled KFP pipeline (no pipelineInfo/root)")
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {
        name: {"type": info["parameterType"], "default": info.get("defaultValue")}
        for name, info in parameters.items()
    }


def profile_from(
    files: Sequence[str | os.PathLike[str]] = (), overrides: Iterable[str] = ()
) -> dict[str, Any]:
    """Build a ``params_profile``: parameter files deep-merged in order, then overrides.

    Unlike `dsnet.core.config.load_params` this does not start from ``params.yaml``: the
    profile is merged over the ``params.yaml`` of the image that runs the steps.
    """
    profile: dict[str, Any] = {}
    for file in files:
        profile = deep_merge(profile, read_yaml(file))
    for override in overrides:
        apply_override(profile, override)
    return profile


def parse_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """Parse ``name=value`` strings (value as YAML: ``epochs=3``, ``force=true``)."""
    parsed = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name.strip():
            raise InputError(assignment, "pipeline argument must look like name=value")
        try:
            parsed[name.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise InputError(assignment, "value is not valid YAML") from None
    return parsed


def pipeline_arguments(
    package: str | os.PathLike[str],
    values: Mapping[str, Any],
    profile: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check run arguments against the compiled pipeline and return them typed.

    Args:
        package: The compiled pipeline YAML.
        values: Parameter name -> value (e.g. from :func:`parse_assignments`).
        profile: The profile mapping, sent as YAML text in ``params_profile``; left out
            when empty.

    Returns:
        The arguments to submit (only the given ones; the rest keep their defaults).

    Raises:
        InputError: Unknown name, or a value of the wrong type.

    """
    inputs = pipeline_inputs(package)
    arguments = dict(values)
    if profile:
        arguments[PROFILE_PARAMETER] = yaml.safe_dump(dict(profile), sort_keys=False)
    checked = {}
    for name, value in arguments.items():
        if name not in inputs:
            known = ", ".join(sorted(inputs))
            raise InputError(f"pipeline argument {name}", f"no such parameter; known: {known}")
        kind = inputs[name]["type"]
        allowed = _TYPES.get(kind, (object,))
        if isinstance(value, bool) and bool not in allowed:
            allowed = ()
        if not isinstance(value, allowed):
            raise InputError(f"pipeline argument {name}", f"expected {kind}, got {value!r}")
        checked[name] = float(value) if kind == "NUMBER_DOUBLE" else value
    return checked


def kfp_cron(expression: str) -> str:
    """Turn a 5-field cron expression into the 6-field form (seconds first) KFP expects.

    ``"0 3 * * 0"`` (Sundays 03:00) becomes ``"0 0 3 * * 0"``; a 6-field expression is kept.

    Raises:
        InputError: Not 5 or 6 fields.

    """
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise InputError("--cron", f"'{expression}' is not a cron expression of 5 (or 6) fields")


def run_arguments(
    package: str | os.PathLike[str],
    assignments: Iterable[str] = (),
    profile_files: Sequence[str | os.PathLike[str]] = (),
    overrides: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    **named: Any,
) -> dict[str, Any]:
    """All arguments of a ``dsnet pipeline`` command, checked against the compiled pipeline.

    Precedence, lowest first: `defaults` (e.g. the local services of ``dsnet pipeline
    local``), `named` options (``--data-repo``; None = not given), ``--arg`` `assignments`.
    ``-p``/``-S`` (`profile_files`, `overrides`) become ``params_profile``.

    Returns:
        The checked arguments (`pipeline_arguments`).

    """
    values = dict(defaults or {})
    values.update({name: value for name, value in named.items() if value is not None})
    values.update(parse_assignments(assignments))
    return pipeline_arguments(package, values, profile_from(profile_files, overrides))
