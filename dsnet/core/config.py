"""Parameters: `params.yaml` (the single place for knobs), profiles and overrides.

A profile is another YAML file deep-merged over the base (e.g. ``params/paper.yaml``);
overrides are ``section.key=value`` strings parsed as YAML scalars, as in
``dvc exp run -S train.epochs=3``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from dsnet.core.errors import InputError
from dsnet.core.inputs import read_text
from dsnet.core.params_schema import check_params

DEFAULT_PARAMS = Path("params.yaml")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""``1e-3``, ``1e6``: numbers in YAML 1.2 and Python, strings to PyYAML (YAML 1.1)."""


def yaml_numbers(value: Any) -> Any:
    """`value` with exponent-notation strings (``1e-3``) turned into floats, recursively."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: yaml_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml_numbers(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `overlay` merged in; nested mappings merge, other values replace."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping, raising `InputError` naming the file when it is unusable."""
    path = Path(path)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise InputError(path, "invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(path, f"invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping of sections at the top level")
    return yaml_numbers(data)


def apply_override(params: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML).

    Raises:
        InputError: A malformed override, or one `dsnet.core.params_schema` refuses (unknown
            key, wrong type or range), naming ``-S <override>``.

    """
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise InputError(override, "override must look like section.key=value")
    try:
        value = yaml_numbers(yaml.safe_load(raw)) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    alone: Any = value
    for part in reversed(parts):
        alone = {part: alone}
    check_params(alone, f"-S {override}")
    node = params
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(override, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_params(
    files: Sequence[str | PathLike[str]] | None = None,
    overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """Load and merge parameter files, then apply overrides.

    Args:
        files: YAML files merged in order; later files win. Defaults to ``params.yaml``.
        overrides: ``section.key=value`` strings applied last.

    Returns:
        The merged parameters as a plain dict.

    Raises:
        InputError: An unreadable file, or a key or value `dsnet.core.params_schema` refuses
            (naming the file or the override).
    """
    params: dict[str, Any] = {}
    for file in files or [DEFAULT_PARAMS]:
        content = read_yaml(file)
        check_params(content, str(file))
        params = deep_merge(params, content)
    for override in overrides:
        apply_override(params, override)
    return params


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Return the mapping ``params[name]`` (empty if absent), checking its type."""
    value = params.get(name) or {}
    if not isinstance(value, Mapping):
        raise InputError(f"params.{name}", "expected a mapping")
    return dict(value)


def params_hash(params: Mapping[str, Any], sections: Iterable[str] | None = None) -> str:
    """A short stable hash of (selected sections of) the parameters, for lineage tags."""
    chosen = {k: params[k] for k in sorted(sections or params) if k in params}
    blob = json.dumps(chosen, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
