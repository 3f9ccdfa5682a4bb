"""Tiny data dirs (the data contract of docs/data.md) built with pydicom for the data tests.

Each slice is a real CT Image Storage file derived from pydicom's ``CT_small.dcm`` header,
with a simple phantom as pixel data: air, an elliptic soft-tissue body and a bright
elliptic vertebral body (cortical rim + trabecular core) whose box is written to
annotations.json. The vertebral body sits off-centre (left/right and up/down) so that a
mirror or zoom that forgot to move the box would leave it off the bone.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.uid import generate_uid

from dsnet.data.classes import CATEGORIES, who_class

AIR_HU, TISSUE_HU, CORTEX_HU = -1000.0, 40.0, 700.0


def trabecular_hu(t_score: float) -> float:
    """A plausible trabecular HU for a T-score (denser bone for higher T)."""
    return 200.0 + 30.0 * t_score


def phantom_hu(
    rows: int, cols: int, body: tuple[float, float, float, float], core_hu: float, seed: int
) -> np.ndarray:
    """Float32 [rows, cols] HU image; `body` = (cx, cy, rx, ry) of the vertebral body in px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols] + 0.5  # pixel centres, COCO pixel-edge convention
    hu = np.full((rows, cols), AIR_HU, np.float32)
    torso = ((xx - cols / 2) / (0.45 * cols)) ** 2 + ((yy - rows / 2) / (0.40 * rows)) ** 2 <= 1
    hu[torso] = TISSUE_HU
    cx, cy, rx, ry = body
    radius = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    hu[radius <= 1] = CORTEX_HU
    hu[radius <= 0.6] = core_hu
    hu += rng.normal(0.0, 8.0, hu.shape).astype(np.float32)
    return hu


def write_slice(
    path: Path,
    hu: np.ndarray,
    patient_id: str,
    *,
    patient_name: str = "ANON^PHANTOM",
    spacing: tuple[float, float] = (1.0, 1.0),
    instance: int = 1,
    **tags: object,
) -> Path:
    """Write `hu` (float32 [H, W]) as an uncompressed CT slice with the given header values."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    if "PixelPaddingValue" in ds:
        del ds.PixelPaddingValue
    rows, cols = hu.shape
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    ds.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype("<i2").tobytes()
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = instance
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_data_dir(
    root: Path,
    t_scores: Mapping[str, Mapping[str, float]],
    *,
    slices_per_vertebra: int = 1,
    size: tuple[int, int] = (96, 96),
    spacing: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
) -> Path:
    """Write a valid data dir: one phantom slice per (patient, vertebra, k) and its box.

    Args:
        root: Folder to create.
        t_scores: ``{patient_id: {"L1": t, ...}}``; every pair gets slices and a dxa row.
        slices_per_vertebra: Slices per vertebra.
        size: (rows, cols) of each slice.
        spacing: PixelSpacing (row, col) in mm.
        seed: Seeds body positions and noise.

    Returns:
        `root`.
    """
    rng = np.random.default_rng(seed)
    rows, cols = size
    images, annotations, dxa_rows = [], [], []
    for patient_id, per_vertebra in t_scores.items():
        for vertebra, t in per_vertebra.items():
            dxa_rows.append((patient_id, vertebra, t))
            for k in range(slices_per_vertebra):
                rx, ry = 0.12 * cols, 0.10 * rows
                cx = cols / 2 + rng.choice([-1, 1]) * rng.uniform(0.08, 0.15) * cols
                cy = 0.55 * rows + rng.uniform(-0.05, 0.05) * rows
                image_id = len(images) + 1
                rel = f"dicom/{patient_id}/{vertebra}_{k}.dcm"
                hu = phantom_hu(rows, cols, (cx, cy, rx, ry), trabecular_hu(t), seed + image_id)
                write_slice(root / rel, hu, patient_id, spacing=spacing, instance=k + 1)
                images.append(
                    {
                        "id": image_id,
                        "file_name": rel,
                        "width": cols,
                        "height": rows,
                        "patient_id": patient_id,
                        "vertebra": vertebra,
                    }
                )
                bbox = [cx - rx, cy - ry, 2 * rx, 2 * ry]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": who_class(t),
                        "bbox": bbox,
                        "area": bbox[2] * bbox[3],
                        "iscrowd": 0,
                        "vertebra": vertebra,
                        "t_score": t,
                    }
                )
    coco = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    write_json(root / "annotations.json", coco)
    with (root / "dxa.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "vertebra", "t_score"])
        writer.writerows(dxa_rows)
    return root


def read_json(path: Path) -> dict:
    """Read a JSON file."""
    return json.loads(path.read_text())


def write_json(path: Path, obj: object) -> None:
    """Write a JSON file."""
    path.write_text(json.dumps(obj, indent=1))


def files_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content), to compare trees."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
