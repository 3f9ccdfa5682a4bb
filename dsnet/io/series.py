"""Read a folder of CT slices into ordered series, accounting for every file.

Files are grouped by SeriesInstanceUID and ordered along the slice normal. Files that
are not usable CT slices (other modalities, reports, truncated files, duplicates...) are
not fatal: each is listed in `SeriesScan.rejected` with the reason, so a caller can
report them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsnet.core.errors import InputError
from dsnet.io.dicom import CTSlice, read_slice


@dataclass(frozen=True)
class SeriesScan:
    """The outcome of scanning a folder.

    Attributes:
        series: SeriesInstanceUID -> its slices in spatial order (see `order_slices`).
        rejected: (file, reason) for every file that is not a usable CT slice, in path
            order; reasons are the one-line `InputError` reasons of `read_slice`.

    """

    series: dict[str, list[CTSlice]] = field(default_factory=dict)
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def read_series(folder: str | os.PathLike[str]) -> SeriesScan:
    """Read every file under `folder` (recursively) and group the CT slices by series.

    Args:
        folder: A folder of DICOM files, possibly mixed with other files and subfolders.

    Returns:
        A `SeriesScan`: series keyed by SeriesInstanceUID, each ordered by
        `order_slices`; every other file in `rejected` with its reason. A file whose
        SOPInstanceUID was already read is rejected as a duplicate.

    Raises:
        InputError: If `folder` does not exist or is not a folder.

    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found" if not folder.exists() else "not a folder")
    groups: dict[str, list[CTSlice]] = {}
    rejected: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ct = read_slice(path)
        except InputError as err:
            rejected.append((path, err.reason))
            continue
        if ct.sop_uid and ct.sop_uid in seen:
            rejected.append((path, f"duplicate SOPInstanceUID of {seen[ct.sop_uid]}"))
            continue
        seen[ct.sop_uid] = path
        groups.setdefault(ct.series_uid, []).append(ct)
    return SeriesScan(
        series={uid: order_slices(slices) for uid, slices in groups.items()},
        rejected=rejected,
    )


def order_slices(slices: list[CTSlice]) -> list[CTSlice]:
    """Order the slices of one series along the slice normal.

    With ImagePositionPatient and ImageOrientationPatient on every slice, the key is the
    position projected on the normal of the first slice (row direction x column
    direction), ascending: for standard axial slices (orientation 1,0,0,0,1,0) the
    normal is +z, so the order runs feet to head. Otherwise InstanceNumber (ascending,
    missing last) decides. Ties fall back to InstanceNumber, then the file path.

    Args:
        slices: Slices of one series, in any order.

    Returns:
        A new list in spatial order.

    """
    normal = slices[0].normal if slices else None
    has_geometry = normal is not None and all(s.position is not None for s in slices)

    def key(ct: CTSlice) -> tuple[float, float, str]:
        along = float(np.dot(ct.position, normal)) if has_geometry else 0.0
        number = ct.instance_number if ct.instance_number is not None else float("inf")
        return along, number, str(ct.path)

    return sorted(slices, key=key)
