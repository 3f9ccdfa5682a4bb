"""The generative model of the synthetic cohort: patients, bone density, T-scores, image cues.

Each vertebra has one latent bone density ``b`` on the T-score scale (standard deviations
from the young-adult mean). Everything else is derived from it, each with its own noise:

- the DXA T-score the label comes from: ``T = b + N(0, DXA_NOISE_SD)`` (rounded to 0.01);
- the trabecular mean HU: ``HU_TRAB_AT_T0 + HU_PER_T * b + N(0, TRABECULAR_HU_NOISE_SD)``;
- the trabecular microarchitecture cue ``b + N(0, TEXTURE_NOISE_SD)`` (see `dsnet.synth.bone`);
- the cortical cue ``b + N(0, CORTEX_NOISE_SD)`` (cortical thickness and density).

A patient's mean density falls with age and is higher in men; L1-L4 share it, so their
T-scores are strongly correlated. Every scan also carries a calibration offset that shifts
all tissue HU (`dsnet.synth.phantom`), so a bone-only HU threshold cannot remove it while a
model that also looks at fat, muscle and blood can. docs/synthetic-data.md has the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsnet.data.classes import who_class

VERTEBRAE = ("L1", "L2", "L3", "L4")

FEMALE_FRACTION = 0.75  # the paper's cohort: 104 women, 29 men
AGE_MEAN, AGE_SD, AGE_RANGE = 66.0, 9.0, (45, 90)

# Patient mean density: DENSITY_AT_50 + DENSITY_PER_YEAR * (age - 50) (+ MALE_DENSITY_SHIFT).
DENSITY_AT_50 = -0.8
DENSITY_PER_YEAR = -0.045
MALE_DENSITY_SHIFT = 0.7
PATIENT_DENSITY_SD = 1.3
LEVEL_DENSITY_SHIFT = (-0.15, -0.05, 0.05, 0.15)  # L1..L4
VERTEBRA_DENSITY_SD = 0.3
DENSITY_RANGE = (-5.0, 3.0)

DXA_NOISE_SD = 0.3
HU_TRAB_AT_T0 = 176.0
HU_PER_T = 18.0
TRABECULAR_HU_NOISE_SD = 4.0
TRABECULAR_HU_RANGE = (35.0, 320.0)
TEXTURE_NOISE_SD = 0.45
CORTEX_NOISE_SD = 0.6


@dataclass(frozen=True)
class VertebraTruth:
    """Ground truth of one vertebra of one patient.

    Attributes:
        vertebra: ``L1`` .. ``L4``.
        density: Latent bone density on the T-score scale.
        t_score: The DXA-measured T-score (rounded to 0.01), the source of the label.
        category: WHO class id of `t_score` (1 normal, 2 osteopenia, 3 osteoporosis).
        trabecular_hu: True trabecular mean HU, before the scan's calibration offset.
        texture_cue: Density as seen by the trabecular microarchitecture (T scale).
        cortex_cue: Density as seen by the cortex, thickness and HU (T scale).

    """

    vertebra: str
    density: float
    t_score: float
    category: int
    trabecular_hu: float
    texture_cue: float
    cortex_cue: float


@dataclass(frozen=True)
class PatientTruth:
    """Demographics and per-vertebra truth of one synthetic patient.

    Attributes:
        patient_id: e.g. ``SYN-0007``.
        age: Age in whole years.
        sex: ``F`` or ``M`` (DICOM PatientSex).
        vertebrae: Truth for L1, L2, L3, L4 in that order.

    """

    patient_id: str
    age: int
    sex: str
    vertebrae: tuple[VertebraTruth, ...]


def patient_id(index: int) -> str:
    """The identifier of the `index`-th (0-based) synthetic patient, e.g. ``SYN-0001``."""
    return f"SYN-{index + 1:04d}"


def sample_patient(rng: np.random.Generator, index: int) -> PatientTruth:
    """Draw one patient: sex, age, latent densities, T-scores and image cues of L1-L4.

    Args:
        rng: The patient's own random generator.
        index: 0-based patient number (gives the identifier).

    Returns:
        The patient's truth.

    """
    sex = "F" if rng.random() < FEMALE_FRACTION else "M"
    age = int(np.clip(round(rng.normal(AGE_MEAN, AGE_SD)), *AGE_RANGE))
    mean_density = (
        DENSITY_AT_50
        + DENSITY_PER_YEAR * (age - 50)
        + (MALE_DENSITY_SHIFT if sex == "M" else 0.0)
        + rng.normal(0.0, PATIENT_DENSITY_SD)
    )
    vertebrae = []
    for name, level_shift in zip(VERTEBRAE, LEVEL_DENSITY_SHIFT, strict=True):
        density = float(
            np.clip(
                mean_density + level_shift + rng.normal(0.0, VERTEBRA_DENSITY_SD), *DENSITY_RANGE
            )
        )
        t_score = round(density + rng.normal(0.0, DXA_NOISE_SD), 2) + 0.0  # no "-0.0"
        trabecular_hu = float(
            np.clip(
                HU_TRAB_AT_T0 + HU_PER_T * density + rng.normal(0.0, TRABECULAR_HU_NOISE_SD),
                *TRABECULAR_HU_RANGE,
            )
        )
        vertebrae.append(
            VertebraTruth(
                vertebra=name,
                density=density,
                t_score=t_score,
                category=who_class(t_score),
                trabecular_hu=trabecular_hu,
                texture_cue=density + rng.normal(0.0, TEXTURE_NOISE_SD),
                cortex_cue=density + rng.normal(0.0, CORTEX_NOISE_SD),
            )
        )
    return PatientTruth(patient_id(index), age, sex, tuple(vertebrae))
