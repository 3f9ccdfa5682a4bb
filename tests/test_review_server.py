"""Review and promotion against a real `mlflow server` with authentication (basic-auth app).

One authenticated tracking server (artifacts in moto S3) serves the module: the admin
evaluates and registers two real (untrained) checkpoints; reviewers with READ/EDIT/MANAGE
on the registered model try to promote. Promotions go through the CLI in fresh processes,
each with its own credentials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
from review_pages import read_report
from servers import mlflow_tracking_server

from dsnet.evaluation.evaluate import evaluate
from dsnet.evaluation.review.evidence import review_paths
from dsnet.lifecycle.registry.events import history
from dsnet.lifecycle.registry.register import register

PERMISSIVE = {"model_name": "dsnet", "min_map50": 0.0, "min_recall": 0.0, "min_acc": 0.0,
              "beat_hu_baseline": False, "champion_margin": 1.0}  # fmt: skip


def _checkpoint(folder: Path, seed: int) -> Path:
    """An untrained checkpoint whose weights depend on `seed`."""
    import torch

    from dsnet.models.checkpoint import build_model, model_config, save_checkpoint

    torch.manual_seed(seed)
    config = model_config(
        {"backbone": "mobilenet_v3", "attention": "none", "attention_residual": True},
        num_classes=4,
        canvas_px=tiny.PREPROCESS["canvas_px"],
    )  # fmt: skip
    meta = {"epochs": 1, "git_sha": f"sha-{seed}", "params_hash": "p", "data_version": "d"}
    return save_checkpoint(folder / "model.pt", build_model(config), config, tiny.PREPROCESS, meta)


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_server, mlflow_db_template):
    """The authenticated server, a hold-out, and v1 registered by the admin."""
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import split_patients, write_split
    from dsnet.synth.generate import synthesize

    root = tmp_path_factory.mktemp("review-server")
    synthesize(root / "data", patients=6, seed=5, slices_per_vertebra=1)
    write_split(split_patients(load_data_dir(root / "data"), 0.5, 0), root / "split.json")
    params = {
        "data": {"dir": str(root / "data")},
        "register": PERMISSIVE,
        "evaluate": {"decision_threshold": 0.0, "device": "cpu", "fps_warmup": 0,
                     "review": {"bootstrap_draws": 20, "seed": 0, "gallery_max": 2}},
    }  # fmt: skip
    with (
        mlflow_tracking_server(
            root / "mlflow", s3_server, template=mlflow_db_template, auth=True
        ) as srv,
        pytest.MonkeyPatch.context() as mp,
    ):
        admin = srv.login(*srv.admin)
        for key, value in {**admin, "DSNET_TRACKING": "on", "OMP_NUM_THREADS": "1",
                           "DSNET_MODEL_CACHE": str(root / "cache")}.items():  # fmt: skip
            mp.setenv(key, value)
        mp.chdir(root)
        (root / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
        state = {"srv": srv, "root": root, "params": params, "admin": admin}
        state["v1"] = evaluate_and_register(root / "one", _checkpoint(root / "one", 0), state)
        assert state["v1"]["version"] == 1, state["v1"]
        state["users"] = {
            "ed": srv.add_user("ed", {"dsnet": "EDIT"}),
            "mona": srv.add_user("mona", {"dsnet": "MANAGE"}),
        }
        yield state


def evaluate_and_register(folder: Path, checkpoint: Path, state: dict) -> dict:
    root, params = state["root"], state["params"]
    metrics = folder / "metrics.json"
    evaluate(checkpoint, root / "data", root / "split.json", metrics, folder / "plots", params)
    return register(
        checkpoint, metrics, params, folder / "register.json",
        data_dir=root / "data", split_path=root / "split.json",
    )  # fmt: skip


def cli(state: dict, env: dict, *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return subprocess.run(
        [sys.executable, "-m", "dsnet", *args],
        capture_output=True, text=True, timeout=300, cwd=state["root"],
        env={**base, **env, "COLUMNS": "200", "DSNET_USER": "mallory"},
    )  # fmt: skip


def client(env: dict):
    import mlflow

    return mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])


def test_the_registered_version_carries_the_report_with_the_numbers_of_metrics_json(server):
    mlflow_client = client(server["admin"])
    version = mlflow_client.get_model_version("dsnet", "1")
    uri = version.tags["review_report"]
    assert uri == f"runs:/{version.run_id}/review/report.html"
    assert uri in version.description
    assert not [k for k, v in version.tags.items() if v.startswith(("{", "["))]  # no JSON tags
    assert version.tags["gate_summary"] == "3 passed, 0 failed, 2 skipped"
    local = mlflow_client.download_artifacts(
        version.run_id, "review/report.html", str(server["root"])
    )
    page = read_report(Path(local).read_text())
    metrics = json.loads((server["root"] / "one" / "metrics.json").read_text())
    for key in ("map50", "recall", "acc", "patient_acc", "hu_baseline_acc", "fps"):
        assert float(page.values[(key, "value")]) == metrics[key], key
    assert float(page.values[("gate.map50", "value")]) == metrics["map50"]
    assert "Gate passed" in page.text
    tables = mlflow_client.list_artifacts(version.run_id, "review")
    assert {"review/report.html", "review/evidence.json"} <= {a.path for a in tables}


def test_anonymous_promote_is_refused_in_one_line(server):
    anonymous = {k: v for k, v in server["admin"].items()
                 if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}  # fmt: skip
    refused = cli(server, anonymous, "registry", "promote", "--version", "1", "--reason", "x")
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "MLFLOW_TRACKING_USERNAME" in lines[0], refused.stderr
    assert "champion" not in client(server["admin"]).get_registered_model("dsnet").aliases


@pytest.mark.slow  # two CLI processes against the auth server (~50 s on 2 loaded cores)
def test_wrong_password_and_edit_permission_are_refused(server):
    wrong = {**server["users"]["mona"], "MLFLOW_TRACKING_PASSWORD": "not-her-password-123"}
    refused = cli(server, wrong, "registry", "promote", "--version", "1", "--reason", "x")
    assert refused.returncode == 2 and "rejected the credentials of user 'mona'" in refused.stderr
    edit = cli(server, server["users"]["ed"], "registry", "promote", "--version", "1",
               "--reason", "x")  # fmt: skip
    assert edit.returncode == 2
    assert "user 'ed' has EDIT" in edit.stderr and "needs MANAGE" in edit.stderr
    assert "champion" not in client(server["admin"]).get_registered_model("dsnet").aliases


def test_authenticated_promote_records_that_user_not_a_declared_name(server):
    promoted = cli(server, server["users"]["mona"], "registry", "promote", "--version", "1",
                   "--reason", "reviewed the report")  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    mlflow_client = client(server["admin"])
    champion = mlflow_client.get_model_version_by_alias("dsnet", "champion")
    assert champion.version == "1"
    assert champion.tags["promoted_by"] == "mona"  # DSNET_USER was "mallory"
    assert champion.tags["promoted_by_authenticated"] == "true"
    events = history(mlflow_client, "dsnet")  # one champion_event.<seq> tag per event
    assert (events[-1]["by"], events[-1]["authenticated"]) == ("mona", True)


@pytest.mark.slow  # evaluates and registers a second model
def test_a_later_model_is_compared_with_the_champion_on_the_same_holdout(server):
    receipt = evaluate_and_register(server["root"] / "two", _checkpoint(server["root"] / "two", 1),
                                    server)  # fmt: skip
    assert receipt["version"] == 2, receipt
    evidence = json.loads(review_paths(server["root"] / "two" / "metrics.json")[0].read_text())
    assert evidence["champion"]["version"] == "1"
    one = json.loads((server["root"] / "one" / "metrics.json").read_text())
    two = json.loads((server["root"] / "two" / "metrics.json").read_text())
    acc = evidence["intervals"]["acc"]
    assert (acc["value"], acc["reference"]) == (two["acc"], one["acc"])
    assert acc["diff"] == pytest.approx(two["acc"] - one["acc"])
    assert acc["diff_low"] <= acc["diff"] <= acc["diff_high"]

    out = server["root"] / "review-v2.html"
    fetched = cli(server, server["users"]["ed"], "registry", "review", "2", "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert "vs v1 (attached)" in fetched.stdout
    page = read_report(out.read_text())
    assert float(page.values[("acc", "difference")]) == acc["diff"]
    assert "DSNet review report: version 2" in page.text and "Champion: version 1" in page.text


@pytest.mark.slow  # evaluates v1 again in a fresh process
def test_review_against_another_version_rebuilds_the_comparison(server):
    out = server["root"] / "v1-vs-v2.html"
    rebuilt = cli(server, server["users"]["ed"], "registry", "review", "1", "--against", "2",
                  "--out", str(out), "--split", "split.json")  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "review of v1 vs v2 (rebuilt)" in rebuilt.stdout
    page = read_report(out.read_text())
    one = json.loads((server["root"] / "one" / "metrics.json").read_text())
    assert float(page.values[("acc", "value")]) == one["acc"]  # same model, same hold-out
    assert "Champion: version 2" in page.text and "Gate passed" in page.text
    missing = cli(server, server["users"]["ed"], "registry", "review", "7")
    assert missing.returncode == 2 and "no such model version" in missing.stderr


@pytest.mark.slow  # needs v2 from the slow test above
def test_rollback_records_the_authenticated_user(server):
    promoted = cli(server, server["users"]["mona"], "registry", "promote", "--version", "2",
                   "--reason", "better")  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    back = cli(server, server["users"]["mona"], "registry", "rollback", "--reason", "undo")
    assert back.returncode == 0, back.stderr
    tags = client(server["admin"]).get_model_version("dsnet", "2").tags
    assert tags["rolled_back_by"] == "mona"
