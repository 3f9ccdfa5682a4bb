"""`dsnet predict` and `dsnet bench predict` on real DICOM (pydicom's CT_small.dcm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import tiny
import torch
from datadir_factory import write_slice

from dsnet.core.errors import InputError
from dsnet.inference.detect import detect, model_input
from dsnet.inference.load import resolve_model
from dsnet.inference.predict import (
    RUN_OUTPUT_STEMS,
    output_stems,
    patient_summaries,
    predict,
    process_file,
)
from dsnet.inference.results import FileResult
from dsnet.io import read_slice

CT_SMALL = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
ALL_DETECTIONS = {"evaluate": {"decision_threshold": 0.0, "device": "cpu"}}
CLASS_NAMES = {"normal", "osteopenia", "osteoporosis"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A real dsnet checkpoint of an untrained MobileNetV3 detector (128 px input)."""
    return tiny.untrained_checkpoint(tmp_path_factory.mktemp("model"), {"note": "untrained"})


def test_predict_ct_small_writes_json_overlay_and_summary(untrained_checkpoint, tmp_path):
    out = tmp_path / "out"
    summary = predict([CT_SMALL], untrained_checkpoint, out, ALL_DETECTIONS)

    assert [f.status for f in summary.files] == ["ok"]
    record = json.loads((out / "CT_small.json").read_text())
    assert record["file"] == str(CT_SMALL)
    assert record["patient_id"] == "1CT1"
    assert record["spacing"] == pytest.approx([0.661468, 0.661468])
    assert record["shape"] == [128, 128]
    detections = record["detections"]
    assert detections, "an untrained detector with threshold 0 still proposes boxes"
    boxes = np.array([d["box"] for d in detections])
    assert np.all(boxes >= 0) and np.all(boxes <= 128)  # CT_small's own 128 x 128 grid
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    assert {d["label"] for d in detections} <= CLASS_NAMES
    scores = [d["score"] for d in detections]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert record["grade"] == detections[0]["label"]
    assert len(record["hu"]["detections"]) == len(detections)
    assert record["hu"]["thresholds"] == [160.0, 110.0]
    # the HU of a box's ROI comes from the original HU image
    hu = read_slice(CT_SMALL).hu
    first = record["hu"]["detections"][0]
    if first["mean_hu"] is not None:
        assert hu.min() <= first["mean_hu"] <= hu.max()

    png = out / "CT_small.png"
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) >= 512  # enlarged for reading
        header = np.asarray(image.convert("L"))[:80]
    assert header[:, -4:].max() == 0, "the header text runs off the right edge"
    assert header[25:, :200].max() > 0  # the subtitle (file name, view, disclaimer) is there

    saved = json.loads((out / "summary.json").read_text())
    assert saved["n_files"] == 1 and saved["n_failed"] == 0
    assert saved["files"][0]["status"] == "ok" and saved["files"][0]["json"] == "CT_small.json"
    assert saved["patients"]["1CT1"]["grade"] == record["grade"]
    assert "1CT1" in (out / "report.md").read_text()


class BrightRegionDetector(torch.nn.Module):
    """A detector whose answer is known: the box around the input pixels above 0.9
    in channel 0, in model-input pixel-edge coordinates, graded osteoporosis."""

    def forward(self, images):
        outputs = []
        for image in images:
            rows, cols = torch.nonzero(image[0] > 0.9, as_tuple=True)
            box = torch.stack([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            outputs.append(
                {"boxes": box.float()[None], "labels": torch.tensor([3]),
                 "scores": torch.tensor([0.8])}
            )  # fmt: skip
        return outputs


def test_boxes_come_back_in_original_pixels_whatever_the_spacing(tmp_path):
    # 200 x 300 slice at 0.6 x 0.9 mm: at 1.5 mm it is 80 x 180 pixels, on a 128 px canvas
    # padded top and bottom, cropped left and right around the body (the block)
    hu = np.full((200, 300), -1000.0, np.float32)
    hu[50:110, 60:210] = 1500.0  # bright block: original box x 60..210, y 50..110
    path = write_slice(tmp_path / "slice.dcm", hu, "P1", spacing=(0.6, 0.9))
    ct = read_slice(path)
    image, placement = model_input(ct, tiny.PREPROCESS)
    assert tuple(image.shape) == (3, 128, 128)
    assert placement.scale == pytest.approx((2.5, 300 / 180))
    assert placement.offset == (24, -17)  # (128 - 80) / 2; block centre x 135 * 0.6 = 81, - 64

    found = detect(BrightRegionDetector(), image, placement, torch.device("cpu"))
    sy, sx = placement.scale
    tolerance = np.array([sx, sy, sx, sy])  # one model pixel
    assert np.all(np.abs(found.boxes[0] - [60, 50, 210, 110]) <= tolerance)

    settings = {"threshold": 0.5, "hu_thresholds": (160.0, 110.0)}
    result = process_file(
        path, "slice", BrightRegionDetector(), tiny.PREPROCESS, settings, tmp_path / "out", "cpu"
    )
    assert result.status == "ok"
    written = json.loads((tmp_path / "out" / "slice.json").read_text())
    assert np.all(
        np.abs(np.array(written["detections"][0]["box"]) - [60, 50, 210, 110]) <= tolerance
    )
    assert written["detections"][0]["label"] == "osteoporosis"
    assert written["hu"]["detections"][0] == {"mean_hu": 1500.0, "label": "normal"}


def test_cli_broken_file_is_reported_others_processed_and_names_do_not_collide(
    untrained_checkpoint, tmp_path
):
    inputs = tmp_path / "in"
    for sub in ("a", "b"):  # same file name in two folders
        (inputs / sub).mkdir(parents=True)
        shutil.copy(CT_SMALL, inputs / sub / "CT_small.dcm")
    (inputs / "b" / "notes.dcm").write_text("not a DICOM file\n")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSNET_TRACKING": "off"}
    proc = subprocess.run(
        [sys.executable, "-m", "dsnet", "predict", str(inputs), "--model",
         str(untrained_checkpoint), "--out", str(out), "-S", "evaluate.decision_threshold=0.0",
         "-S", "evaluate.device=cpu"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip

    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ")
    assert "notes.dcm" in errors[0] and "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_files"] == 3 and summary["n_ok"] == 2 and summary["n_failed"] == 1
    ok = [f for f in summary["files"] if f["status"] == "ok"]
    assert len({f["json"] for f in ok}) == 2  # no output overwrote the other
    for entry in ok:
        record = json.loads((out / entry["json"]).read_text())
        assert record["file"] == entry["file"] and (out / entry["png"]).is_file()
    (bad,) = [f for f in summary["files"] if f["status"] == "error"]
    assert bad["file"].endswith("notes.dcm") and "DICOM" in bad["reason"]


def test_missing_model_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="model checkpoint not found"):
        resolve_model(tmp_path / "absent.pt")
    with pytest.raises(InputError, match="no input"):
        predict([], tmp_path / "absent.pt", tmp_path / "out")


def test_patient_grade_is_the_lowest_over_slices_and_levels_run_head_to_foot():
    def ok(z, label, score, mean_hu, hu_label):
        detections = [{"box": [0, 0, 1, 1], "label": label, "score": score}] if label else []
        hu = [{"mean_hu": mean_hu, "label": hu_label}] if label else []
        record = {"file": f"{z}.dcm", "patient_id": "P", "slice_location": z,
                  "detections": detections, "hu": {"detections": hu}}  # fmt: skip
        return FileResult(f"{z}.dcm", "ok", 0.1, f"s{z}", None, record)

    results = [
        ok(-10.0, "normal", 0.9, 180.0, "normal"),
        ok(20.0, "osteopenia", 0.7, 105.0, "osteoporosis"),
        ok(5.0, None, None, None, None),
        FileResult("bad.dcm", "error", 0.0, None, "not a DICOM file"),
    ]
    summary = patient_summaries(results)["P"]
    assert summary["grade"] == "osteopenia"
    assert summary["hu_baseline"] == {"grade": "osteoporosis", "lowest_mean_hu": 105.0}
    assert [lv["slice_location"] for lv in summary["levels"]] == [20.0, 5.0, -10.0]
    assert (summary["n_slices"], summary["n_slices_with_detection"]) == (3, 2)


def test_bench_predict_times_pipeline_and_bare_forward(untrained_checkpoint, tmp_path):
    from dsnet.bench.predict import bench_predict

    result = bench_predict(untrained_checkpoint, [CT_SMALL], repeats=2, params=ALL_DETECTIONS)
    (timing,) = result.slices
    assert timing.file == str(CT_SMALL)
    assert timing.end_to_end_s > 0 and timing.forward_s > 0
    assert result.ratio == pytest.approx(timing.end_to_end_s / timing.forward_s)
    assert result.device.startswith("cpu")

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(CT_SMALL.read_bytes()[:2000])
    with pytest.raises(InputError, match="broken.dcm"):
        bench_predict(untrained_checkpoint, [broken], repeats=1, params=ALL_DETECTIONS)


def test_output_names_never_collide_with_each_other_or_the_run_outputs(tmp_path):
    files = [
        tmp_path / "a/summary.dcm",  # would overwrite summary.json
        tmp_path / "a/Report.dcm",  # report.md's stem, other case
        tmp_path / "a/slice.dcm",
        tmp_path / "b/slice.dcm",  # same stem, other folder
        tmp_path / "b/SLICE.DCM",  # same stem on a case-insensitive file system
        tmp_path / "b/other.dcm",
    ]
    stems = output_stems(files)
    assert len({s.casefold() for s in stems}) == len(files)
    assert not {s.casefold() for s in stems} & RUN_OUTPUT_STEMS
    assert stems[-1] == "other" and stems[0].startswith("summary-")
    assert output_stems(files) == stems  # stable across runs
