"""The embedded synthetic lumbar-CT data set: draw a cohort and write the data contract.

``synthesize(out, patients, seed)`` writes, atomically (all or nothing)::

    out/dicom/<patient_id>/<vertebra>_<k>.dcm   one axial CT slice per file (CT Image Storage)
    out/annotations.json                        COCO: one vertebral-body box per image
    out/dxa.csv                                 patient_id,vertebra,t_score
    out/synth_truth.csv                         generator ground truth (age, sex, latent
                                                density, cues, calibration); not part of
                                                the data contract, for analysis only

A fraction ``variants`` of the patients (drawn from their own seeded stream, so the others
come out exactly as without variants) are *variant* scans (`dsnet.synth.phantom.
sample_variant`): matrix 128, 256 or 512, pixel spacing 0.5-1.0 mm, targeted small fields
of view around the spine (down to 84 mm), other table heights, and stored in one of the 8
flip/transpose orders with the matching geometry tags (`dsnet.synth.dicomct`). Boxes in
``annotations.json`` are on each file's *stored* pixel grid.

Patients are generated one at a time and every slice is written as soon as it is
rendered, so memory does not grow with the number of patients. Every random draw comes
from ``numpy.random.SeedSequence([seed, patient, ...])`` and the UIDs and dates derive
from the seed: the same arguments give byte-identical output.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_dir, check_replaceable
from dsnet.data.classes import CATEGORIES, CLASS_NAMES, patient_diagnosis
from dsnet.io.geometry import storage_frames
from dsnet.synth import phantom
from dsnet.synth.dicomct import RESCALE_INTERCEPT, StudyInfo, ct_slice_dataset
from dsnet.synth.population import PatientTruth, sample_patient

STORAGES = tuple(
    (f.transpose, f.flip_rows, f.flip_cols) for f in storage_frames((1, 1), (1.0, 1.0))
)
"""The 8 flip/transpose storage orders (transpose, flip rows, flip columns)."""
MAX_SLICES_PER_VERTEBRA = 8
SYNTH_CONTRIBUTORS = ("dsnet.synth.generate", "dsnet.data.synth")
"""``annotations.json`` contributor of synth outputs: this module's, then its former name."""
MAX_SLICE_REACH_MM = 4.5  # slices stay within mid-body +- this
FIRST_STUDY_DATE = dt.date(2019, 1, 1)
TRUTH_FIELDS = (
    "patient_id",
    "age",
    "sex",
    "vertebra",
    "t_score",
    "category",
    "density",
    "trabecular_hu",
    "calibration_hu",
    "texture_cue",
    "cortex_mm",
    "cortex_hu",
    "noise_sd",
    "spacing",
    "matrix",
    "fov_centre",
    "orientation",
)
VARIANT_STREAM = 9001  # SeedSequence entry of the variant draws (apart from the anatomy's)


@dataclass
class SynthSummary:
    """What `synthesize` wrote.

    Attributes:
        out_dir: The data dir.
        patients: Number of patients.
        slices: Number of DICOM slices (= images = annotations).
        slice_classes: Slices per class name.
        patient_classes: Patients per diagnosis (class of the lowest T-score).
        sexes: Patients per sex (``F``, ``M``).
        ages: (min, median, max) age in years.

    """

    out_dir: Path
    patients: int
    slices: int
    slice_classes: dict[str, int] = field(default_factory=dict)
    patient_classes: dict[str, int] = field(default_factory=dict)
    sexes: dict[str, int] = field(default_factory=dict)
    ages: tuple[int, int, int] = (0, 0, 0)

    def to_dict(self) -> dict:
        """A JSON-ready dict of the summary."""
        return {
            "out_dir": str(self.out_dir),
            "patients": self.patients,
            "slices": self.slices,
            "slice_classes": self.slice_classes,
            "patient_classes": self.patient_classes,
            "sexes": self.sexes,
            "ages": list(self.ages),
        }


def is_synth_output(folder: Path) -> bool:
    """Whether `folder` holds an earlier `synthesize` output (safe to replace)."""
    try:
        info = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))["info"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        isinstance(info, dict)
        and info.get("contributor") in SYNTH_CONTRIBUTORS
        and (folder / "synth_truth.csv").is_file()
    )


def _check_arguments(
    patients: int, seed: int, slices_per_vertebra: int, variants: float = 0.0
) -> None:
    if (
        isinstance(variants, bool)
        or not isinstance(variants, int | float)
        or not (0.0 <= variants <= 1.0)
    ):
        raise InputError("variants", f"must be a fraction in [0, 1], got {variants!r}")
    for name, value, low, high in (
        ("patients", patients, 1, None),
        ("seed", seed, 0, 2**63 - 1),
        ("slices_per_vertebra", slices_per_vertebra, 1, MAX_SLICES_PER_VERTEBRA),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InputError(name, f"must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise InputError(name, f"must be {bound}, got {value}")


def slice_offsets(rng: np.random.Generator, count: int, thickness: float) -> list[float]:
    """Heights (mm from mid-body) of `count` contiguous slices through a vertebral body.

    Slices are one slice thickness apart (closer if that would leave the mid-body
    region), centred near mid-height with a random shift; returned cranial first.
    """
    step = min(thickness, 2 * MAX_SLICE_REACH_MM / max(count, 1))
    half_span = step * (count - 1) / 2
    shift = rng.uniform(-1.0, 1.0) * max(MAX_SLICE_REACH_MM - half_span - step / 2, 0.0)
    return [round(shift + half_span - i * step, 2) for i in range(count)]


def _study_info(
    rng: np.random.Generator,
    seed: int,
    truth: PatientTruth,
    scan: phantom.Scan,
    storage: tuple[bool, bool, bool] | None = None,
) -> StudyInfo:
    study_date = FIRST_STUDY_DATE + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
    study_time = dt.time(
        int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    )
    birthday_passed = int(rng.integers(0, 365))
    birth_date = study_date - dt.timedelta(days=365.25 * truth.age + birthday_passed)
    return StudyInfo(
        seed=seed,
        patient_id=truth.patient_id,
        age=truth.age,
        sex=truth.sex,
        study_datetime=dt.datetime.combine(study_date, study_time),
        birth_date=birth_date,
        spacing=scan.spacing,
        slice_thickness=scan.slice_thickness,
        kernel=scan.kernel,
        table_height=float(140.0 + scan.trunk_xy[1]),
        fov_centre_xy=scan.fov_centre_xy,
        storage=storage,
    )


def _write_dicom(path: Path, ds: pydicom.Dataset) -> None:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())


def synthesize(
    out_dir: str | os.PathLike[str],
    patients: int,
    seed: int,
    slices_per_vertebra: int = 2,
    variants: float = 0.0,
) -> SynthSummary:
    """Generate the synthetic data set and write the data contract atomically.

    Args:
        out_dir: The data dir to create; an existing one is replaced as a whole only if
            it is empty or an earlier synth output.
        patients: Number of patients (>= 1).
        seed: Seed of the whole data set (>= 0).
        slices_per_vertebra: Axial slices through each of L1-L4 (1..8).
        variants: Fraction (0..1) of patients drawn as variant scans (module docstring).

    Returns:
        Counts of what was written.

    Raises:
        InputError: If an argument is out of range, or `out_dir` is a file, the current
            folder, or a non-empty folder synth did not make (nothing is deleted).

    """
    _check_arguments(patients, seed, slices_per_vertebra, variants)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, is_synth_output(out_dir), "dsnet synth")
    images: list[dict] = []
    annotations: list[dict] = []
    dxa_rows: list[tuple[str, str, float]] = []
    truth_rows: list[dict] = []
    diagnoses: list[int] = []
    sexes: list[str] = []
    ages: list[int] = []
    with atomic_dir(out_dir) as tmp:
        for index in range(patients):
            rng = np.random.default_rng([seed, index])
            truth = sample_patient(rng, index)
            scene = phantom.build_scene(rng, truth)
            variant_rng = np.random.default_rng([seed, index, VARIANT_STREAM])
            storage = None
            if variant_rng.random() < variants:
                scene = phantom.sample_variant(variant_rng, scene)
                storage = STORAGES[int(variant_rng.integers(len(STORAGES)))]
            study = _study_info(rng, seed, truth, scene.scan, storage)
            patient_dir = tmp / "dicom" / truth.patient_id
            patient_dir.mkdir(parents=True)
            diagnoses.append(patient_diagnosis(v.t_score for v in truth.vertebrae))
            sexes.append(truth.sex)
            ages.append(truth.age)
            instance = 0
            for level_index, vertebra in enumerate(truth.vertebrae):
                level_rng = np.random.default_rng([seed, index, 1 + level_index])
                offsets = slice_offsets(level_rng, slices_per_vertebra, scene.scan.slice_thickness)
                background = phantom.level_background(scene, vertebra.vertebra)
                for k, offset in enumerate(offsets):
                    slice_rng = np.random.default_rng([seed, index, 1 + level_index, 1 + k])
                    rendered = phantom.render_slice(
                        scene, vertebra.vertebra, offset, slice_rng, background
                    )
                    instance += 1
                    display = np.rint(rendered.hu - RESCALE_INTERCEPT).astype(np.int16)
                    name = f"{vertebra.vertebra}_{k + 1}.dcm"
                    _write_dicom(
                        patient_dir / name,
                        ct_slice_dataset(
                            study,
                            display,
                            rendered.z,
                            instance,
                            image_key=f"{vertebra.vertebra} {k + 1}/{slices_per_vertebra}",
                        ),
                    )
                    image_id = len(images) + 1
                    frame = study.frame(display.shape)
                    box = frame.boxes_to_stored(np.array([rendered.box_xyxy], dtype=float))[0]
                    x1, y1, x2, y2 = (int(round(v)) for v in box)
                    stored_rows, stored_cols = frame.stored_shape
                    images.append(
                        {
                            "id": image_id,
                            "file_name": f"dicom/{truth.patient_id}/{name}",
                            "width": int(stored_cols),
                            "height": int(stored_rows),
                            "patient_id": truth.patient_id,
                            "vertebra": vertebra.vertebra,
                        }
                    )
                    annotations.append(
                        {
                            "id": image_id,
                            "image_id": image_id,
                            "category_id": vertebra.category,
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1),
                            "iscrowd": 0,
                            "vertebra": vertebra.vertebra,
                            "t_score": vertebra.t_score,
                        }
                    )
                dxa_rows.append((truth.patient_id, vertebra.vertebra, vertebra.t_score))
                vb = scene.vertebrae[vertebra.vertebra]
                truth_rows.append(
                    {
                        "patient_id": truth.patient_id,
                        "age": truth.age,
                        "sex": truth.sex,
                        "vertebra": vertebra.vertebra,
                        "t_score": f"{vertebra.t_score:.2f}",
                        "category": vertebra.category,
                        "density": f"{vertebra.density:.3f}",
                        "trabecular_hu": f"{vertebra.trabecular_hu:.1f}",
                        "calibration_hu": f"{scene.scan.calibration_hu:.1f}",
                        "texture_cue": f"{vertebra.texture_cue:.3f}",
                        "cortex_mm": f"{vb.cortex_mm:.3f}",
                        "cortex_hu": f"{vb.cortex_hu:.1f}",
                        "noise_sd": f"{scene.scan.noise_sd:.1f}",
                        "spacing": f"{scene.scan.spacing:.6g}",
                        "matrix": scene.scan.matrix,
                        "fov_centre": "{:.1f} {:.1f}".format(*scene.scan.fov_centre_xy),
                        "orientation": " ".join(
                            f"{v:g}" for v in study.frame((1, 1)).stored_orientation()
                        ),
                    }
                )
        coco = {
            "info": {
                "description": "DSNet-Ops synthetic lumbar CT (L1-L4 vertebral bodies)",
                "version": "1",
                "contributor": SYNTH_CONTRIBUTORS[0],
                "seed": seed,
                "slices_per_vertebra": slices_per_vertebra,
                "variants": variants,
            },
            "licenses": [],
            "categories": CATEGORIES,
            "images": images,
            "annotations": annotations,
        }
        (tmp / "annotations.json").write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
        _write_csv(
            tmp / "dxa.csv",
            ("patient_id", "vertebra", "t_score"),
            [{"patient_id": p, "vertebra": v, "t_score": f"{t:.2f}"} for p, v, t in dxa_rows],
        )
        _write_csv(tmp / "synth_truth.csv", TRUTH_FIELDS, truth_rows)
    slice_counts = Counter(a["category_id"] for a in annotations)
    patient_counts = Counter(diagnoses)
    return SynthSummary(
        out_dir=out_dir,
        patients=patients,
        slices=len(images),
        slice_classes={CLASS_NAMES[c]: slice_counts.get(c, 0) for c in CLASS_NAMES},
        patient_classes={CLASS_NAMES[c]: patient_counts.get(c, 0) for c in CLASS_NAMES},
        sexes={s: sexes.count(s) for s in ("F", "M")},
        ages=(min(ages), int(np.median(ages)), max(ages)),
    )


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
