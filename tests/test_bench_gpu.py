"""`dsnet bench gpu` / `bench/gpu.sh`, tiny mode on the CPU; the channels_last / cuDNN params.

The script runs once (module fixture) the way a GPU machine runs it: a subprocess in which
every library beyond torch, torchvision and numpy (pillow, torchvision's own dependency,
included) is blocked at import, so the benchmark's import chain is checked too.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import tiny
import torch
from datadir_factory import make_data_dir

from dsnet.bench.gpu import BenchProfile, format_table
from dsnet.bench.gpu.profile import TINY_PROFILE, profile_from_params
from dsnet.core.config import load_params
from dsnet.data.contract import load_data_dir
from dsnet.data.split import split_patients, write_split
from dsnet.inference.predict import inference_settings, load_detector, predict
from dsnet.training.train import train

REPO = Path(__file__).resolve().parents[1]
CT_SMALL = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
BLOCKED = (
    "pydicom",
    "mlflow",
    "dvc",
    "kfp",
    "typer",
    "rich",
    "yaml",
    "click",
    "pandas",
    "scipy",
    "matplotlib",
    "pycocotools",
    "boto3",
    "sklearn",
)
BLOCKER = f"""
import sys

# None in sys.modules: importing raises ModuleNotFoundError, importlib.util.find_spec says None
# (absent), exactly as on a machine without these libraries.
for name in {BLOCKED!r}:
    sys.modules[name] = None
"""


def torch_only_env(folder: Path) -> dict[str, str]:
    """Environment of a python whose imports of `BLOCKED` libraries fail."""
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {
        **os.environ,
        "PYTHONPATH": str(folder),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "DSNET_TRACKING": "off",
    }


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    """``bench/gpu.sh OUT --tiny`` on the CPU with everything but torch blocked."""
    root = tmp_path_factory.mktemp("bench_gpu")
    env = torch_only_env(root)
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), str(root / "out"), "--tiny"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result = json.loads((root / "out" / "bench_gpu.json").read_text())
    return {"done": done, "result": result, "env": env, "json": root / "out" / "bench_gpu.json"}


def test_the_blocker_really_blocks(script_run):
    probe = "import importlib, sys\nfor name in sys.argv[1:]:\n" + (
        "    try:\n        importlib.import_module(name)\n        print('imported', name)\n"
        "    except ModuleNotFoundError as exc:\n        print('blocked', name, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *BLOCKED],
        env=script_run["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("blocked") == len(BLOCKED), done.stdout
    assert "import of yaml halted" in done.stdout


def test_the_script_runs_end_to_end_with_torch_only(script_run):
    done = script_run["done"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    result = script_run["result"]
    assert result["status"] == "complete" and result["tiny"] is True
    assert result["device"] == "cpu" and result["schema"] == "dsnet-bench-gpu/1"
    out = done.stdout
    for heading in (
        "training (images/s)",
        "inference (images/s)",
        "settings (R50+DS",
        "paper profile (R50+DS",
    ):
        assert heading in out
    assert out.strip().endswith(f"wrote {script_run['json']}")
    assert format_table(result) in out  # the printed table is the JSON's


def test_rates_are_measured_and_unavailable_configurations_say_why(script_run):
    rows = script_run["result"]["rows"]
    assert script_run["result"]["profile"] == json.loads(json.dumps(vars(TINY_PROFILE)))
    measured = [r for r in rows if r["unavailable"] is None]
    assert {(r["kind"], r["precision"]) for r in measured} >= {
        ("train", "bf16"),
        ("train", "fp32"),
        ("inference", "bf16"),
        ("inference", "fp32"),
    }
    for row in measured:
        assert row["images_per_s"] > 0 and row["iterations"] >= 1
        assert row["images_per_s"] == pytest.approx(
            row["batch_size"] * row["iterations"] / row["seconds"]
        )
        assert row["peak_memory_mib"] is None  # CPU
        assert row["finite_loss"] is (True if row["kind"] == "train" else None)
    fp16 = [r for r in rows if r["precision"] == "fp16"]
    assert fp16 and all(r["unavailable"].startswith("unavailable: float16") for r in fp16)
    cudnn = [r for r in rows if r["group"] == "setting:cudnn_benchmark"]
    assert len(cudnn) == 4 and all("CUDA only" in r["unavailable"] for r in cudnn)
    for setting in ("channels_last", "compile"):
        pairs = [r for r in rows if r["group"] == f"setting:{setting}"]
        assert [r[setting] for r in pairs] == [False, True, False, True]
        assert all(r["images_per_s"] or r["unavailable"].startswith("unavailable:") for r in pairs)


def test_ratios_and_projection_come_from_the_same_run(script_run):
    result = script_run["result"]
    rows, profile = result["rows"], result["profile"]
    work = profile["epochs"] * profile["train_slices"]
    assert work == 100 * 3844

    def rate(kind, precision, model, batch):
        (row,) = [
            r
            for r in rows
            if r["group"] == "main"
            and r["kind"] == kind
            and r["precision"] == precision
            and r["model"] == model
            and r["batch_size"] == batch
        ]
        return row["images_per_s"]

    for precision in ("bf16", "fp32"):
        entry = result["training"][precision]
        plain, ds = rate("train", precision, "R50", 2), rate("train", precision, "R50+DS", 2)
        assert (entry["R50"], entry["R50+DS"]) == (plain, ds)
        assert entry["ds_over_plain"] == pytest.approx(plain / ds)
        assert entry["paper_profile_hours"] == pytest.approx(work / ds / 3600)
        for batch in (1, 2):
            entry = result["inference"][f"{precision} batch {batch}"]
            plain = rate("inference", precision, "R50", batch)
            ds = rate("inference", precision, "R50+DS", batch)
            assert entry["ds_over_plain"] == pytest.approx(plain / ds)
    paper = result["paper_profile"]
    assert paper["precision"] == result["reference_precision"]
    assert paper["images_per_s"] == result["training"][paper["precision"]]["R50+DS"]
    assert paper["hours"] == pytest.approx(work / paper["images_per_s"] / 3600)
    setting = result["settings"]["channels_last train"]
    assert setting["speedup"] == pytest.approx(setting["on"] / setting["off"])
    assert result["training"]["fp16"]["ds_over_plain"] is None
    assert math.isfinite(result["elapsed_s"])


def test_show_prints_the_table_of_a_result_file(script_run):
    done = subprocess.run(
        [sys.executable, "-m", "dsnet.bench.gpu", "--show", str(script_run["json"])],
        env={**script_run["env"], "PYTHONPATH": f"{REPO}:{script_run['env']['PYTHONPATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == format_table(script_run["result"])


def test_the_script_without_a_gpu_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 1
    assert "no CUDA GPU visible" in done.stderr and "--tiny" in done.stderr
    assert not (tmp_path / "out").exists()


def test_defaults_are_the_paper_profile_of_the_params_files():
    paper = load_params([REPO / "params.yaml", REPO / "params" / "paper.yaml"])
    assert profile_from_params(paper) == BenchProfile()
    cpu = profile_from_params(load_params([REPO / "params.yaml"]))
    assert (cpu.size, cpu.batch_size, cpu.pretrained, cpu.channels_last) == (192, 4, False, True)


def test_cli_writes_json_and_table_and_rejects_bad_options(tmp_path):
    out = tmp_path / "r.json"
    options = ["--precision", "fp32", "--budget-seconds", "0.001", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "dsnet", "bench", "gpu", "--tiny", *options],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "complete"
    assert all(
        r["unavailable"].startswith("skipped: over the 0.001 s budget") for r in result["rows"]
    )
    assert format_table(result) in done.stdout
    bad = [["--precision", "fp64"], ["--iterations", "0"]]
    if not torch.cuda.is_available():
        bad.append(["--device", "cuda"])
    for options in bad:
        done = subprocess.run(
            [sys.executable, "-m", "dsnet", "bench", "gpu", "--tiny", *options],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 2, (options, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- the adopted settings reach the model ------------------------------------------------


def backbone_input_is_channels_last(model: torch.nn.Module, image: torch.Tensor) -> bool:
    """Run `model` on `image` and report the memory format its backbone body received."""
    seen = []
    hook = model.backbone.body.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        with torch.inference_mode():
            model.eval()([image])
    finally:
        hook.remove()
    return seen == [True]


def conv_weights_are_channels_last(model: torch.nn.Module) -> bool:
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


@pytest.mark.usefixtures("one_torch_thread")
def test_train_params_set_channels_last_and_cudnn_benchmark(tmp_path, monkeypatch):
    t_scores = {"P1": {"L1": 0.5}, "P2": {"L1": -1.5}, "P3": {"L1": -3.0}}
    data = make_data_dir(tmp_path / "data", t_scores, size=(64, 64), spacing=(1.5, 1.5), seed=1)
    split = write_split(split_patients(load_data_dir(data), 0.34, seed=0), tmp_path / "s.json")
    overrides = [
        "model.backbone=mobilenet_v3",
        "preprocess.canvas_px=64",
        "preprocess.spacing_mm=1.5",
        "train.device=cpu",
        "train.batch_size=2",
        "train.workers=0",
        "train.threads=1",
        "train.epochs=1",
        "train.channels_last=true",
        "train.cudnn_benchmark=false",
    ]
    monkeypatch.setenv("DSNET_TRACKING", "off")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    params = load_params([REPO / "params.yaml"], overrides)
    result = train(data, split, tmp_path / "m", params, plots_dir=tmp_path / "p")

    assert torch.backends.cudnn.benchmark is False
    assert conv_weights_are_channels_last(result.model)
    assert backbone_input_is_channels_last(result.model, torch.rand(3, 64, 64))
    torch.backends.cudnn.benchmark = True
    params = load_params([REPO / "params.yaml"], [*overrides[:-2], "train.channels_last=false"])
    plain = train(data, split, tmp_path / "m2", params, plots_dir=tmp_path / "p2")
    assert torch.backends.cudnn.benchmark is True  # params.yaml: true
    assert not conv_weights_are_channels_last(plain.model)
    assert not backbone_input_is_channels_last(plain.model, torch.rand(3, 64, 64))


@pytest.mark.usefixtures("one_torch_thread")
def test_predict_params_set_channels_last_and_cudnn_benchmark(tmp_path, monkeypatch):
    checkpoint = tiny.untrained_checkpoint(tmp_path, {"note": "untrained"})
    paper = load_params([REPO / "params.yaml", REPO / "params" / "paper.yaml"])
    settings = inference_settings(paper)
    assert (settings["channels_last"], settings["cudnn_benchmark"]) == (True, True)
    off = load_params([REPO / "params.yaml"], ["evaluate.channels_last=false"])
    assert inference_settings(off)["channels_last"] is False
    assert inference_settings(None)["channels_last"] is False  # no params: the safe default

    model, _ = load_detector(checkpoint, torch.device("cpu"), 0.0, channels_last=True)
    assert conv_weights_are_channels_last(model)
    assert backbone_input_is_channels_last(model, torch.rand(3, 128, 128))
    reference, _ = load_detector(checkpoint, torch.device("cpu"), 0.0)
    assert not backbone_input_is_channels_last(reference, torch.rand(3, 128, 128))

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    params = {
        "evaluate": {
            "device": "cpu",
            "decision_threshold": 0.0,
            "channels_last": True,
            "cudnn_benchmark": False,
        }
    }
    summary = predict([CT_SMALL], checkpoint, tmp_path / "out", params)
    assert [f.status for f in summary.files] == ["ok"]
    assert torch.backends.cudnn.benchmark is False
    plain = predict(
        [CT_SMALL],
        checkpoint,
        tmp_path / "plain",
        {"evaluate": {"device": "cpu", "decision_threshold": 0.0}},
    )
    found = [d["score"] for d in summary.files[0].record["detections"]]
    expected = [d["score"] for d in plain.files[0].record["detections"]]
    assert found[:10] == pytest.approx(expected[:10], abs=1e-4)  # same model, other layout
