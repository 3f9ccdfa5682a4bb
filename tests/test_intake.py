"""dsnet.ingest.intake parts: inbox folders and prefixes, merging without duplicates, git/DVC
versioning, the data report, and the CLI's bad-input contract."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from intake_factory import KEY, copy_batch, data_repo, git, keys, renamed, repo_state
from pydicom.uid import generate_uid
from servers import DATA_BUCKET

from dsnet.core.errors import InputError
from dsnet.data.contract import load_data_dir
from dsnet.ingest.intake import intake
from dsnet.ingest.intake.data_report import change_against
from dsnet.ingest.intake.inbox import LocalInbox, open_inbox
from dsnet.ingest.intake.merge import Curated, load_curated, merge_batch
from dsnet.ingest.intake.versioning import DataRepo, VersioningError
from dsnet.ingest.sources import read_source
from dsnet.ingest.write import write_intake
from dsnet.io.deid import pseudonym
from dsnet.synth.generate import synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A delivery of 3 synthetic patients, one slice per vertebra (12 slices)."""
    root = tmp_path_factory.mktemp("synthetic")
    synthesize(root / "batch", 3, 21, slices_per_vertebra=1)
    return root / "batch"


def written_batch(src: Path, out: Path) -> tuple[Path, list[dict]]:
    """A source as ingest writes it: de-identified data dir + write_intake's entries."""
    found = read_source(src, KEY)
    return out, write_intake(found, out, KEY)


def curated_from(src: Path, tmp: Path) -> Curated:
    """A curated data dir holding exactly `src` (merged into nothing)."""
    batch, written = written_batch(src, tmp / "first-written")
    merge_batch(load_curated(tmp / "curated"), batch, written, tmp / "curated", "first")
    return load_curated(tmp / "curated")


def test_local_inbox_lists_waiting_batches_and_moves_them_with_their_report(tmp_path):
    for name in ("b2", "b1", "processed", "rejected", ".uploading", "_tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "b1" / "x.dcm").write_bytes(b"x")
    (tmp_path / "loose-file").write_text("not a batch")
    box = open_inbox(str(tmp_path))

    assert box.batches() == ["b1", "b2"]
    first = box.finish("b1", "processed", {"outcome": "processed"})
    (tmp_path / "b1").mkdir()
    second = box.finish("b1", "processed", {"outcome": "again"})

    assert (first, second) == (str(tmp_path / "processed/b1"), str(tmp_path / "processed/b1-2"))
    assert (tmp_path / "processed/b1/x.dcm").read_bytes() == b"x"
    assert json.loads((tmp_path / "processed/b1-2/intake_report.json").read_text()) == {
        "outcome": "again"
    }
    assert box.batches() == ["b2"]
    with pytest.raises(InputError, match="inbox folder not found"):
        open_inbox(str(tmp_path / "missing"))


def test_s3_inbox_fetches_a_batch_and_moves_every_object(s3_server, monkeypatch, tmp_path):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    s3 = s3_server.client()
    prefix = f"{tmp_path.name}/inbox"
    objects = {"b1/annotations.json": b"{}", "b1/dicom/p/1.dcm": b"one", "b1/../escape": b"!"}
    for key, body in objects.items():
        s3.put_object(Bucket=DATA_BUCKET, Key=f"{prefix}/{key}", Body=body)
    s3.put_object(Bucket=DATA_BUCKET, Key=f"{prefix}/processed/old/a", Body=b"a")
    box = open_inbox(f"s3://{DATA_BUCKET}/{prefix}/")

    assert box.batches() == ["b1"]
    with box.fetch("b1") as fetched:
        files = {p.relative_to(fetched.folder).as_posix(): p.read_bytes()
                 for p in fetched.folder.rglob("*") if p.is_file()}  # fmt: skip
        assert files == {"annotations.json": b"{}", "dicom/p/1.dcm": b"one"}
        assert fetched.unusable == [
            (f"{prefix}/b1/../escape", "object key leaves the batch folder")
        ]
    assert not fetched.folder.exists()
    where = box.finish("b1", "rejected", {"why": "test"})

    assert where == f"s3://{DATA_BUCKET}/{prefix}/rejected/b1/"
    assert keys(s3, DATA_BUCKET, f"{prefix}/b1/") == []
    moved = keys(s3, DATA_BUCKET, f"{prefix}/rejected/b1/")
    assert [k.removeprefix(f"{prefix}/rejected/b1/") for k in moved] == [
        "../escape", "annotations.json", "dicom/p/1.dcm", "intake_report.json",
    ]  # fmt: skip
    body = s3.get_object(Bucket=DATA_BUCKET, Key=f"{prefix}/rejected/b1/intake_report.json")
    assert json.loads(body["Body"].read()) == {"why": "test"}


def test_a_follow_up_of_a_known_patient_extends_that_patient(synthetic, tmp_path):
    curated = curated_from(synthetic, tmp_path)
    follow_up = renamed(synthetic, tmp_path / "follow-up", "SYN")  # same patients, same T
    coco = json.loads((follow_up / "annotations.json").read_text())
    patient = coco["images"][0]["patient_id"]
    for image in coco["images"]:  # new instances of the same vertebrae, other pixels
        path = follow_up / image["file_name"]
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PixelData = (ds.pixel_array + np.int16(3)).astype(np.int16).tobytes()
        ds.save_as(path)
    batch, written = written_batch(follow_up, tmp_path / "written")

    merged = merge_batch(curated, batch, written, tmp_path / "merged", "follow-up")

    assert (len(merged.added), merged.duplicates, merged.rejected) == (12, [], [])
    data = merged.data
    assert data.patients() == curated.data.patients()
    alias = pseudonym(patient, KEY)
    assert sorted(i["file_name"] for i in data.images_of([alias])) == [
        f"dicom/{alias}/{v}_{k}.dcm" for v in ("L1", "L2", "L3", "L4") for k in (0, 1)
    ]
    assert [i["id"] for i in data.images] == list(range(1, 25))
    assert data.images[:12] == curated.data.images  # earlier records untouched
    assert data.dxa == curated.data.dxa
    sources = list(csv.DictReader((tmp_path / "merged/sources.csv").read_text().splitlines()))
    assert sorted({r["batch"] for r in sources}) == ["first", "follow-up"]


def test_merge_skips_duplicates_and_rejects_conflicts(synthetic, tmp_path):
    curated = curated_from(synthetic, tmp_path)
    changed = renamed(synthetic, tmp_path / "changed", "SYN")
    coco = json.loads((changed / "annotations.json").read_text())
    first, second = coco["images"][0], coco["images"][4]  # two patients
    ds = pydicom.dcmread(changed / first["file_name"])  # same instance, other pixels
    ds.PixelData = (ds.pixel_array + np.int16(5)).astype(np.int16).tobytes()
    ds.save_as(changed / first["file_name"])
    rows = list(csv.reader((changed / "dxa.csv").read_text().splitlines()))
    for row in rows[1:]:  # the second patient's L4 T-score moves by 0.3
        if row[0] == second["patient_id"] and row[1] == "L4":
            row[2] = repr(float(row[2]) - 0.3)
            conflicting = (row[0], row[2])
    for ann in coco["annotations"]:
        image = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        if image["patient_id"] == conflicting[0] and ann["vertebra"] == "L4":
            ann["t_score"] = float(conflicting[1])
            ann["category_id"] = 1 if ann["t_score"] >= -1 else 2 if ann["t_score"] > -2.5 else 3
    (changed / "annotations.json").write_text(json.dumps(coco))
    with (changed / "dxa.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    batch, written = written_batch(changed, tmp_path / "written")

    merged = merge_batch(curated, batch, written, tmp_path / "merged", "changed")

    assert merged.added == []
    reasons = {r["source"]: r["reason"] for r in merged.rejected}
    t_scores = f"dxa.csv rows of {pseudonym(second['patient_id'], KEY)}"
    assert reasons.keys() == {first["file_name"], t_scores}
    assert "with other content" in reasons[first["file_name"]]
    assert "L4 differs from the curated dxa.csv" in reasons[t_scores]
    assert len(merged.duplicates) == 11
    assert len(merged.data.images) == 12


def test_a_csv_delivery_into_a_local_inbox_and_a_local_remote(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("DSNET_TRACKING", "off")
    batch = tmp_path / "inbox" / "csv-batch"
    coco = json.loads((synthetic / "annotations.json").read_text())
    rows = []
    for image, ann in zip(coco["images"], coco["annotations"], strict=True):
        src = synthetic / image["file_name"]
        dest = batch / "scans" / f"{image['patient_id']}_{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
        x, y, w, h = ann["bbox"]
        rows.append([dest.relative_to(batch).as_posix(), image["patient_id"], image["vertebra"],
                     x, y, x + w, y + h, ann["t_score"]])  # fmt: skip
    with (batch / "boxes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient_id", "vertebra", "x1", "y1", "x2", "y2", "t_score"])
        writer.writerows(rows)
    repo = data_repo(tmp_path / "repo", str(tmp_path / "remote"))

    result = intake(str(tmp_path / "inbox"), repo, key=KEY)

    [done] = result.batches
    assert (done.outcome, done.accepted, done.rejected, result.tag) == (
        "versioned",
        12,
        0,
        "data-v1",
    )
    data = load_data_dir(repo / "data/curated")
    assert data.patients() == sorted(pseudonym(p, KEY) for p in {r[1] for r in rows})
    assert (
        json.loads((tmp_path / "inbox/processed/csv-batch/intake_report.json").read_text())[
            "source_form"
        ]
        == "csv"
    )
    assert any((tmp_path / "remote").rglob("*.dir"))  # pushed to the local remote


def test_a_tag_that_exists_already_moves_no_ref(tmp_path):
    repo_dir = data_repo(tmp_path / "repo", str(tmp_path / "remote"))
    repo = DataRepo(repo_dir, "data/curated")
    git(repo_dir, "tag", "data-v1")
    (repo_dir / "notes.txt").write_text("v1\n")
    before = repo_state(repo_dir)

    with pytest.raises(VersioningError, match="update-ref failed"):
        repo.commit_and_tag([repo_dir / "notes.txt"], "notes", "data-v1")

    assert repo_state(repo_dir) == before
    assert repo.next_tag() == "data-v2"


def test_change_against_the_previous_report_flags_a_patient_that_changed_sides():
    def report(patients: dict[str, str], boxes: int, hu: float | None) -> dict:
        classes = {"normal": {"boxes": boxes, "patients": len(patients), "hu": {"mean": hu}}}
        return {
            "tag": "data-v1",
            "data_version": "abc.dir",
            "totals": {"slices": boxes, "boxes": boxes},
            "patients": {p: {"split": side} for p, side in patients.items()},
            "classes": classes,
        }

    old = report({"a": "test", "b": "train"}, 8, 150.0)
    new = report({"a": "train", "b": "train", "c": "test"}, 12, 147.5)

    change = change_against(new, old)

    assert change["patients_added"] == ["c"] and change["slices_added"] == 4
    assert change["classes"]["normal"] == {
        "boxes_added": 4, "patients_added": 1, "hu_mean_shift": -2.5,
    }  # fmt: skip
    assert (change["split_moved"], change["split_stable"]) == (["a"], False)
    assert change_against(new, None)["patients_added"] == ["a", "b", "c"]


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsnet", "intake", *args],
        capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "DSNET_TRACKING": "off", **(env or {})},
    )  # fmt: skip


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, synthetic):
    inbox = tmp_path / "inbox"
    copy_batch(synthetic, inbox, "b1")
    repo = data_repo(tmp_path / "repo", str(tmp_path / "remote"))
    (repo / "data/curated").mkdir(parents=True)
    (repo / "data/curated/stray.txt").write_text("x")
    cases = {
        ("--inbox", str(inbox), "--data-repo", str(repo)): "de-identification needs a secret key",
        ("--inbox", str(inbox), "--data-repo", str(repo), "--key", KEY): "is not committed",
    }
    for args, message in cases.items():
        done = run_cli(*args, env={"DSNET_DEID_KEY": ""})
        assert done.returncode == 2, (args, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and message in line, line
    assert (inbox / "b1").is_dir() and not (inbox / "processed").exists()


def test_unusable_inbox_or_data_repository_is_refused_before_anything_moves(tmp_path, synthetic):
    inbox = tmp_path / "inbox"
    copy_batch(synthetic, inbox, "b1")
    plain = tmp_path / "plain"
    plain.mkdir()
    repo = data_repo(tmp_path / "repo", str(tmp_path / "remote"))
    with pytest.raises(InputError, match="not a DVC repository"):
        intake(str(inbox), plain, key=KEY)
    with pytest.raises(InputError, match="inbox folder not found"):
        intake(str(tmp_path / "nope"), repo, key=KEY)
    with pytest.raises(InputError, match="must lie inside"):
        intake(str(inbox), repo, data_dir="../elsewhere", key=KEY)
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(InputError, match="HEAD is detached"):
        intake(str(inbox), repo, key=KEY)
    assert open_inbox(str(inbox)).batches() == ["b1"]


def test_an_unreadable_batch_is_rejected_whole_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("DSNET_TRACKING", "off")
    inbox = tmp_path / "inbox"
    (inbox / "b1").mkdir(parents=True)
    (inbox / "b1" / "annotations.json").write_text("{not json")
    repo = data_repo(tmp_path / "repo", str(tmp_path / "remote"))

    result = intake(str(inbox), repo, key=KEY)

    [done] = result.batches
    assert (done.outcome, result.data_version, result.tag) == ("rejected", None, None)
    report = json.loads((inbox / "rejected/b1/intake_report.json").read_text())
    [rejected] = report["rejected"]
    assert rejected["source"] == "annotations.json" and "invalid JSON" in rejected["reason"]
    assert (inbox / "rejected/b1/annotations.json").read_text() == "{not json"
    assert isinstance(open_inbox(str(inbox)), LocalInbox) and open_inbox(str(inbox)).batches() == []
