"""The parameters of one pipeline run: image ``params.yaml`` + profile + typed knobs.

A pipeline run starts from the ``params.yaml`` baked into the ``dsnet`` image, merges a
profile (YAML text of a nested mapping, such as the content of ``params/paper.yaml``, or
the ``-S`` overrides of ``dsnet pipeline run``), then applies the pipeline's typed knobs.
The profile travels as text, not as a KFP ``dict`` parameter: a protobuf ``Struct`` would
turn every integer into a float (``epochs: 3`` into ``3.0``). A knob left
at its "unset" value keeps what the file and profile say, so the KFP run form shows every
knob without forcing a value on it. The resolved parameters are written once, as a YAML
artifact, and every later step reads that file: one run, one set of parameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dsnet.core.config import deep_merge, params_hash, read_yaml
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_text
from dsnet.tracking.lineage import NON_MODEL_SECTIONS

# knob -> (params key, value meaning "unset: keep the file's value")
KNOBS: dict[str, tuple[str, Any]] = {
    "backbone": ("model.backbone", ""),
    "attention": ("model.attention", ""),
    "epochs": ("train.epochs", 0),
    "lr": ("train.lr", 0.0),
    "batch_size": ("train.batch_size", 0),
    "min_map50": ("register.min_map50", -1.0),
    "min_recall": ("register.min_recall", -1.0),
    "min_acc": ("register.min_acc", -1.0),
}


def knob_overrides(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Map the knobs that are set to their dotted params keys.

    Args:
        knobs: Knob name -> value, names from :data:`KNOBS`.

    Returns:
        ``{"train.epochs": 3, ...}`` for every knob whose value differs from its unset value.

    Raises:
        InputError: An unknown knob name.

    """
    overrides = {}
    for name, value in knobs.items():
        if name not in KNOBS:
            raise InputError(name, f"unknown pipeline knob; known: {', '.join(KNOBS)}")
        key, unset = KNOBS[name]
        if value != unset:
            overrides[key] = value
    return overrides


def parse_profile(text: str) -> dict[str, Any]:
    """Parse a profile: YAML text of a mapping of sections (empty text: no profile).

    Raises:
        InputError: Not YAML, or not a mapping of sections to mappings.

    """
    try:
        profile = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        raise InputError("params_profile", "not valid YAML") from None
    if profile is None:
        return {}
    if not isinstance(profile, Mapping):
        raise InputError("params_profile", "expected a mapping of sections")
    for section_name, value in profile.items():
        if not isinstance(value, Mapping):
            raise InputError(
                "params_profile", f"'{section_name}' must be a mapping of keys, not {value!r}"
            )
    return dict(profile)


def resolve_run_params(
    base_file: str | os.PathLike[str],
    profile: str = "",
    knobs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the base parameter file, a profile and the set knobs.

    Args:
        base_file: ``params.yaml`` (in the image: ``/opt/dsnet/params.yaml``, the working
            directory of every step).
        profile: YAML text of sections deep-merged over the base, e.g.
            ``"train: {epochs: 3}"`` (:func:`parse_profile`).
        knobs: Typed pipeline knobs (:data:`KNOBS`); unset ones are ignored.

    Returns:
        The resolved parameters.

    Raises:
        InputError: Unreadable base file, a profile that is not a mapping of sections, or
            an unknown knob.

    """
    params = deep_merge(read_yaml(base_file), parse_profile(profile))
    for dotted, value in knob_overrides(knobs or {}).items():
        section_name, key = dotted.split(".")
        params.setdefault(section_name, {})[key] = value
    return params


def write_run_params(params: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """Write resolved parameters as YAML (atomically).

    Returns:
        Their ``params_hash`` as the model version tag has it (every section but the gate
        thresholds, see `dsnet.tracking.lineage.lineage_tags`).

    """
    atomic_write_text(Path(path), yaml.safe_dump(dict(params), sort_keys=False))
    return params_hash(params, [name for name in params if name not in NON_MODEL_SECTIONS])
