"""No planted identifier survives `dsnet ingest` or `dsnet intake`, in any output byte.

One patient's identifiers are planted at top level, in nested sequences ((0010,0026) >
PatientID, PersonTelephoneNumbers in an item, PatientName and a private element inside
an allow-listed ReferencedImageSequence item), in (0010,0033), ClinicalTrial*,
AcquisitionDeviceProcessingDescription, private blocks, and in file, folder, CSV and
batch names (with a lower-cased MRN and a dashed birth date). Then every byte is
searched, case-insensitively and in common reformattings: the ingest output and its
report, the command output, the intake data repository's work tree, every git object
(``git cat-file --batch-all-objects``: commits, tags, trees, blobs), ``git log -p
--all``, the DVC cache and remote, and the MLflow store and artifacts of the intake run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from intake_factory import GIT_IDENTITY, data_repo, git
from phi_factory import Plant, find_planted, write_planted_source

from dsnet.io.deid import pseudonym

KEY = "phi-test-key-0123456789abcdef"
PLANT = Plant(
    family="Doerrbecker",
    given="Johnathan",
    mrn="MRN-48151623",
    birth_date="19450317",
    accession="ACC778899",
    other_mrn="SRCGRP-7731902",
    alt_birth_date="ALTCAL-5705-12",
    trial_subject="TRIALSUBJ-90817",
    trial_site="Springfield Trial Site 44",
    phone="+1-555-867-5309",
    device_text="processed at bedside BEDSIDE-12B-XQ",
    private_text="PRIVATE-NOTE-ZQ771",
    institution="St Hubertus Klinikum",
    uid_root="1.2.826.0.1.3680043.8.498.4815162342",
)


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "dsnet", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) by path."""
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    env = {**os.environ, **GIT_IDENTITY, "DSNET_TRACKING": "on", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DSNET_DEID_KEY", None)
    return env


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, env) -> dict[str, bytes]:
    """`dsnet ingest` of a planted CSV source: every output byte, by where it lies."""
    tmp = tmp_path_factory.mktemp("phi-ingest")
    source = write_planted_source(tmp / "export" / "Doerrbecker_export", PLANT, "Doerrbecker.csv")
    original = b"".join(tree(source.parent).values()) + str(source).encode()
    assert set(PLANT.values().values()) <= set(find_planted(original, PLANT))  # can hit
    done = run("ingest", str(source), "--out", str(tmp / "out"), "--key", KEY, cwd=tmp, env=env)
    return {"ingest stdout/stderr": (done.stdout + done.stderr).encode(), **tree(tmp / "out")}


@pytest.fixture(scope="module")
def intaken(tmp_path_factory, env) -> dict[str, bytes]:
    """`dsnet intake` of a planted batch, tracked in MLflow: every output byte by place."""
    tmp = tmp_path_factory.mktemp("phi-intake")
    work = tmp / "work"
    work.mkdir()
    inbox = tmp / "inbox"
    write_planted_source(inbox / "Doerrbecker_Johnathan_19450317", PLANT, "Doerrbecker.csv")
    repo = data_repo(tmp / "repo", str(tmp / "remote"))
    params = str(Path(__file__).resolve().parents[1] / "params.yaml")
    args = ("--inbox", str(inbox), "--data-repo", str(repo), "--key", KEY, "--params", params)
    run("intake", *args, cwd=work, env=env)
    found = {**tree(repo), **tree(tmp / "remote"), **tree(work)}  # work: mlflow.db, artifacts
    objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo, capture_output=True
    )
    found["git objects"] = objects.stdout
    found["git log -p --all"] = git(repo, "log", "-p", "--all", "--format=fuller").encode()
    found["git tags"] = git(repo, "tag", "-n99").encode()
    return found


def planted_hits(outputs: dict[str, bytes]) -> dict[str, list[str]]:
    return {where: found for where, blob in outputs.items() if (found := find_planted(blob, PLANT))}


def test_ingest_output_is_deidentified_with_the_stated_profile(ingested):
    assert "out/ingest_report.json" in "\n".join(ingested)
    dicoms = [Path(p) for p in ingested if p.endswith(".dcm")]
    assert len(dicoms) == 4  # the planted patient's 2 good slices, the other patient's 2
    ds = pydicom.dcmread(next(p for p in dicoms if pseudonym(PLANT.mrn, KEY) in str(p)))
    assert ds.PatientID == pseudonym(PLANT.mrn, KEY)
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108"]
    assert [list(item.keys()) for item in ds.ReferencedImageSequence] == [
        [pydicom.tag.Tag("ReferencedSOPClassUID"), pydicom.tag.Tag("ReferencedSOPInstanceUID")]
    ]


def test_no_planted_identifier_survives_ingest(ingested):
    assert planted_hits(ingested) == {}


@pytest.mark.slow
def test_no_planted_identifier_survives_intake_git_dvc_or_mlflow(intaken):
    names = "\n".join(intaken)
    for expected in ("sources.csv", "mlflow.db", "mlartifacts", "batches/", ".dvc/cache"):
        assert expected in names, expected
    assert b"dsnet-data-report/1" in intaken["git objects"]  # the versioned data report
    assert b"dsnet-intake-report/1" in intaken["git objects"]  # and the batch report
    assert planted_hits(intaken) == {}
