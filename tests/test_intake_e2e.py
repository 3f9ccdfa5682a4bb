"""dsnet intake end to end: a moto S3 server is the inbox and the DVC remote, a git repo
in a temporary folder is the data repository; every step is the real library call."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from intake_factory import (
    KEY,
    data_repo,
    dvc_pull,
    git,
    keys,
    renamed,
    repo_state,
    set_remote,
    upload_batch,
)
from servers import DATA_BUCKET, free_port

from dsnet.data.contract import load_data_dir
from dsnet.ingest.intake import intake
from dsnet.ingest.intake.versioning import DataRepo, VersioningError
from dsnet.io.redact import batch_ref, source_ref
from dsnet.synth.generate import synthesize
from dsnet.tracking.lineage import data_version

SLICES = 12  # 3 patients x 4 vertebrae x 1 slice


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Two deliveries of 3 patients each: seed 11 (SYN-*) and seed 12 renamed to NEW-*."""
    root = tmp_path_factory.mktemp("batches")
    synthesize(root / "first", 3, 11, slices_per_vertebra=1)
    synthesize(root / "second-syn", 3, 12, slices_per_vertebra=1)
    renamed(root / "second-syn", root / "second", "NEW")
    return root


@pytest.fixture()
def world(tmp_path, s3_server, monkeypatch, batches):
    """A data repository with remote ``storage`` and an inbox, both on the moto server."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DSNET_TRACKING", "off")
    prefix = f"{tmp_path.name}"
    remote = f"s3://{DATA_BUCKET}/{prefix}/dvcstore"
    s3 = s3_server.client()
    return SimpleNamespace(
        repo=data_repo(tmp_path / "repo", remote, s3_server.url),
        inbox=f"s3://{DATA_BUCKET}/{prefix}/inbox",
        prefix=prefix,
        s3=s3,
        batches=batches,
        env={**os.environ, **s3_server.env, "DSNET_TRACKING": "off"},
        tmp=tmp_path,
    )


def deliver(world, batch_dir: Path, name: str) -> int:
    return upload_batch(world.s3, batch_dir, DATA_BUCKET, f"{world.prefix}/inbox/{name}")


def inbox_keys(world, sub: str) -> list[str]:
    return keys(world.s3, DATA_BUCKET, f"{world.prefix}/inbox/{sub}")


def run_cli(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsnet", "intake", "--inbox", world.inbox, "--data-repo",
         str(world.repo), "--key", KEY, *args],
        capture_output=True, text=True, env=world.env, cwd=Path(__file__).parents[1],
    )  # fmt: skip


def sop_uids(data) -> set[str]:
    return {str(pydicom.dcmread(data.image_path(i), stop_before_pixels=True).SOPInstanceUID)
            for i in data.images}  # fmt: skip


def test_two_batches_make_two_versions_and_a_repeated_batch_changes_nothing(world):
    curated = world.repo / "data" / "curated"
    deliver(world, world.batches / "first", "b1")
    first = intake(world.inbox, world.repo, key=KEY)

    [b1] = first.batches
    assert (b1.outcome, b1.accepted, b1.rejected, b1.duplicates) == ("versioned", SLICES, 0, 0)
    assert (first.tag, first.previous_version) == ("data-v1", None)
    assert first.data_version == data_version(curated) == b1.data_version
    assert inbox_keys(world, "b1/") == []
    moved = inbox_keys(world, "processed/b1/")
    assert f"{world.prefix}/inbox/processed/b1/intake_report.json" in moved
    assert sum(k.endswith(".dcm") for k in moved) == SLICES
    v1 = load_data_dir(curated)
    v1_files = {i["file_name"]: (curated / i["file_name"]).read_bytes() for i in v1.images}
    v1_split = json.loads((curated / "split.json").read_text())

    deliver(world, world.batches / "second", "b2")
    done = run_cli(world, "--summary", str(world.tmp / "summary.json"))
    assert done.returncode == 0, done.stderr
    second = json.loads((world.tmp / "summary.json").read_text())
    assert (second["tag"], second["previous_version"]) == ("data-v2", first.data_version)
    assert second["accepted"] == SLICES and second["new_versions"] == 1
    assert f"b2: versioned, {SLICES} accepted" in done.stdout
    assert second["data_version"] == data_version(curated) != first.data_version

    v2 = load_data_dir(curated)
    assert len(v2.images) == 2 * SLICES and len(v2.patients()) == 6
    assert set(v1.patients()) < set(v2.patients())
    assert sop_uids(v1) < sop_uids(v2)
    for name, content in v1_files.items():  # earlier slices kept, byte for byte, same ids
        assert (curated / name).read_bytes() == content
    assert [i["id"] for i in v2.images][:SLICES] == [i["id"] for i in v1.images]
    v2_split = json.loads((curated / "split.json").read_text())
    assert set(v1_split["test"]) <= set(v2_split["test"])
    assert set(v1_split["train"]) <= set(v2_split["train"])

    report = json.loads((world.repo / "reports/curated/data_report.json").read_text())
    assert report["change"]["previous"] == {"tag": "data-v1", "data_version": first.data_version}
    assert sorted(report["change"]["patients_added"]) == sorted(
        set(v2.patients()) - set(v1.patients())
    )
    assert report["change"]["slices_added"] == SLICES and report["change"]["split_stable"]
    assert report["totals"] == {"patients": 6, "slices": 2 * SLICES, "boxes": 2 * SLICES}
    assert git(world.repo, "tag", "--list").split() == ["data-v1", "data-v2"]
    assert git(world.repo, "status", "--porcelain") == ""
    assert first.data_version in git(world.repo, "show", "data-v1:data/curated.dvc")

    # Anyone can rebuild version 1 from git + the DVC remote.
    clone = world.tmp / "clone"
    git(world.tmp, "clone", "-q", "--branch", "data-v1", str(world.repo), str(clone))
    dvc_pull(clone)
    assert data_version(clone / "data" / "curated") == first.data_version

    head = git(world.repo, "rev-parse", "HEAD")
    deliver(world, world.batches / "first", "b1")
    again = intake(world.inbox, world.repo, key=KEY)
    [repeat] = again.batches
    assert (repeat.outcome, repeat.accepted, repeat.duplicates, repeat.tag) == (
        "unchanged", 0, SLICES, None,
    )  # fmt: skip
    assert again.data_version == again.previous_version == second["data_version"]
    assert again.tag == "data-v2" and again.new_versions == 0
    assert git(world.repo, "rev-parse", "HEAD") == head
    assert inbox_keys(world, "processed/b1-2/intake_report.json")


def test_a_batch_with_broken_files_lands_its_good_files_and_reports_the_rest(world):
    batch = world.tmp / "broken"
    renamed(world.batches / "first", batch, "BRK")
    coco = json.loads((batch / "annotations.json").read_text())
    truncated, garbage, mislabelled = (batch / coco["images"][i]["file_name"] for i in (0, 5, 9))
    truncated.write_bytes(truncated.read_bytes()[:-4000])
    garbage.write_bytes(b"not a DICOM file at all")
    coco["annotations"][9]["category_id"] = 3 if coco["annotations"][9]["category_id"] != 3 else 1
    (batch / "annotations.json").write_text(json.dumps(coco))
    (batch / "dicom/BRK-0001/stray.dcm").write_bytes(b"unlisted")
    sent = deliver(world, batch, "b1")
    deliver(world, world.tmp / "broken" / "dicom" / "BRK-0002", "only-junk")

    result = intake(world.inbox, world.repo, key=KEY)

    b1, junk = result.batches
    assert (b1.outcome, b1.accepted, b1.rejected) == ("versioned", SLICES - 3, 4)
    assert (junk.outcome, junk.accepted, junk.tag) == ("rejected", 0, None)
    assert result.tag == "data-v1"
    assert len(load_data_dir(world.repo / "data/curated").images) == SLICES - 3
    moved = inbox_keys(world, "processed/b1/")
    assert len(moved) == sent + 1  # every delivered file kept, plus the report
    body = world.s3.get_object(
        Bucket=DATA_BUCKET, Key=f"{world.prefix}/inbox/processed/b1/intake_report.json"
    )
    report = json.loads(body["Body"].read())
    reasons = {r["source"]: r["reason"] for r in report["rejected"]}
    hidden = lambda path: source_ref(path.relative_to(batch), KEY)  # noqa: E731 - keyed refs
    assert "truncated" in reasons[hidden(truncated)]
    assert "DICOM" in reasons[hidden(garbage)]
    assert "WHO class" in reasons[hidden(mislabelled)]
    assert "not listed" in reasons[hidden(batch / "dicom/BRK-0001/stray.dcm")]
    assert report["summary"] == {"accepted": SLICES - 3, "duplicates": 0, "rejected": 4}
    assert not any("BRK-000" in json.dumps(r) for r in report["accepted"])  # pseudonyms only
    assert inbox_keys(world, "rejected/only-junk/intake_report.json")
    assert inbox_keys(world, "only-junk/") == []


def test_a_failed_push_leaves_everything_as_it_was_and_a_retry_succeeds(world):
    deliver(world, world.batches / "first", "b1")
    first = intake(world.inbox, world.repo, key=KEY)
    before = repo_state(world.repo)
    remote_before = keys(world.s3, DATA_BUCKET, f"{world.prefix}/dvcstore")
    remote = f"s3://{DATA_BUCKET}/{world.prefix}/dvcstore"
    set_remote(world.repo, remote, f"http://127.0.0.1:{free_port()}", level="local")
    deliver(world, world.batches / "second", "b2")

    world.env["AWS_MAX_ATTEMPTS"] = "1"  # fail fast instead of retrying a dead endpoint
    failed = run_cli(world)

    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("error: ") and "dvc push to remote (default) failed" in line
    assert repo_state(world.repo) == before
    assert keys(world.s3, DATA_BUCKET, f"{world.prefix}/dvcstore") == remote_before
    assert len(inbox_keys(world, "b2/")) > SLICES and inbox_keys(world, "processed/b2/") == []
    assert not (world.repo / ".dvc/tmp/intake/previous").exists()

    (world.repo / ".dvc/config.local").unlink()
    retry = intake(world.inbox, world.repo, key=KEY)
    [b2] = retry.batches
    assert (b2.outcome, b2.accepted, retry.tag) == ("versioned", SLICES, "data-v2")
    assert retry.previous_version == first.data_version
    assert len(load_data_dir(world.repo / "data/curated").images) == 2 * SLICES


def test_a_run_killed_mid_push_is_rolled_back_by_the_next_run(world):
    deliver(world, world.batches / "first", "b1")
    first = intake(world.inbox, world.repo, key=KEY)
    before = repo_state(world.repo)
    remote = f"s3://{DATA_BUCKET}/{world.prefix}/dvcstore"
    marker = world.repo / ".dvc/tmp/intake/swap.json"
    with socket.socket() as black_hole:  # accepts connections, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        set_remote(world.repo, remote, f"http://127.0.0.1:{black_hole.getsockname()[1]}", "local")
        deliver(world, world.batches / "second", "b2")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dsnet", "intake", "--inbox", world.inbox,
             "--data-repo", str(world.repo), "--key", KEY],
            env=world.env, cwd=Path(__file__).parents[1],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            new_dvc = (world.repo / "data/curated.dvc").read_text()
            if marker.exists() and first.data_version not in new_dvc:
                break  # swapped in and dvc-added: now it hangs in dvc push
            time.sleep(0.05)
        time.sleep(0.5)
        proc.kill()
        proc.wait()
    assert marker.exists() and git(world.repo, "rev-parse", "HEAD") == before["head"]
    assert repo_state(world.repo) != before  # half-way: new data dir, modified .dvc file

    (world.repo / ".dvc/config.local").unlink()
    retry = intake(world.inbox, world.repo, key=KEY)

    assert (retry.previous_version, retry.tag, retry.new_versions) == (
        first.data_version, "data-v2", 1,
    )  # fmt: skip
    assert not marker.exists() and not (world.repo / ".dvc/tmp/intake/previous").exists()
    assert git(world.repo, "status", "--porcelain") == ""
    assert len(load_data_dir(world.repo / "data/curated").images) == 2 * SLICES


def test_the_intake_run_is_logged_to_mlflow(world, local_mlflow):
    import mlflow

    from dsnet.tracking.runs import tracking_uri

    deliver(world, world.batches / "first", "b1")
    result = intake(world.inbox, world.repo, key=KEY)

    client = mlflow.MlflowClient(tracking_uri())
    run = client.get_run(result.run_id)
    assert run.data.tags["dsnet.step"] == "intake"
    assert run.data.tags["data_version"] == result.data_version
    assert run.data.tags["data_tag"] == "data-v1"
    assert run.data.metrics["accepted"] == SLICES
    assert run.data.metrics["data.slices"] == SLICES
    assert run.data.params["intake.inbox"] == world.inbox
    report = json.loads((world.repo / "reports/curated/data_report.json").read_text())
    for name, c in report["classes"].items():
        if c["hu"]["mean"] is not None:
            assert run.data.metrics[f"data.{name}.hu_mean"] == pytest.approx(c["hu"]["mean"])
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "data_report")}
    assert "data_report/classes.csv" in artifacts and "data_report/hu.csv" in artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "batches")] == [
        f"batches/{batch_ref('b1', KEY)}.json"
    ]


def test_a_failed_git_push_moves_the_local_refs_back(world):
    upstream = world.tmp / "upstream.git"
    git(world.tmp, "init", "-q", "--bare", "-b", "main", str(upstream))
    git(world.repo, "remote", "add", "origin", str(upstream))
    git(world.repo, "push", "-q", "origin", "main")
    deliver(world, world.batches / "first", "b1")
    first = intake(world.inbox, world.repo, key=KEY, git_remote="origin")
    assert git(upstream, "tag", "--list") == "data-v1"
    assert git(upstream, "rev-parse", "main") == git(world.repo, "rev-parse", "HEAD")

    other = world.tmp / "other"  # someone else moves upstream on
    git(world.tmp, "clone", "-q", str(upstream), str(other))
    (other / "NOTES.md").write_text("moved on\n")
    git(other, "add", "NOTES.md")
    git(other, "commit", "-q", "-m", "notes")
    git(other, "push", "-q", "origin", "main")
    before = repo_state(world.repo)
    deliver(world, world.batches / "second", "b2")

    with pytest.raises(VersioningError, match="git push failed"):
        intake(world.inbox, world.repo, key=KEY, git_remote="origin")

    assert repo_state(world.repo) == before
    assert git(upstream, "tag", "--list") == "data-v1"
    assert inbox_keys(world, "b2/")
    git(world.repo, "pull", "-q", "--no-rebase", "origin", "main")
    repo = DataRepo(world.repo, "data/curated")  # HEAD is past data-v1, same data version
    assert repo.head() != git(world.repo, "rev-list", "-n1", "data-v1")
    assert repo.version_tag(repo.head_version()) == "data-v1"
    retry = intake(world.inbox, world.repo, key=KEY, git_remote="origin")
    assert retry.tag == "data-v2" and retry.previous_version == first.data_version
    assert git(upstream, "tag", "--list").split() == ["data-v1", "data-v2"]


def test_the_version_data_step_clones_the_data_repo_pushes_and_returns_the_commit(
    world, monkeypatch
):
    from dsnet.platform.version_data import intake_markdown, version_data_repo

    monkeypatch.setenv("DSNET_DEID_KEY", KEY)  # as the pipeline passes it (from a Secret)

    remote = f"s3://{DATA_BUCKET}/{world.prefix}/dvcstore"
    seed = data_repo(world.tmp / "seed", remote)  # no endpoint: the step must set it
    upstream = world.tmp / "upstream.git"
    git(world.tmp, "clone", "-q", "--bare", str(seed), str(upstream))
    deliver(world, world.batches / "first", "b1")

    result, commit = version_data_repo(
        world.inbox, str(upstream), "main", "data/curated", endpoint=world.s3.meta.endpoint_url
    )

    assert (result.new_versions, result.tag) == (1, "data-v1")
    assert commit == git(upstream, "rev-parse", "main") and git(upstream, "tag") == "data-v1"
    assert "# Data intake: 1 new data version(s)" in intake_markdown(result, commit)

    again, same = version_data_repo(
        world.inbox, str(upstream), "main", "data/curated", endpoint=world.s3.meta.endpoint_url
    )
    assert (again.new_versions, again.data_version, same) == (0, result.data_version, commit)
    assert "inbox empty: the data is unchanged" in intake_markdown(again, same)


@pytest.mark.slow
def test_the_pipeline_versions_the_inbox_first_and_trains_on_that_version(
    world, mlflow_server, monkeypatch
):
    """kfp.local: version_data -> fetch_data(commit) -> ... -> register, tagged with the
    new data version; a second run with an empty inbox ends at check_data_changed."""
    import mlflow
    import yaml

    from dsnet.lifecycle.registry.promotion import promote
    from dsnet.platform.local import run_local

    root = Path(__file__).resolve().parents[1]
    for name, value in mlflow_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DSNET_TRACKING", "on")
    monkeypatch.setenv("DSNET_DEID_KEY", KEY)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"intake-{world.prefix}")
    monkeypatch.chdir(world.tmp)
    remote = f"s3://{DATA_BUCKET}/{world.prefix}/dvcstore"
    upstream = world.tmp / "upstream.git"
    git(
        world.tmp,
        "clone",
        "-q",
        "--bare",
        str(data_repo(world.tmp / "seed", remote)),
        str(upstream),
    )
    deliver(world, world.batches / "first", "b1")
    deliver(world, world.batches / "second", "b2")
    model_name = f"dsnet-intake-{world.prefix}"
    profile = {
        "preprocess": {"spacing_mm": 6.0, "canvas_px": 64},
        "model": {"backbone": "mobilenet_v3", "attention": "ds"},
        "train": {"device": "cpu", "batch_size": 2, "workers": 0, "threads": 1,
                  "warmup_iters": 2, "lr_milestones": [1], "epochs": 1},
        "evaluate": {"device": "cpu", "fps_warmup": 0},
        "register": {"model_name": model_name, "beat_hu_baseline": False},
    }  # fmt: skip
    arguments = {
        "data_repo": str(upstream),
        "data_revision": "main",
        "data_path": "data/curated",
        "intake_inbox": world.inbox,
        "params_file": str(root / "params.yaml"),
        "params_profile": yaml.safe_dump(profile),
        "min_map50": 0.0,
        "min_recall": 0.0,
        "min_acc": 0.0,
        "mlflow_tracking_uri": mlflow_server.url,
        "s3_endpoint_url": world.s3.meta.endpoint_url,
    }
    package = root / "pipeline" / "dsnet_pipeline.yaml"

    first = run_local(package, arguments, world.tmp / "kfp")

    versioned = first.outputs("version-data")["parameters"]
    assert versioned["new_versions"] == 2 and versioned["revision"] == git(
        upstream, "rev-parse", "main"
    )
    fetched = first.outputs("fetch-data")["artifacts"]["data"]
    assert fetched["data_version"] == versioned["data_version"]
    assert fetched["images"] == 2 * SLICES
    receipt = first.outputs("register")["artifacts"]["receipt"]
    assert receipt["version"] >= 1
    client = mlflow.MlflowClient(mlflow_server.url)
    version = client.get_model_version(model_name, str(receipt["version"]))
    assert version.tags["data_version"] == versioned["data_version"]

    promote(model_name, int(receipt["version"]), "intake test", force=True)
    second = run_local(package, arguments, world.tmp / "kfp")

    assert second.outputs("version-data")["parameters"]["new_versions"] == 0
    decision = second.outputs("check-data-changed")["artifacts"]["decision"]
    assert decision["reason"].startswith("data unchanged") and not decision["retrain"]
    assert second.outputs("train") is None and second.outputs("register") is None
