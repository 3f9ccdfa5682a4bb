"""dsnet.training.train: outputs, checkpoint round trip, learning, resume, divergence, schedule,
CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datadir_factory import make_data_dir

from dsnet.core.config import load_params
from dsnet.core.device import (
    autocast_dtype,
    configure_threads,
    native_cpu_bf16,
    select_device,
)
from dsnet.core.errors import InputError
from dsnet.data.contract import load_data_dir
from dsnet.data.split import split_patients, write_split
from dsnet.models.checkpoint import build_model, load_checkpoint
from dsnet.training.history import CSV_COLUMNS
from dsnet.training.optim import WarmupMultiStep, build_optimizer, build_scheduler
from dsnet.training.train import train

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# A small but complete configuration: DS attention, 64 px images, 3 steps per epoch.
TINY = [
    "model.backbone=mobilenet_v3",
    "model.attention=ds",
    "preprocess.spacing_mm=1.5",
    "preprocess.canvas_px=64",
    "train.device=cpu",
    "train.batch_size=2",
    "train.workers=0",
    "train.threads=1",
    # fp32 and the plain memory layout: the exact-resume check compares weights to 1e-6,
    # and oneDNN's bf16 / channels-last kernels are not bit-stable across calls
    "train.cpu_bf16=false",
    "train.channels_last=false",
    "train.warmup_iters=2",
    "train.lr_milestones=[1]",
    "train.epochs=2",
]


def tiny_params(*overrides: str) -> dict:
    return load_params([REPO / "params.yaml"], [*TINY, *overrides])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four patients, L1 and L2, one 64 x 64 slice each at 1.5 mm; 3 train patients."""
    root = tmp_path_factory.mktemp("tiny")
    t_scores = {
        "P1": {"L1": 0.5, "L2": 0.0},
        "P2": {"L1": -1.5, "L2": -2.0},
        "P3": {"L1": -3.0, "L2": -2.8},
        "P4": {"L1": -0.2, "L2": -1.2},
    }
    data = make_data_dir(root / "data", t_scores, size=(64, 64), spacing=(1.5, 1.5), seed=1)
    split = write_split(split_patients(load_data_dir(data), 0.25, seed=0), root / "split.json")
    return data, split


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """Run A: 2 epochs in one go. Run B: 1 epoch, then --resume to 2 (MLflow tracked)."""
    data, split = dataset
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSNET_TRACKING", "off")
        a = train(data, split, root / "a", tiny_params(), plots_dir=root / "a_plots")
        mp.setenv("DSNET_TRACKING", "on")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        b1 = train(data, split, root / "b", tiny_params("train.epochs=1"), plots_dir=root / "bp")
        b1_files = {name: (root / "b" / name).read_bytes() for name in ("model.pt", "last.ckpt")}
        b1_csv = (root / "bp" / "train_loss.csv").read_text()
        b2 = train(data, split, root / "b", tiny_params(), resume=True, plots_dir=root / "bp")
    return {"root": root, "a": a, "b1": b1, "b1_files": b1_files, "b1_csv": b1_csv, "b2": b2}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_one_epoch_writes_a_checkpoint_that_loads_back_identically(runs, tmp_path):
    root, result = runs["root"], runs["b1"]
    model_pt = tmp_path / "model.pt"
    model_pt.write_bytes(runs["b1_files"]["model.pt"])
    resume_state = tmp_path / "last.ckpt"
    resume_state.write_bytes(runs["b1_files"]["last.ckpt"])

    loaded, checkpoint = load_checkpoint(model_pt)
    trained = torch.load(resume_state, weights_only=True)["model"]  # the in-training weights
    assert loaded.state_dict().keys() == trained.keys()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, trained[key]), key

    reference = build_model(checkpoint["model"])
    reference.load_state_dict(trained)
    reference.eval()
    loaded.roi_heads.score_thresh = reference.roi_heads.score_thresh = 0.0
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = loaded([image])[0], reference([image])[0]
    assert expected["scores"].numel() > 0
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(got[key], expected[key]), key

    assert checkpoint["model"]["backbone"] == "mobilenet_v3"
    assert checkpoint["model"]["attention"] == "ds"
    assert checkpoint["preprocess"]["spacing_mm"] == 1.5
    assert checkpoint["meta"]["epochs"] == 1
    assert checkpoint["meta"]["seed"] == 0
    assert checkpoint["meta"]["device"] == "cpu"
    assert checkpoint["meta"]["train_seconds"] > 0
    assert checkpoint["meta"]["run_id"] == result.run_id
    assert result.epochs == 1
    assert (root / "b" / "train_run.json").is_file()


def test_loss_decreases_and_history_is_written(runs):
    result = runs["a"]
    rows = read_csv(result.loss_csv)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    losses = [float(r["loss"]) for r in rows]
    assert losses[1] < losses[0]
    for row in rows:
        parts = sum(float(row[c]) for c in CSV_COLUMNS if c.startswith("loss_"))
        assert math.isclose(parts, float(row["loss"]), rel_tol=1e-4)
        assert float(row["images_per_s"]) > 0
    # 3 steps per epoch, warm-up over 2, decay x0.1 at the start of epoch 2 (iteration 3).
    assert float(rows[0]["lr"]) == pytest.approx(0.01)
    assert float(rows[1]["lr"]) == pytest.approx(0.001)
    assert result.final_loss == pytest.approx(losses[1], rel=1e-5)

    record = json.loads(result.run_path.read_text())
    assert record["epochs"] == 2
    assert record["run_id"] is None  # tracking was off for run A
    assert record["final_loss"] == pytest.approx(result.final_loss)
    assert record["images_per_s"] == pytest.approx(result.images_per_s)
    assert len(record["data_version"]) > 10 and len(record["params_hash"]) == 16


def test_resume_continues_exactly_where_it_stopped(runs):
    a, b2 = runs["a"], runs["b2"]
    weights_a = torch.load(a.model_path, weights_only=True)["state_dict"]
    weights_b = torch.load(b2.model_path, weights_only=True)["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    for key, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[key], tensor, rtol=1e-5, atol=1e-6, msg=key)
    rows_a, rows_b = read_csv(a.loss_csv), read_csv(b2.loss_csv)
    assert [r["epoch"] for r in rows_b] == ["1", "2"]
    assert rows_b[0] == next(csv.DictReader(runs["b1_csv"].splitlines()))  # epoch 1 kept
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert float(row_b["loss"]) == pytest.approx(float(row_a["loss"]), rel=1e-5)
        assert float(row_b["lr"]) == pytest.approx(float(row_a["lr"]))
    assert b2.epochs == 2
    assert json.loads(b2.run_path.read_text())["resumed_from_epoch"] == 1


def test_resume_logs_to_the_same_mlflow_run(runs):
    import mlflow

    b1, b2 = runs["b1"], runs["b2"]
    assert b1.run_id and b2.run_id == b1.run_id
    assert json.loads(b2.run_path.read_text())["run_id"] == b1.run_id
    client = mlflow.MlflowClient(f"sqlite:///{runs['root'] / 'mlflow.db'}")
    run = client.get_run(b1.run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(b1.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2]
    rows = read_csv(b2.loss_csv)
    by_step = {m.step: m.value for m in history}
    assert by_step[2] == pytest.approx(float(rows[1]["loss"]), rel=1e-5)
    assert run.data.params["train.lr"] == "0.01"
    artifacts = {f.path for f in client.list_artifacts(b1.run_id)}
    assert {"plots", "train_run.json"} <= artifacts


def test_diverging_loss_stops_with_one_line_and_keeps_earlier_outputs(runs, dataset, tmp_path):
    data, split = dataset
    out, plots = tmp_path / "models", tmp_path / "plots"
    shutil.copytree(runs["a"].model_path.parent, out)
    shutil.copytree(runs["a"].loss_csv.parent, plots)
    before = {p: p.read_bytes() for p in [*out.iterdir(), *plots.iterdir()]}
    # A real cause: a learning rate 10^8 times too large, without warm-up.
    overrides = [arg for o in [*TINY, "train.lr=1e6", "train.warmup_iters=0"] for arg in ("-S", o)]
    result = subprocess.run(
        [sys.executable, "-m", "dsnet", "train", str(data), "--split", str(split),
         "--out", str(out), "--plots-dir", str(plots), "-p", str(REPO / "params.yaml"),
         *overrides],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "DSNET_TRACKING": "off"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "error: params.train: training diverged: non-finite loss at epoch 1"
    )
    assert "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in [*out.iterdir(), *plots.iterdir()]} == before


def test_resume_without_state_is_bad_input(dataset, tmp_path):
    data, split = dataset
    with pytest.raises(InputError, match="last.ckpt: no resume state"):
        train(data, split, tmp_path / "models", tiny_params(), resume=True)


def test_resume_with_another_architecture_is_bad_input(runs, dataset, tmp_path):
    data, split = dataset
    shutil.copytree(runs["a"].model_path.parent, tmp_path / "models")
    with pytest.raises(InputError, match="last.ckpt: was written for model"):
        train(data, split, tmp_path / "models", tiny_params("model.attention=se"), resume=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "train.epochs (-S train.epochs=0): 0 must be >= 1"),
        ("train.batch_size=0", "train.batch_size (-S train.batch_size=0): 0 must be >= 1"),
        ("train.lr=-1", "train.lr (-S train.lr=-1): -1 must be > 0"),
        ("train.device=tpu", "train.device (-S train.device=tpu): 'tpu' is not one of auto"),
    ],
)
def test_bad_train_params_are_input_errors(dataset, tmp_path, override, message):
    data, split = dataset
    with pytest.raises(InputError, match=re.escape(message)):  # refused as the params load
        train(data, split, tmp_path / "m", tiny_params(override), plots_dir=tmp_path / "p")
    assert not (tmp_path / "m").exists()


def test_cli_names_a_missing_split_and_exits_2(dataset, tmp_path):
    data, _ = dataset
    missing = tmp_path / "nope.json"
    result = subprocess.run(
        [sys.executable, "-m", "dsnet", "train", str(data), "--split", str(missing),
         "--out", str(tmp_path / "m"), "-p", str(REPO / "params.yaml")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "DSNET_TRACKING": "off"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing}: file not found"


def test_schedule_warms_up_linearly_then_steps_down():
    schedule = WarmupMultiStep(warmup_iters=10, milestones=[20, 30], gamma=0.1, warmup_start=0.001)
    assert schedule(0) == pytest.approx(0.001)
    assert schedule(5) == pytest.approx(0.001 + 0.999 * 0.5)
    assert schedule(10) == 1.0
    assert schedule(19) == 1.0
    assert schedule(20) == pytest.approx(0.1)
    assert schedule(29) == pytest.approx(0.1)
    assert schedule(30) == pytest.approx(0.01)
    # A milestone inside the warm-up multiplies the warm-up ramp.
    assert WarmupMultiStep(10, [5], 0.5)(5) == pytest.approx(0.5 * (0.001 + 0.999 * 0.5))


def test_scheduler_sets_the_optimizer_lr_per_iteration():
    model = torch.nn.Linear(2, 1)
    cfg = {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "warmup_iters": 4}
    cfg |= {"lr_milestones": [2], "lr_gamma": 0.1}
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, iters_per_epoch=5)  # milestone = iteration 10
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.02 * 0.001)
    assert seen[2] == pytest.approx(0.02 * (0.001 + 0.999 * 0.5))
    assert seen[4:10] == pytest.approx([0.02] * 6)
    assert seen[10:] == pytest.approx([0.002] * 2)
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0]["milestones"] == [10]
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_device_and_threads():
    if not torch.cuda.is_available():
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(InputError, match="train.device: cuda requested"):
            select_device("cuda")
        with pytest.raises(InputError, match="evaluate.device: cuda requested"):
            select_device("cuda", setting="evaluate.device")
    assert select_device("cpu") == torch.device("cpu")
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype(cuda, amp=True) == torch.float16
    assert autocast_dtype(cuda, amp=False, cpu_bf16=True) is None
    assert autocast_dtype(cpu, amp=True) is None  # amp is a CUDA setting
    assert autocast_dtype(cpu, amp=False, cpu_bf16=True) == torch.bfloat16
    assert autocast_dtype(cpu, amp=False, cpu_bf16="auto") == (
        torch.bfloat16 if native_cpu_bf16() else None
    )
    with pytest.raises(InputError, match="train.cpu_bf16"):
        autocast_dtype(cpu, amp=False, cpu_bf16="sometimes")
    cores = len(os.sched_getaffinity(0))
    try:
        assert configure_threads("auto", processes_per_node=2) == max(1, cores // 2)
        assert torch.get_num_threads() == max(1, cores // 2)
        assert configure_threads(3) == 3
        with pytest.raises(InputError, match="train.threads"):
            configure_threads(0)
    finally:
        torch.set_num_threads(1)
