"""``dxa.csv``: the DXA T-score of each patient's vertebra, the reference standard.

One row per (``patient_id``, ``vertebra``) with the T-score (docs/data.md). The check
functions return reasons (without the file name) so that the data contract
(`dsnet.data.contract`) and ingest can reuse them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dsnet.core.errors import InputError
from dsnet.core.inputs import read_text

VERTEBRAE = ("L1", "L2", "L3", "L4")
DXA_COLUMNS = ("patient_id", "vertebra", "t_score")
DXA_FILE = "dxa.csv"
T_SCORE_RANGE = (-6.0, 6.0)  # DXA T-scores outside this are data-entry errors


def read_dxa(path: Path) -> tuple[dict[tuple[str, str], float], list[str]]:
    """Read dxa.csv (``patient_id,vertebra,t_score``); returns (lookup, reasons).

    A byte-order mark is accepted; a T-score outside `T_SCORE_RANGE` is a reason.
    """
    try:
        text = read_text(path)
    except InputError as exc:
        return {}, [exc.reason]
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != DXA_COLUMNS:
        return {}, [f"header must be {','.join(DXA_COLUMNS)}, got {','.join(header or [])}"]
    dxa: dict[tuple[str, str], float] = {}
    reasons = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(DXA_COLUMNS):
            reasons.append(f"line {line}: expected 3 fields, got {len(row)}")
            continue
        patient, vertebra, raw_t = (value.strip() for value in row)
        t = parse_t_score(raw_t)
        if not patient:
            reasons.append(f"line {line}: empty patient_id")
        elif check_vertebra(vertebra):
            reasons.append(f"line {line}: {check_vertebra(vertebra)}")
        elif check_t_score(raw_t):
            reasons.append(f"line {line}: {check_t_score(raw_t)}")
        elif (patient, vertebra) in dxa:
            reasons.append(f"line {line}: duplicate row for {patient} {vertebra}")
        else:
            dxa[(patient, vertebra)] = t
    return dxa, reasons


def parse_t_score(value: Any) -> float | None:
    """Return `value` as a finite float, or None (bools, text, NaN and inf are not)."""
    if isinstance(value, bool):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


def check_t_score(value: Any) -> str | None:
    """Reason why `value` is not a plausible DXA T-score (a finite number in `T_SCORE_RANGE`)."""
    t = parse_t_score(value)
    if t is None:
        return f"t_score {value!r} is not a finite number"
    low, high = T_SCORE_RANGE
    if not low <= t <= high:
        return f"t_score {t:g} is outside the plausible range {low:g}..{high:g}"
    return None


def check_vertebra(vertebra: Any) -> str | None:
    """Reason why `vertebra` is not one of L1..L4, or None."""
    return None if vertebra in VERTEBRAE else f"vertebra {vertebra!r} is not one of L1..L4"


def check_dxa_coverage(
    images: Iterable[Mapping[str, Any]], dxa: Mapping[tuple[str, str], float]
) -> list[str]:
    """Reasons for (patient, vertebra) pairs of images with no dxa.csv row, one per pair."""
    needed: dict[tuple[str, str], int] = {}
    for image in images:
        key = (image["patient_id"], image["vertebra"])
        needed[key] = needed.get(key, 0) + 1
    return [
        f"no row for patient {patient} vertebra {vertebra} ({count} image(s))"
        for (patient, vertebra), count in sorted(needed.items())
        if (patient, vertebra) not in dxa
    ]
