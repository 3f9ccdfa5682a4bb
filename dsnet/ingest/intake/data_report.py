"""The data report of a data version: what a model trained on it learned from.

Written next to the ``.dvc`` file's commit, in ``reports/<data-dir name>/`` of the data
repository, so ``git show data-v3:reports/curated/data_report.json`` gives version 3's
report and ``dvc plots diff data-v2 data-v3 --targets reports/curated/classes.csv``
compares two versions:

- ``data_report.json``: totals; per class (WHO, from the annotation's T-score) the boxes,
  the patients with that diagnosis and the trabecular HU distribution (mean, sd, 5/50/95th
  percentile of `dsnet.models.hu_baseline.trabecular_mean_hu` per box); per vertebra the
  boxes per class; per patient the slices, diagnosis, split side and source batches; the
  split; the change against the previous version (patients and boxes added per class,
  the shift of the mean HU per class, and whether every earlier patient kept their side);
- ``classes.csv``, ``vertebrae.csv``, ``patients.csv``: the same tables, one row each;
- ``hu.csv``: one row per box (``file, patient_id, vertebra, class, t_score,
  trabecular_hu, split, batch``), for a scatter of HU against T-score.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dsnet.core.fsutil import atomic_write_json, atomic_write_text
from dsnet.data.classes import CLASS_NAMES
from dsnet.data.contract import DataDir
from dsnet.data.dxa import VERTEBRAE
from dsnet.io import read_slice
from dsnet.models.hu_baseline import trabecular_mean_hu

REPORT_FORMAT = "dsnet-data-report/1"
REPORT_JSON = "data_report.json"
CLASS_COLUMNS = (
    "class",
    "patients",
    "boxes",
    "hu_mean",
    "hu_sd",
    "hu_p05",
    "hu_median",
    "hu_p95",
    "patients_added",
    "boxes_added",
)
HU_COLUMNS = (
    "file",
    "patient_id",
    "vertebra",
    "class",
    "t_score",
    "trabecular_hu",
    "split",
    "batch",
)
TABLES = ("classes.csv", "vertebrae.csv", "patients.csv", "hu.csv")


def report_files(folder: Path) -> list[Path]:
    """The files a data report consists of, in `folder`."""
    return [folder / REPORT_JSON, *(folder / name for name in TABLES)]


def box_rows(
    data: DataDir, split: Mapping[str, Any], batch_of: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per box with its trabecular mean HU (every slice is decoded once).

    Args:
        data: The data dir.
        split: Its split (``train``/``test`` patient lists).
        batch_of: File name -> inbox batch it came from.

    Returns:
        Rows with the keys of ``HU_COLUMNS``.

    """
    side = {p: "test" for p in split["test"]} | {p: "train" for p in split["train"]}
    rows = []
    for image in data.images:
        ct = read_slice(data.image_path(image))
        hu = ct.frame.to_display(ct.hu)  # the ROI's anterior shift needs anterior up
        for ann in data.annotations[image["id"]]:
            x, y, w, h = ann["bbox"]
            box = ct.frame.boxes_to_display(np.array([[x, y, x + w, y + h]], dtype=float))[0]
            rows.append(
                {
                    "file": image["file_name"],
                    "patient_id": image["patient_id"],
                    "vertebra": ann["vertebra"],
                    "class": CLASS_NAMES[ann["category_id"]],
                    "t_score": float(ann["t_score"]),
                    "trabecular_hu": round(trabecular_mean_hu(hu, box), 2),
                    "split": side.get(image["patient_id"], ""),
                    "batch": batch_of.get(image["file_name"], ""),
                }
            )
    return rows


def hu_summary(values: list[float]) -> dict[str, float | None]:
    """Mean, sd, 5th/50th/95th percentile of HU values (None when there are none)."""
    if not values:
        return {"mean": None, "sd": None, "p05": None, "median": None, "p95": None}
    array = np.asarray(values, dtype=np.float64)
    p05, median, p95 = np.percentile(array, [5, 50, 95])
    return {
        "mean": round(float(array.mean()), 2),
        "sd": round(float(array.std()), 2),
        "p05": round(float(p05), 2),
        "median": round(float(median), 2),
        "p95": round(float(p95), 2),
    }


def build_report(
    data: DataDir,
    split: Mapping[str, Any],
    rows: list[dict[str, Any]],
    version: Mapping[str, str],
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Assemble the data report of a version.

    Args:
        data: The data dir of the version.
        split: Its split.
        rows: `box_rows` of the version.
        version: ``data_version`` and ``tag`` of the version.
        previous: The previous version's report, or None for the first version.

    Returns:
        The report (``data_report.json`` content).

    """
    patients: dict[str, dict[str, Any]] = {}
    side = {p: "test" for p in split["test"]} | {p: "train" for p in split["train"]}
    for patient in data.patients():
        images = data.images_of([patient])
        patients[patient] = {
            "slices": len(images),
            "diagnosis": CLASS_NAMES[data.diagnosis(patient)],
            "split": side.get(patient, ""),
            "batches": sorted({r["batch"] for r in rows if r["patient_id"] == patient}),
        }
    classes = {}
    for name in CLASS_NAMES.values():
        values = [r["trabecular_hu"] for r in rows if r["class"] == name]
        classes[name] = {
            "boxes": len(values),
            "patients": sum(1 for p in patients.values() if p["diagnosis"] == name),
            "hu": hu_summary(values),
        }
    vertebrae = {
        v: {
            name: sum(1 for r in rows if r["vertebra"] == v and r["class"] == name)
            for name in classes
        }
        for v in VERTEBRAE
    }
    report = {
        "format": REPORT_FORMAT,
        "data_version": version["data_version"],
        "tag": version["tag"],
        "totals": {"patients": len(patients), "slices": len(data.images), "boxes": len(rows)},
        "classes": classes,
        "vertebrae": vertebrae,
        "patients": patients,
        "split": {
            "seed": split["seed"],
            "test_fraction": split["test_fraction"],
            "train": len(split["train"]),
            "test": len(split["test"]),
            "test_by_diagnosis": {
                name: sum(
                    1 for p in patients.values() if p["diagnosis"] == name and p["split"] == "test"
                )
                for name in classes
            },
        },
    }
    report["change"] = change_against(report, previous)
    return report


def change_against(report: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """What changed since the previous version's report (everything is new without one)."""
    old_patients = previous["patients"] if previous else {}
    old_classes = previous["classes"] if previous else {}
    added = sorted(set(report["patients"]) - set(old_patients))
    moved = sorted(
        p
        for p, old in old_patients.items()
        if p in report["patients"] and report["patients"][p]["split"] != old["split"]
    )
    per_class = {}
    for name, now in report["classes"].items():
        before = old_classes.get(name, {"boxes": 0, "patients": 0, "hu": {"mean": None}})
        shift = None
        if now["hu"]["mean"] is not None and before["hu"]["mean"] is not None:
            shift = round(now["hu"]["mean"] - before["hu"]["mean"], 2)
        per_class[name] = {
            "boxes_added": now["boxes"] - before["boxes"],
            "patients_added": now["patients"] - before["patients"],
            "hu_mean_shift": shift,
        }
    return {
        "previous": (
            {"tag": previous["tag"], "data_version": previous["data_version"]} if previous else None
        ),
        "patients_added": added,
        "slices_added": report["totals"]["slices"]
        - (previous["totals"]["slices"] if previous else 0),
        "boxes_added": report["totals"]["boxes"] - (previous["totals"]["boxes"] if previous else 0),
        "classes": per_class,
        "split_moved": moved,
        "split_stable": not moved,
    }


def write_report(folder: Path, report: Mapping[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    """Write the report's JSON and CSV files (each atomically) into `folder`.

    Returns:
        The written files (`report_files`).

    """
    atomic_write_json(folder / REPORT_JSON, dict(report))
    change = report["change"]["classes"]
    classes = [
        {
            "class": name,
            "patients": c["patients"],
            "boxes": c["boxes"],
            **{f"hu_{k}": v for k, v in c["hu"].items()},
            "patients_added": change[name]["patients_added"],
            "boxes_added": change[name]["boxes_added"],
        }
        for name, c in report["classes"].items()
    ]
    vertebrae = [{"vertebra": v, **counts} for v, counts in report["vertebrae"].items()]
    patients = [
        {"patient_id": p, **{**info, "batches": ";".join(info["batches"])}}
        for p, info in report["patients"].items()
    ]
    tables = {
        "classes.csv": (CLASS_COLUMNS, classes),
        "vertebrae.csv": (("vertebra", *CLASS_NAMES.values()), vertebrae),
        "patients.csv": (("patient_id", "slices", "diagnosis", "split", "batches"), patients),
        "hu.csv": (HU_COLUMNS, rows),
    }
    for name, (columns, table) in tables.items():
        atomic_write_text(folder / name, csv_text(columns, table))
    return report_files(folder)


def csv_text(columns: tuple[str, ...], rows: list[Mapping[str, Any]]) -> str:
    """CSV text with a header; None is written as an empty field."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Flat numbers of a report for MLflow (totals, per class counts and mean HU, change)."""
    metrics: dict[str, float] = {f"data.{k}": v for k, v in report["totals"].items()}
    for name, c in report["classes"].items():
        metrics[f"data.{name}.boxes"] = c["boxes"]
        metrics[f"data.{name}.patients"] = c["patients"]
        if c["hu"]["mean"] is not None:
            metrics[f"data.{name}.hu_mean"] = c["hu"]["mean"]
    change = report["change"]
    metrics["data.patients_added"] = len(change["patients_added"])
    metrics["data.slices_added"] = change["slices_added"]
    metrics["data.split_stable"] = float(change["split_stable"])
    return metrics
