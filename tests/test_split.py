"""Patient-level split: deterministic, stratified, disjoint, stable as patients are added."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datadir_factory import make_data_dir

from dsnet.core.errors import InputError
from dsnet.data.classes import CATEGORIES, who_class
from dsnet.data.contract import DataDir
from dsnet.data.split import read_split, split_patients, write_split

CLASS_T = {1: 0.5, 2: -1.8, 3: -3.0}


def patients_data(counts: dict[int, int], prefix: str = "P", root: Path = Path("d")) -> DataDir:
    """A DataDir record (no files needed by the split) with `counts[class]` patients per class."""
    images, dxa = [], {}
    for class_id, n in counts.items():
        for k in range(n):
            patient = f"{prefix}{class_id}-{k:03d}"
            for vertebra in ("L1", "L2"):
                images.append(
                    {
                        "id": len(images) + 1,
                        "patient_id": patient,
                        "vertebra": vertebra,
                        "file_name": f"dicom/{patient}/{vertebra}.dcm",
                        "width": 8,
                        "height": 8,
                    }
                )
                dxa[(patient, vertebra)] = CLASS_T[class_id] + (0.3 if vertebra == "L1" else 0)
    assert all(who_class(CLASS_T[c]) == c for c in counts)
    return DataDir(root, images, {i["id"]: [] for i in images}, CATEGORIES, dxa)


def merged(a: DataDir, b: DataDir) -> DataDir:
    images = a.images + [dict(i, id=i["id"] + 10_000) for i in b.images]
    return DataDir(a.root, images, {i["id"]: [] for i in images}, CATEGORIES, {**a.dxa, **b.dxa})


def test_split_is_deterministic_disjoint_and_complete():
    data = patients_data({1: 20, 2: 20, 3: 20})
    first = split_patients(data, test_fraction=0.2, seed=3)
    assert first == split_patients(data, test_fraction=0.2, seed=3)
    assert set(first["train"]).isdisjoint(first["test"])
    assert set(first["train"]) | set(first["test"]) == set(data.patients())
    assert (first["seed"], first["test_fraction"]) == (3, 0.2)
    other = split_patients(data, test_fraction=0.2, seed=4)
    assert other["test"] != first["test"]


def test_split_is_stratified_by_diagnosis():
    data = patients_data({1: 30, 2: 20, 3: 10})
    split = split_patients(data, test_fraction=0.2, seed=0)
    test_classes = [data.diagnosis(p) for p in split["test"]]
    assert [test_classes.count(c) for c in (1, 2, 3)] == [6, 4, 2]
    assert len(split["train"]) == 48


def test_every_class_with_two_patients_gets_a_test_patient():
    data = patients_data({1: 12, 2: 2, 3: 1})
    split = split_patients(data, test_fraction=0.2, seed=0)
    test_classes = sorted(data.diagnosis(p) for p in split["test"])
    assert test_classes == [1, 1, 2]  # round(2.4)=2 normal, 1 of 2 osteopenia, 0 of 1


def test_diagnosis_uses_the_lowest_t_over_vertebrae():
    data = patients_data({2: 1})
    patient = data.patients()[0]
    data.dxa[(patient, "L3")] = -2.6
    assert data.diagnosis(patient) == 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_adding_patients_never_moves_an_existing_patient(seed):
    data = patients_data({1: 9, 2: 6, 3: 2})
    before = split_patients(data, test_fraction=0.2, seed=seed)
    for step, counts in enumerate([{1: 3, 2: 1, 3: 1}, {1: 11, 2: 14, 3: 9}, {3: 40}]):
        data = merged(data, patients_data(counts, prefix=f"N{step}-"))
        after = split_patients(data, test_fraction=0.2, seed=seed, previous=before)
        assert set(before["test"]) <= set(after["test"])
        assert set(before["train"]) <= set(after["train"])
        assert set(after["train"]) | set(after["test"]) == set(data.patients())
        for class_id in (1, 2, 3):  # the new patients keep each class near the fraction
            group = [p for p in data.patients() if data.diagnosis(p) == class_id]
            tested = [p for p in after["test"] if p in set(group)]
            assert abs(len(tested) - 0.2 * len(group)) <= 1.5, (class_id, len(group), tested)
        before = after


def test_previous_split_with_other_seed_is_refused():
    data = patients_data({1: 5})
    earlier = split_patients(data, seed=1)
    with pytest.raises(InputError, match="seed 1"):
        split_patients(data, seed=2, previous=earlier)


@pytest.mark.parametrize(("fraction", "seed"), [(0.0, 0), (1.0, 0), ("x", 0), (0.2, 1.5)])
def test_bad_split_params_are_input_errors(fraction, seed):
    with pytest.raises(InputError, match="params split"):
        split_patients(patients_data({1: 5}), test_fraction=fraction, seed=seed)


def test_read_split_round_trip_and_validation(tmp_path):
    data = patients_data({1: 10, 2: 5})
    split = split_patients(data, seed=0)
    path = write_split(split, tmp_path / "split.json")
    assert read_split(path, data) == split

    def bad(obj, fragment):
        file = tmp_path / "bad.json"
        file.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        with pytest.raises(InputError, match=fragment) as info:
            read_split(file, data)
        assert info.value.path == str(file)

    bad("{", "invalid JSON")
    bad([1, 2], "expected a JSON object")
    bad(dict(split, test=split["test"] + [split["train"][0]]), "both sides")
    bad(dict(split, train=split["train"] + ["ZZZ"]), "patients not in d: ZZZ")
    bad(dict(split, train=split["train"][1:]), f"neither train nor test: {split['train'][0]}")
    bad(dict(split, train="P1"), "'train' must be a list")
    bad(dict(split, test_fraction=2), "not in")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsnet", *args], capture_output=True, text=True, cwd=cwd
    )


def test_split_command_writes_the_split_of_the_params(tmp_path):
    t_scores = {f"A{k}": {"L1": t} for k, t in enumerate([0.1, 0.4, -1.5, -1.2, -2.8, -3.3])}
    data_dir = make_data_dir(tmp_path / "data", t_scores)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"split": {"test_fraction": 0.5, "seed": 7}}))
    result = run_cli("split", str(data_dir), "--out", "s.json", "-p", str(params), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    split = json.loads((tmp_path / "s.json").read_text())
    assert (split["seed"], split["test_fraction"]) == (7, 0.5)
    assert len(split["test"]) == 3 and len(split["train"]) == 3
    assert "3 train / 3 test patients" in result.stdout

    more = {f"B{k}": {"L1": t} for k, t in enumerate([0.2, -1.1, -2.6, -1.4, 0.0, -2.9])}
    grown = make_data_dir(tmp_path / "grown", {**t_scores, **more})
    args = ["split", str(grown), "--out", "s2.json", "-p", str(params), "--previous", "s.json"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    after = json.loads((tmp_path / "s2.json").read_text())
    assert set(split["test"]) <= set(after["test"]) and set(split["train"]) <= set(after["train"])
    assert len(after["test"]) == 6  # 4 patients per class, half of them in test

    (data_dir / "dxa.csv").write_text("patient_id,vertebra,t_score\n")
    result = run_cli("split", str(data_dir), "--out", "s.json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {data_dir}/dxa.csv: no row for patient A0")
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "s.json").read_text()) == split  # old output untouched
