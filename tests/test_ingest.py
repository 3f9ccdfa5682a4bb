"""Ingest: every file accepted or rejected with a reason, output de-identified and valid."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from datadir_factory import files_bytes, make_data_dir, phantom_hu, read_json, write_slice

from dsnet.core.errors import DataValidationError, InputError
from dsnet.data.contract import load_data_dir
from dsnet.ingest.sources import ingest, resolve_key
from dsnet.io.deid import pseudonym
from dsnet.io.redact import source_ref

KEY = "ingest-test-key-0123456789"
PHI_ID, PHI_NAME, PHI_BIRTH = "MRN-48151623", "DOE^JOHNATHAN", "19450317"
PHI_TEXT = ["MRN-48151623", "DOE", "JOHNATHAN", "19450317", "Elsewhere", "GREGORY", "MRN-99"]
T_SCORES = {
    PHI_ID: {"L1": -1.2, "L2": -1.6},
    "MRN-27182818": {"L1": 0.4, "L2": 0.1},
    "MRN-31415926": {"L1": -2.8, "L2": -2.6},
}


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsnet", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def add_phi(path: Path) -> str:
    """Fill a slice's header with identifying data; returns its original SOPInstanceUID."""
    ds = pydicom.dcmread(path)
    ds.PatientName = PHI_NAME
    ds.PatientBirthDate = PHI_BIRTH
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.OtherPatientIDs = "MRN-99-OTHER"
    ds.StudyDate = "20210304"
    ds.add_new(0x00091010, "LO", "JOHNATHAN DOE private note")
    ds.save_as(path)
    return str(ds.SOPInstanceUID)


@pytest.fixture()
def source(tmp_path):
    """A contract-layout source: one patient full of PHI, one truncated file."""
    src = make_data_dir(tmp_path / "src", T_SCORES, slices_per_vertebra=2)
    coco = read_json(src / "annotations.json")
    uids = [add_phi(src / i["file_name"]) for i in coco["images"] if i["patient_id"] == PHI_ID]
    broken = src / coco["images"][-1]["file_name"]
    broken.write_bytes(broken.read_bytes()[:-3000])
    return src, uids, coco["images"][-1]["file_name"]


def test_contract_source_is_deidentified_validated_and_reported(source, tmp_path):
    src, uids, broken = source
    out = tmp_path / "out"
    result = run_cli("ingest", str(src), "--out", str(out), "--key", KEY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "11 slices of 3 patients ingested, 1 rejected" in result.stdout

    data = load_data_dir(out, decode=True)
    assert len(data.images) == 11
    assert data.patients() == sorted(pseudonym(p, KEY) for p in T_SCORES)
    phi_patient = pseudonym(PHI_ID, KEY)
    assert data.dxa[(phi_patient, "L2")] == pytest.approx(-1.6)
    assert data.diagnosis(phi_patient) == 2
    assert all(i["file_name"].startswith(f"dicom/{i['patient_id']}/") for i in data.images)

    report = read_json(out / "ingest_report.json")
    assert report["summary"] == {"accepted": 11, "rejected": 1, "patients": 3}
    assert len({e["file"] for e in report["accepted"]}) == 11
    [rejected] = report["rejected"]
    assert rejected["source"] == source_ref(broken, KEY)  # a keyed hash, never the path
    assert "truncated" in rejected["reason"]

    blobs = files_bytes(out)
    for text in PHI_TEXT + list(T_SCORES) + uids:
        hits = [name for name, blob in blobs.items() if text.encode() in blob]
        assert not hits, (text, hits)
    ds = pydicom.dcmread(out / data.images_of([phi_patient])[0]["file_name"])
    assert ds.PatientID == phi_patient and ds.PatientIdentityRemoved == "YES"
    assert ds.StudyDate != "20210304"


def test_only_bad_input_exits_2_and_writes_nothing(tmp_path):
    src = make_data_dir(tmp_path / "src", {"MRN-1": {"L1": 0.0}, "MRN-2": {"L2": -3.0}})
    coco = read_json(src / "annotations.json")
    (src / coco["images"][0]["file_name"]).write_bytes(b"not dicom at all")
    (src / coco["images"][1]["file_name"]).unlink()
    out = tmp_path / "out"
    result = run_cli("ingest", str(src), "--out", str(out), "--key", KEY, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: {src / coco['images'][0]['file_name']}: ")
    assert lines[1] == f"error: {src / coco['images'][1]['file_name']}: file not found"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no temporary folder left


def test_failed_ingest_leaves_an_earlier_output_untouched(source, tmp_path):
    src, _, _ = source
    out = tmp_path / "out"
    ingest(src, out, KEY)
    before = files_bytes(out)
    (src / "annotations.json").write_text("{broken")
    result = run_cli("ingest", str(src), "--out", str(out), "--key", KEY, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {src}/annotations.json: invalid JSON")
    assert files_bytes(out) == before


def write_csv(path: Path, rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient_id", "vertebra", "x1", "y1", "x2", "y2", "t_score"])
        writer.writerows(rows)


def test_csv_source_accepts_good_files_and_rejects_each_bad_one(tmp_path):
    folder = tmp_path / "scans"
    box = (40.0, 45.0, 62.0, 63.0)
    for name, patient in [
        ("a1", "MRN-5"),
        ("a2", "MRN-5"),
        ("b1", "MRN-6"),
        ("b2", "MRN-6"),
        ("c1", "MRN-7"),
        ("stray", "MRN-7"),
    ]:
        write_slice(folder / f"{name}.dcm", phantom_hu(96, 96, (51, 54, 11, 9), 150.0, 0), patient)
    write_csv(
        folder / "labels.csv",
        [
            ["a1.dcm", "MRN-5", "L1", *box, -1.3],
            ["a2.dcm", "MRN-5", "L2", *box, -2.7],
            ["b1.dcm", "MRN-6", "L1", *box, 0.2],
            ["b2.dcm", "MRN-6", "L3", 80.0, 45.0, 120.0, 63.0, 0.1],  # box leaves the image
            ["c1.dcm", "MRN-8", "L1", *box, -1.0],  # patient_id differs from the header
            ["missing.dcm", "MRN-7", "L1", *box, -1.0],
        ],
    )
    report = ingest(folder / "labels.csv", tmp_path / "out", KEY)
    names = ("a1", "a2", "b1", "b2", "c1", "missing", "stray")
    ref = {source_ref(f"{name}.dcm", KEY): name for name in names}  # the report's keyed refs
    assert sorted(ref[e["source"]] for e in report.accepted) == ["a1", "a2", "b1"]
    reasons = {ref[e["source"]]: e["reason"] for e in report.rejected}
    assert sorted(reasons) == ["b2", "c1", "missing", "stray"]
    assert "leaves the 96x96 image" in reasons["b2"]
    assert "differs from patient_id" in reasons["c1"]
    assert "MRN-7" not in reasons["c1"] and pseudonym("MRN-7", KEY) in reasons["c1"]
    assert reasons["missing"] == "file not found"
    assert reasons["stray"] == "no row in the CSV"

    data = load_data_dir(tmp_path / "out")
    patient = pseudonym("MRN-5", KEY)
    assert data.diagnosis(patient) == 3
    assert sorted(
        a["category_id"] for i in data.images_of([patient]) for a in data.annotations[i["id"]]
    ) == [2, 3]
    ann = data.annotations[data.images_of([pseudonym("MRN-6", KEY)])[0]["id"]][0]
    assert ann["bbox"] == [40.0, 45.0, 22.0, 18.0] and ann["t_score"] == 0.2


def test_csv_with_conflicting_t_scores_rejects_those_files(tmp_path):
    folder = tmp_path / "scans"
    for name in ("x", "y"):
        write_slice(folder / f"{name}.dcm", phantom_hu(64, 64, (32, 34, 8, 6), 150.0, 0), "MRN-5")
    write_csv(
        folder / "labels.csv",
        [
            ["x.dcm", "MRN-5", "L1", 20, 20, 40, 40, -1.3],
            ["y.dcm", "MRN-5", "L1", 20, 20, 40, 40, -2.9],
        ],
    )
    with pytest.raises(DataValidationError) as info:
        ingest(folder / "labels.csv", tmp_path / "out", KEY)
    assert [p.split(": ", 1)[0] for p in info.value.problems] == [
        str(folder / "x.dcm"),
        str(folder / "y.dcm"),
    ]
    assert all("conflicting t_score" in p for p in info.value.problems)


def test_key_is_required_and_must_be_long(tmp_path, monkeypatch):
    monkeypatch.delenv("DSNET_DEID_KEY", raising=False)
    with pytest.raises(InputError, match="needs a secret key"):
        resolve_key()
    with pytest.raises(InputError, match="at least 16 characters"):
        resolve_key("short")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert resolve_key(key_file=key_file) == KEY
    monkeypatch.setenv("DSNET_DEID_KEY", "from-the-environment-123")
    assert resolve_key() == "from-the-environment-123"

    src = make_data_dir(tmp_path / "src", {"MRN-1": {"L1": 0.0}})
    env = {k: v for k, v in __import__("os").environ.items() if k != "DSNET_DEID_KEY"}
    result = run_cli("ingest", str(src), "--out", str(tmp_path / "o"), cwd=tmp_path, env=env)
    assert result.returncode == 2 and "needs a secret key" in result.stderr
    assert not (tmp_path / "o").exists()


def test_output_must_not_overlap_the_source_or_an_unrelated_folder(source, tmp_path):
    src, _, _ = source
    with pytest.raises(InputError, match="outside the source"):
        ingest(src, src / "out", KEY)
    write_csv(src / "dicom" / "labels.csv", [])
    with pytest.raises(InputError, match="outside the source"):
        ingest(src / "dicom" / "labels.csv", src / "dicom" / "out", KEY)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(InputError, match="not an earlier ingest output"):
        ingest(src, precious, KEY)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_report_lists_rejected_records_and_unlisted_files(source, tmp_path):
    src, _, _ = source
    coco = read_json(src / "annotations.json")
    coco["annotations"][0]["category_id"] = 3  # T -1.2 is osteopenia: rejects image 1
    coco["annotations"].append(dict(coco["annotations"][1], id=99, image_id=404))
    (src / "annotations.json").write_text(json.dumps(coco))
    stray = src / "dicom" / PHI_ID / "extra.dcm"
    stray.write_bytes((src / coco["images"][0]["file_name"]).read_bytes())
    report = ingest(src, tmp_path / "out", KEY)
    reasons = {e["source"]: e["reason"] for e in report.rejected}
    assert "is not the WHO class 2" in reasons[source_ref(coco["images"][0]["file_name"], KEY)]
    assert reasons["annotations.json annotations[12]"] == "image_id 404 is not in images"
    assert reasons[source_ref(f"dicom/{PHI_ID}/extra.dcm", KEY)] == "not listed in annotations.json"
    assert len(report.accepted) == 10
