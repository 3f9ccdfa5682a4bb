"""dsnet.lifecycle.registry: gate, registration, review, promotion, rollback on a real MLflow store.

Models are real dsnet checkpoints (a small MobileNetV3 detector, untrained); the metrics
files are written by the tests, so that the gate sees chosen values.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import registry_race
from servers import free_port

from dsnet.core.errors import InputError
from dsnet.core.fsutil import file_sha256
from dsnet.lifecycle.registry.client import CHALLENGER, CHAMPION
from dsnet.lifecycle.registry.events import CLAIM_PREFIX, champion_stack, history
from dsnet.lifecycle.registry.gate import (
    GateFailedError,
    criterion,
    gate,
    gate_passed,
    registration_record,
)
from dsnet.lifecycle.registry.promotion import RefusedError, promote, rollback
from dsnet.lifecycle.registry.queries import compare, list_versions
from dsnet.lifecycle.registry.register import register

SETTINGS = {
    "model_name": "dsnet",
    "min_map50": 0.5,
    "min_recall": 0.8,
    "min_acc": 0.5,
    "beat_hu_baseline": True,
    "champion_margin": 0.02,
}
# map50, recall, acc of the versions of the shared registry state (v1..v4)
VERSION_METRICS = [(0.90, 0.95, 0.85), (0.80, 0.90, 0.80), (0.91, 0.96, 0.86), (0.92, 0.96, 0.87)]


def metrics_doc(map50: float, recall: float, acc: float, hu: float = 0.6) -> dict:
    return {
        "map50": map50,
        "recall": recall,
        "acc": acc,
        "hu_baseline_acc": hu,
        "fps": 12.5,
        "patient_acc": acc,
        "ap_per_class": {"normal": map50, "osteopenia": None, "osteoporosis": map50},
        "confusion_matrix": {
            "rows": ["normal", "osteopenia", "osteoporosis"],
            "columns": ["normal", "osteopenia", "osteoporosis", "missed"],
            "matrix": [[5, 1, 0, 0], [0, 4, 1, 1], [0, 0, 6, 0]],
        },
    }


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Five distinct real checkpoints (same small detector, different meta)."""
    import torch

    from dsnet.models.checkpoint import build_model, model_config, save_checkpoint

    torch.set_num_threads(1)  # shared 2-core machine: one thread per process
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoints")
    model_params = {
        "backbone": "mobilenet_v3",
        "attention": "none",
        "attention_residual": True,
    }
    config = model_config(model_params, num_classes=4, canvas_px=128)
    model = build_model(config)
    preprocess = {
        "spacing_mm": 1.5,
        "canvas_px": 128,
        "windows": [[-200, 1200], [0, 400], [-160, 240]],
    }
    paths = []
    for index in range(5):
        path = folder / f"model{index}" / "model.pt"
        save_checkpoint(path, model, config, preprocess, {"variant": index})
        paths.append(path)
    return paths


def hold_out(root: Path, test=("P2",)) -> tuple[Path, Path]:
    """A data dir (content only matters for its DVC hash) and a split naming test patients."""
    data = root / "data" / "synthetic"
    data.mkdir(parents=True, exist_ok=True)
    (data / "annotations.json").write_text('{"images": []}')
    split = root / "data" / "split.json"
    doc = {"train": ["P1"], "test": list(test), "seed": 0, "test_fraction": 0.2}
    split.write_text(json.dumps(doc))
    return data, split


def make_params(data: Path, **register_overrides) -> dict:
    return {
        "data": {"dir": str(data)},
        "register": {**SETTINGS, **register_overrides},
        "evaluate": {"decision_threshold": 0.5, "device": "cpu"},
    }


def write_metrics(path: Path, *values: float) -> Path:
    path.write_text(json.dumps(metrics_doc(*values)))
    return path


def do_register(root: Path, checkpoint: Path, values, **overrides) -> dict:
    data, split = root / "data" / "synthetic", root / "data" / "split.json"
    metrics = write_metrics(root / f"metrics-{checkpoint.parent.name}.json", *values)
    return register(
        checkpoint,
        metrics,
        make_params(data, **overrides),
        root / "register.json",
        data_dir=data,
        split_path=split,
    )


def _client():
    import mlflow

    from dsnet.tracking.runs import tracking_uri

    return mlflow.MlflowClient(tracking_uri())


@pytest.fixture(scope="module")
def four_versions(tmp_path_factory, checkpoints, mlflow_db_template):
    """A store with versions 1-4 of `dsnet` (all passed the gate, no champion yet)."""
    root = tmp_path_factory.mktemp("registry-state")
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    hold_out(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("DSNET_TRACKING", "on")
        for checkpoint, values in zip(checkpoints, VERSION_METRICS, strict=False):
            receipt = do_register(root, checkpoint, values)
            assert receipt["registered"], receipt
    return root


@pytest.fixture()
def registry_copy(four_versions, tmp_path, monkeypatch):
    """A private copy of the four-version store (artifacts shared read-only)."""
    shutil.copyfile(four_versions / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(four_versions / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DSNET_TRACKING", "on")
    monkeypatch.setenv("DSNET_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("DSNET_USER", "reviewer")
    return tmp_path


# ----------------------------------------------------------------------------- gate


def test_gate_lists_every_criterion_with_value_threshold_and_outcome():
    criteria = gate(metrics_doc(0.45, 0.9, 0.7, hu=0.7), SETTINGS, None)
    by_name = {c["name"]: c for c in criteria}
    assert by_name["map50"] == {
        "name": "map50",
        "value": 0.45,
        "op": ">=",
        "threshold": 0.5,
        "status": "fail",
        "note": "",
    }
    assert by_name["recall"]["status"] == "pass"
    assert by_name["acc"]["status"] == "pass"
    # equal to the HU baseline is not beating it
    assert by_name["beats_hu_baseline"]["status"] == "fail"
    assert by_name["beats_hu_baseline"]["threshold"] == 0.7
    assert by_name["vs_champion_map50"]["status"] == "skipped"
    assert not gate_passed(criteria)


def test_gate_compares_with_the_champion_within_the_margin():
    champion = {"version": "3", "metrics": {"map50": 0.80, "acc": 0.70}, "note": "same hold-out"}
    ok = gate(metrics_doc(0.785, 0.9, 0.69), SETTINGS, champion)
    assert gate_passed(ok)
    worse = {c["name"]: c for c in gate(metrics_doc(0.77, 0.9, 0.69), SETTINGS, champion)}
    assert worse["vs_champion_map50"]["status"] == "fail"
    assert worse["vs_champion_map50"]["threshold"] == pytest.approx(0.78)
    assert worse["vs_champion_map50"]["note"].startswith("champion v3 map50 0.8000")
    assert worse["vs_champion_acc"]["status"] == "pass"
    unknown = gate(metrics_doc(0.9, 0.9, 0.9), SETTINGS, {"version": "3", "note": "why"})
    assert {c["status"] for c in unknown if c["name"].startswith("vs_")} == {"skipped"}


def test_gate_without_hu_requirement_and_unknown_operator():
    names = [c["name"] for c in gate(metrics_doc(1, 1, 1), {**SETTINGS, "beat_hu_baseline": False})]
    assert "beats_hu_baseline" not in names
    with pytest.raises(ValueError):
        criterion("x", 1.0, 1.0, "<")


# ----------------------------------------------------------------------- register


def test_register_creates_a_tagged_challenger_once(local_mlflow, checkpoints):
    import mlflow

    hold_out(local_mlflow)
    receipt = do_register(local_mlflow, checkpoints[0], (0.9, 0.95, 0.85))
    assert receipt["gate"] == "passed"
    assert receipt["registered"] and receipt["version"] == 1
    assert receipt["aliases"] == [CHALLENGER]
    assert json.loads((local_mlflow / "register.json").read_text()) == receipt

    client = _client()
    version = client.get_model_version("dsnet", "1")
    tags = version.tags
    assert tags["gate"] == "passed"
    assert (tags["map50"], tags["recall"], tags["acc"]) == ("0.9", "0.95", "0.85")
    assert (tags["backbone"], tags["attention"]) == ("mobilenet_v3", "none")
    assert tags["checkpoint_sha256"] == file_sha256(checkpoints[0])
    assert tags["data_version"].endswith(".dir") and len(tags["params_hash"]) == 16
    assert tags["git_sha"]
    assert not [k for k, v in tags.items() if v.startswith(("{", "["))]  # scalars only
    assert tags["gate_summary"] == "4 passed, 0 failed, 2 skipped"
    record = registration_record(client, version)
    assert record["confusion_matrix"]["matrix"][1] == [0, 4, 1, 1]
    assert [c["name"] for c in record["criteria"]][:3] == ["map50", "recall", "acc"]
    assert tags["ap.normal"] == "0.9" and "ap.osteopenia" not in tags  # no such case held out
    assert "| map50 | 0.9000 | >= 0.5000 | pass |" in version.description
    assert version.run_id == receipt["run_id"]

    again = do_register(local_mlflow, checkpoints[0], (0.9, 0.95, 0.85))
    assert again["version"] == 1 and "already registered" in again["reason"]
    assert len(client.search_model_versions("name = 'dsnet'")) == 1

    # the registered model gives back the very checkpoint that was registered
    from dsnet.inference.load import checkpoint_from_uri

    local = checkpoint_from_uri("models:/dsnet@challenger")
    assert file_sha256(local) == file_sha256(checkpoints[0])
    assert mlflow.pyfunc.load_model("models:/dsnet/1").metadata.signature is not None


def test_failing_gate_registers_nothing_and_explains(local_mlflow, checkpoints):
    hold_out(local_mlflow)
    receipt = do_register(
        local_mlflow,
        checkpoints[0],
        (0.3, 0.95, 0.55),
    )
    assert receipt["gate"] == "failed" and not receipt["registered"]
    failed = [c["name"] for c in receipt["criteria"] if c["status"] == "fail"]
    assert failed == ["map50", "beats_hu_baseline"]
    assert receipt["reason"].startswith("gate failed: map50 0.3000 not >= 0.5000")
    assert _client().search_registered_models() == []

    with pytest.raises(GateFailedError, match="gate failed"):
        register(
            checkpoints[0],
            local_mlflow / "metrics-model0.json",
            make_params(local_mlflow / "data" / "synthetic"),
            local_mlflow / "strict.json",
            strict=True,
            data_dir=local_mlflow / "data" / "synthetic",
            split_path=local_mlflow / "data" / "split.json",
        )
    assert json.loads((local_mlflow / "strict.json").read_text())["gate"] == "failed"
    assert _client().search_registered_models() == []


def test_candidate_worse_than_champion_on_same_holdout_is_refused(registry_copy, checkpoints):
    promote("dsnet", 1, "first reviewed model")
    receipt = do_register(registry_copy, checkpoints[4], (0.85, 0.95, 0.84))
    by_name = {c["name"]: c for c in receipt["criteria"]}
    assert by_name["vs_champion_map50"]["status"] == "fail"
    assert by_name["vs_champion_map50"]["threshold"] == pytest.approx(0.88)
    assert "same hold-out" in by_name["vs_champion_map50"]["note"]
    assert len(_client().search_model_versions("name = 'dsnet'")) == 4


def test_champion_on_another_holdout_is_reevaluated_or_explained(registry_copy, checkpoints):
    promote("dsnet", 1, "first reviewed model")
    hold_out(registry_copy, test=("P3",))  # a new hold-out: champion metrics do not apply
    receipt = do_register(registry_copy, checkpoints[4], (0.95, 0.97, 0.9))
    champion_rows = [c for c in receipt["criteria"] if c["name"].startswith("vs_champion_")]
    # the fake data dir holds no images, so re-evaluation fails and says so
    assert {c["status"] for c in champion_rows} == {"skipped"}
    assert "re-evaluation failed" in champion_rows[0]["note"]
    assert receipt["registered"] and receipt["version"] == 5


def test_champion_on_another_holdout_is_reevaluated_on_the_current_split(
    registry_copy, checkpoints
):
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import split_patients, write_split
    from dsnet.synth.generate import synthesize

    promote("dsnet", 1, "first reviewed model")
    data = registry_copy / "data" / "synthetic"
    shutil.rmtree(data)  # the stand-in of `hold_out`: synth would refuse to replace it
    synthesize(data, patients=4, seed=3, slices_per_vertebra=1)
    split = split_patients(load_data_dir(data), test_fraction=0.5, seed=0)
    write_split(split, registry_copy / "data" / "split.json")
    receipt = do_register(registry_copy, checkpoints[4], (0.95, 0.97, 0.9))
    by_name = {c["name"]: c for c in receipt["criteria"]}
    note = by_name["vs_champion_map50"]["note"]
    assert "champion v1 re-evaluated on the current hold-out" in note
    # v1 is an untrained detector: on real slices it scores far below its registered 0.90
    reevaluated = float(note.split(" map50 ")[1].split()[0])
    assert reevaluated < 0.5
    assert by_name["vs_champion_map50"]["threshold"] == pytest.approx(reevaluated - 0.02, abs=1e-4)
    assert by_name["vs_champion_map50"]["status"] == "pass"
    assert receipt["registered"] and receipt["version"] == 5


RACE_REGISTER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from test_registry import do_register
while time.time() < float(sys.argv[3]):
    time.sleep(0.005)
receipt = do_register(Path("."), Path(sys.argv[1]), (0.9, 0.95, 0.85), model_name="dsnet")
print(receipt["version"])
"""


@pytest.mark.slow
def test_racing_registrations_create_one_version_per_checkpoint(local_mlflow, checkpoints):
    hold_out(local_mlflow)
    start = f"{time.time() + 8:.3f}"
    tests_dir = str(Path(__file__).parent)
    chosen = [checkpoints[0], checkpoints[0], checkpoints[1]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_REGISTER, str(path), str(i), start, tests_dir],
            cwd=local_mlflow,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, path in enumerate(chosen)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    reported = [int(out.strip().splitlines()[-1]) for out, _ in outputs]
    client = _client()
    versions = client.search_model_versions("name = 'dsnet'")
    shas = sorted(v.tags["checkpoint_sha256"] for v in versions)
    assert shas == sorted({file_sha256(checkpoints[0]), file_sha256(checkpoints[1])})
    assert reported[0] == reported[1] != reported[2]  # same checkpoint, same version
    newest = max(int(v.version) for v in versions)
    assert str(client.get_registered_model("dsnet").aliases[CHALLENGER]) == str(newest)
    assert [m.name for m in client.search_registered_models()] == ["dsnet"]  # no lock model


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "dsnet", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def test_cli_register_strict_and_unreachable_server_exit_2(local_mlflow, checkpoints, params):
    data, split = hold_out(local_mlflow)
    write_metrics(local_mlflow / "metrics.json", 0.3, 0.5, 0.4)
    params["data"]["dir"] = str(data)
    (local_mlflow / "params.yaml").write_text(json.dumps(params))
    args = ["register", "--model", str(checkpoints[0]), "--metrics", "metrics.json"]
    args += ["--out", "register.json", "--split", str(split)]
    strict = _cli(*args, "--strict", cwd=local_mlflow)
    assert strict.returncode == 2
    assert strict.stderr.startswith("error: register.json: gate failed: map50 0.3000")
    assert len(strict.stderr.strip().splitlines()) == 1

    down = f"http://127.0.0.1:{free_port()}"
    (local_mlflow / "register.json").unlink()
    unreachable = _cli(*args, env={"MLFLOW_TRACKING_URI": down}, cwd=local_mlflow, timeout=60)
    assert unreachable.returncode == 2
    assert unreachable.stderr.strip() == (
        f"error: MLFLOW_TRACKING_URI: tracking server {down} unreachable "
        "([Errno 111] Connection refused)"
    )
    assert not (local_mlflow / "register.json").exists()  # nothing half-written


# ----------------------------------------------------------- review and promotion


def test_list_and_compare_show_metrics_aliases_and_matrices(registry_copy):
    rows = list_versions("dsnet")
    assert [r["version"] for r in rows] == [4, 3, 2, 1]
    assert rows[0]["aliases"] == [CHALLENGER] and rows[1]["aliases"] == []
    assert (rows[3]["map50"], rows[3]["recall"], rows[3]["acc"]) == (0.9, 0.95, 0.85)
    assert {r["gate"] for r in rows} == {"passed"}
    result = compare("dsnet", 1, 2)
    deltas = {m["name"]: m["delta"] for m in result["metrics"]}
    assert deltas["map50"] == pytest.approx(-0.1)
    assert result["same_holdout"]
    assert result["a"]["confusion_matrix"]["columns"][-1] == "missed"
    with pytest.raises(InputError, match="no such model version"):
        compare("dsnet", 1, 9)


def test_promote_refuse_force_and_rollback_keep_an_audit_trail(registry_copy):
    client = _client()
    first = promote("dsnet", 1, "first reviewed model")
    assert first["previous"] is None and first["by"] == "reviewer"
    assert str(client.get_model_version_by_alias("dsnet", CHAMPION).version) == "1"

    with pytest.raises(RefusedError, match="map50 0.8000 is worse than champion v1"):
        promote("dsnet", 2, "looks fine")
    assert str(client.get_model_version_by_alias("dsnet", CHAMPION).version) == "1"
    assert "promoted_at" not in client.get_model_version("dsnet", "2").tags

    forced = promote("dsnet", 2, "clinical override", force=True)
    assert forced["forced"] and forced["previous"] == "1"
    tags = client.get_model_version("dsnet", "2").tags
    assert tags["promotion_forced"] == "true"
    assert tags["promotion_reason"] == "clinical override"
    assert tags["promoted_by"] == "reviewer"
    assert "worse than champion v1" in tags["promotion_overrode"]

    back = rollback("dsnet", "override was a mistake")
    assert (back["version"], back["previous"]) == ("1", "2")
    assert str(client.get_model_version_by_alias("dsnet", CHAMPION).version) == "1"
    assert (
        client.get_model_version("dsnet", "2").tags["rollback_reason"] == "override was a mistake"
    )
    events = history(client, "dsnet")
    assert [(e["action"], e["version"]) for e in events] == [
        ("promote", "1"),
        ("promote", "2"),
        ("rollback", "1"),
    ]
    assert champion_stack(events) == ["1"]
    with pytest.raises(RefusedError, match="no previous champion"):
        rollback("dsnet", "again")
    with pytest.raises(RefusedError, match="already the champion"):
        promote("dsnet", 1, "again")
    with pytest.raises(InputError, match="needs a reason"):
        promote("dsnet", 3, "  ")


def test_a_version_that_did_not_pass_the_gate_cannot_be_promoted(registry_copy):
    client = _client()
    v1 = client.get_model_version("dsnet", "1")
    manual = client.create_model_version("dsnet", v1.source, v1.run_id, tags={"map50": "0.99"})
    with pytest.raises(RefusedError, match="did not pass the gate"):
        promote("dsnet", int(manual.version), "hand-made version")
    assert client.get_registered_model("dsnet").aliases.get(CHAMPION) is None


def test_cli_registry_commands(registry_copy):
    listing = _cli("registry", "list", cwd=registry_copy)
    assert listing.returncode == 0, listing.stderr
    assert "challenger" in listing.stdout and "0.9200" in listing.stdout
    promoted = _cli("registry", "promote", "--version", "3", "--reason", "best", cwd=registry_copy)
    assert promoted.returncode == 0, promoted.stderr
    assert "champion -> v3" in promoted.stdout
    refused = _cli("registry", "promote", "--version", "2", "--reason", "x", cwd=registry_copy)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: dsnet v2: map50 0.8000 is worse than champion v3")
    assert len(refused.stderr.strip().splitlines()) == 1


# -------------------------------------------------------------------- concurrency


def test_two_processes_forced_to_race_for_one_history_slot_both_land_in_order(registry_copy):
    """Both children read the same (empty) history, meet at a barrier, then claim slot 0.

    At most one commits slot 0; the other sees its claim or event, steps back and appends
    slot 1 on top of it. No lock object is left in the registry.
    """
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    children = [
        context.Process(
            target=registry_race.append_after_barrier,
            args=(str(registry_copy), barrier, version, results),
        )
        for version in ("3", "4")
    ]
    for child in children:
        child.start()
    outcome = sorted(results.get(timeout=240) for _ in children)
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0]
    assert all(reads[0] == 0 for _, reads, _ in outcome)  # both read the empty history
    assert sorted(seq for _, _, seq in outcome) == [0, 1]
    assert max(len(reads) for _, reads, _ in outcome) >= 2  # the loser retried
    client = _client()
    events = history(client, "dsnet")
    assert [e["seq"] for e in events] == [0, 1]
    assert events[0]["previous"] is None
    assert events[1]["previous"] == events[0]["version"]  # appended on top of the winner
    tags = client.get_registered_model("dsnet").tags
    assert not [key for key in tags if key.startswith(CLAIM_PREFIX)]
    assert [m.name for m in client.search_registered_models()] == ["dsnet"]


RACE = """
import sys, time
from dsnet.lifecycle.registry.promotion import promote
while time.time() < float(sys.argv[2]):
    time.sleep(0.005)
print(promote("dsnet", int(sys.argv[1]), "race"))
"""


def test_racing_promotions_leave_alias_and_history_consistent(registry_copy):
    promote("dsnet", 1, "first reviewed model")
    start = f"{time.time() + 6:.3f}"  # both processes import, then start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, version, start],
            cwd=registry_copy,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("3", "4")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    client = _client()
    events = history(client, "dsnet")
    assert [e["action"] for e in events] == ["promote"] * 3
    # each promotion saw the one before it: the chain is unbroken
    assert events[1]["previous"] == "1"
    assert events[2]["previous"] == events[1]["version"]
    assert {events[1]["version"], events[2]["version"]} == {"3", "4"}
    champion = str(client.get_model_version_by_alias("dsnet", CHAMPION).version)
    assert champion == events[2]["version"] == champion_stack(events)[-1]
