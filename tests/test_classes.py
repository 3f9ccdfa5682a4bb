import math

import pytest

from dsnet.data.classes import CATEGORIES, CLASS_NAMES, patient_diagnosis, who_class


@pytest.mark.parametrize(
    ("t_score", "expected"),
    [
        (2.3, 1),
        (-0.99, 1),
        (-1.0, 1),  # T >= -1.0 is normal
        (-1.0001, 2),
        (-1.8, 2),
        (-2.4999, 2),
        (-2.5, 3),  # T <= -2.5 is osteoporosis
        (-2.5001, 3),
        (-4.7, 3),
    ],
)
def test_who_class_boundaries(t_score, expected):
    assert who_class(t_score) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_who_class_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        who_class(bad)


def test_patient_diagnosis_is_class_of_lowest_t():
    assert patient_diagnosis([-0.2, 0.4, -1.2, 0.1]) == 2
    assert patient_diagnosis([-0.2, -2.5, -1.2, 0.1]) == 3
    assert patient_diagnosis([-1.0, 0.0]) == 1
    assert patient_diagnosis(iter([-3.1])) == 3


def test_patient_diagnosis_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="at least one"):
        patient_diagnosis([])
    with pytest.raises(ValueError, match="finite"):
        patient_diagnosis([-0.5, math.nan])


def test_categories_are_coco_ids_1_to_3():
    assert CATEGORIES == [
        {"id": 1, "name": "normal"},
        {"id": 2, "name": "osteopenia"},
        {"id": 3, "name": "osteoporosis"},
    ]
    assert {c["id"]: c["name"] for c in CATEGORIES} == CLASS_NAMES
