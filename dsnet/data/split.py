"""Patient-level train/test split: deterministic, stratified by diagnosis, stable as data grows.

Scheme. Patients are grouped by diagnosis (WHO class of their lowest T-score). Inside each
group they are ordered by a keyed hash, ``HMAC-SHA256(key="dsnet-split:<seed>",
msg=patient_id)``, which depends on nothing but the seed and the patient's own id, and the
first ``k`` go to test, where ``k = round(test_fraction * n)`` for a group of ``n``,
at least 1 and at most ``n - 1`` when ``n >= 2`` (so every class with two or more patients
is tested and trained on), and 0 for a single patient. Slices never decide anything: a
patient's slices all go where the patient goes.

Growth. No rule that looks only at the current data can both keep every patient on their
side when patients are added and guarantee a test patient per class (a class of two must
put one in test, and the newcomer decides which). Stability therefore comes from the
previous split: with ``previous``, every patient already in it keeps their side, and only
new patients are assigned, the lowest hashes of a group to test until the group has its
``k`` test patients. Without ``previous`` the result is the same as with an empty one.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json
from dsnet.core.inputs import read_json
from dsnet.data.classes import CLASS_NAMES
from dsnet.data.contract import DataDir


def patient_hash(patient_id: str, seed: int) -> float:
    """Keyed hash of a patient id, uniform in [0, 1): the patient's place in its group."""
    key = f"dsnet-split:{seed}".encode()
    digest = hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def group_test_count(n: int, test_fraction: float) -> int:
    """Test patients for a diagnosis group of `n`: round(f * n), within [1, n - 1] if n >= 2."""
    if n < 2:
        return 0
    return min(n - 1, max(1, math.floor(test_fraction * n + 0.5)))


def split_patients(
    data: DataDir,
    test_fraction: float = 0.2,
    seed: int = 0,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Split the patients of a data dir into train and test (see the module docstring).

    Args:
        data: The validated data dir.
        test_fraction: Share of each diagnosis group that goes to test, in (0, 1).
        seed: Keys the hash that orders patients.
        previous: An earlier split of the same seed and fraction (`read_split`); its
            patients keep their side, patients no longer in `data` are left out.

    Returns:
        ``{"train": [...], "test": [...], "seed": seed, "test_fraction": test_fraction}``
        with sorted patient ids.

    Raises:
        InputError: On a fraction outside (0, 1), a non-integer seed, or a `previous`
            split made with another seed or fraction.

    """
    test_fraction, seed = check_split_params(test_fraction, seed)
    kept_train, kept_test = set(), set()
    if previous is not None:
        if (previous["seed"], previous["test_fraction"]) != (seed, test_fraction):
            raise InputError(
                "previous split",
                f"made with seed {previous['seed']} and test_fraction "
                f"{previous['test_fraction']}, not {seed} and {test_fraction}",
            )
        kept_train, kept_test = set(previous["train"]), set(previous["test"])

    groups: dict[int, list[str]] = {}
    for patient in data.patients():
        groups.setdefault(data.diagnosis(patient), []).append(patient)
    train, test = [], []
    for patients in groups.values():
        old_test = [p for p in patients if p in kept_test]
        new = sorted(
            (p for p in patients if p not in kept_test and p not in kept_train),
            key=lambda p: (patient_hash(p, seed), p),
        )
        wanted = max(0, group_test_count(len(patients), test_fraction) - len(old_test))
        test += old_test + new[:wanted]
        train += [p for p in patients if p in kept_train] + new[wanted:]
    return {
        "train": sorted(train),
        "test": sorted(test),
        "seed": seed,
        "test_fraction": test_fraction,
    }


def check_split_params(test_fraction: Any, seed: Any) -> tuple[float, int]:
    """Validate params ``split.test_fraction`` (in (0, 1)) and ``split.seed`` (an integer)."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float):
        raise InputError("params split.test_fraction", f"{test_fraction!r} is not a number")
    if not 0.0 < float(test_fraction) < 1.0:
        raise InputError("params split.test_fraction", f"{test_fraction} is not in (0, 1)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError("params split.seed", f"{seed!r} is not an integer")
    return float(test_fraction), seed


def write_split(split: Mapping[str, Any], path: str | PathLike[str]) -> Path:
    """Write a split to `path` as JSON, atomically."""
    return atomic_write_json(path, dict(split))


def read_split(
    path: str | PathLike[str], data: DataDir | None = None, *, both_sides: bool = False
) -> dict[str, Any]:
    """Read and validate a split.json.

    Args:
        path: The split file.
        data: When given, the split must cover exactly this data dir's patients.
        both_sides: Refuse a split with no train or no test patients (a ``--previous``
            split to carry forward must have both).

    Returns:
        The split (``train``, ``test``, ``seed``, ``test_fraction``).

    Raises:
        InputError: Naming `path`, on a missing file, bad JSON or fields, a patient listed
            twice or on both sides, or (with `data`) patients unknown to or missing from it.

    """
    path = Path(path)
    split = read_json(path)
    if not isinstance(split, dict):
        raise InputError(path, "expected a JSON object with train, test, seed, test_fraction")
    for side in ("train", "test"):
        ids = split.get(side)
        if not isinstance(ids, list) or not all(isinstance(p, str) and p for p in ids):
            raise InputError(path, f"'{side}' must be a list of patient ids")
        if len(set(ids)) != len(ids):
            raise InputError(path, f"'{side}' lists a patient twice")
        if both_sides and not ids:
            raise InputError(path, f"'{side}' is empty; a previous split needs both sides")
    try:
        check_split_params(split.get("test_fraction"), split.get("seed"))
    except InputError as exc:
        raise InputError(path, exc.reason) from None
    both = sorted(set(split["train"]) & set(split["test"]))
    if both:
        raise InputError(path, f"patients on both sides: {_some(both)}")
    if data is not None:
        listed, present = set(split["train"]) | set(split["test"]), set(data.patients())
        if listed - present:
            raise InputError(path, f"patients not in {data.root}: {_some(listed - present)}")
        if present - listed:
            raise InputError(
                path,
                f"patients of {data.root} in neither train nor test: "
                f"{_some(present - listed)}; re-run dsnet split",
            )
    return split


def describe_split(data: DataDir, split: Mapping[str, Any]) -> str:
    """One line: train/test patient counts and test/total per diagnosis."""
    parts = []
    for class_id, name in CLASS_NAMES.items():
        total = [p for p in data.patients() if data.diagnosis(p) == class_id]
        tested = [p for p in total if p in set(split["test"])]
        parts.append(f"{name} {len(tested)}/{len(total)}")
    return (
        f"{len(split['train'])} train / {len(split['test'])} test patients "
        f"(test per diagnosis: {', '.join(parts)})"
    )


def _some(ids: set[str] | list[str], shown: int = 5) -> str:
    ids = sorted(ids)
    more = f" (+{len(ids) - shown} more)" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more
