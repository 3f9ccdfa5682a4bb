"""`dsnet ablate`: the paper's Tables 1-2 under identical settings (tiny profile)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import synthetic_split

from dsnet.core.config import deep_merge
from dsnet.core.errors import InputError
from dsnet.evaluation.ablate import CONFIGS, ablate, ablation_markdown, config_params, table_row

TINY = {
    "preprocess": {"spacing_mm": 4.0, "canvas_px": 96},
    "model": {"weights": None},
    "train": {
        "device": "cpu", "epochs": 1, "batch_size": 4, "warmup_iters": 1, "lr_milestones": [],
        "amp": False, "workers": 0, "threads": 1,
    },
    "evaluate": {"device": "cpu", "fps_warmup": 0, "decision_threshold": 0.05},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    return synthetic_split(tmp_path_factory.mktemp("ablate"), seed=2)


def test_tiny_ablation_trains_evaluates_and_tabulates_with_the_paper(
    tiny_split, params, tmp_path, monkeypatch
):
    monkeypatch.setenv("DSNET_TRACKING", "off")
    data, split = tiny_split
    settings = deep_merge(params, TINY)
    out = tmp_path / "ablation"

    rows = ablate(data, split, out, settings, configs=["MobileNet+DS", "MobileNet"])

    assert [r["config"] for r in rows] == ["MobileNet", "MobileNet+DS"]  # table order
    with (out / "ablation.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["config"] for r in table] == ["MobileNet", "MobileNet+DS"]
    assert [float(r["paper_map50_pct"]) for r in table] == [80.9, 83.0]
    assert [float(r["paper_seconds_per_image"]) for r in table] == [0.1856, 0.1846]
    for row in table:
        assert 0.0 <= float(row["recall_pct"]) <= 100.0
        assert float(row["seconds_per_image"]) > 0 and row["device"].startswith("cpu")
    markdown = (out / "ablation.md").read_text()
    assert "Table 2" in markdown and "Table 1" not in markdown
    assert "| MobileNet+DS |" in markdown and "83.0" in markdown and "Xue et al." in markdown

    for name, attention in (("mobilenet", "none"), ("mobilenet-ds", "ds")):
        assert (out / name / "models" / "model.pt").is_file()
        ckpt = torch.load(out / name / "models" / "model.pt", weights_only=True)
        assert ckpt["model"]["backbone"] == "mobilenet_v3"
        assert ckpt["model"]["attention"] == attention
        assert ckpt["model"]["min_size"] == 96  # identical settings for every configuration

    # resume: unchanged parameters reuse the results instead of training again
    stamp = (out / "mobilenet" / "models" / "model.pt").stat().st_mtime_ns
    again = ablate(data, split, out, settings, configs=["MobileNet"], resume=True)
    assert again[0]["map50_pct"] == rows[0]["map50_pct"]
    assert (out / "mobilenet" / "models" / "model.pt").stat().st_mtime_ns == stamp


def rows_of(table: str) -> list[str]:
    """The method names of a Markdown table's body rows."""
    body = [line for line in table.splitlines() if line.startswith("| ")]
    return [line.split(" | ")[0].removeprefix("| ") for line in body[1:]]


def test_every_row_carries_the_papers_numbers():
    metrics = {"map50": 0.5, "recall": 0.75, "acc": 0.25, "seconds_per_image": 0.2, "fps": 5.0}
    rows = [table_row(name, metrics) for name in CONFIGS]
    markdown = ablation_markdown(rows, {"train": {"epochs": 8}})
    assert "## Table 1 (ResNet50 backbone)" in markdown and "## Table 2" in markdown
    assert (
        "| R50+DS | 50.0 | 83.4 | 75.0 | 90.0 | 25.0 | 75.9 | 0.2000 | 0.1846 | 5.00 |" in markdown
    )
    assert (
        "| VGG16 | 50.0 | 80.0 | 75.0 | 88.5 | 25.0 | 71.1 | 0.2000 | 0.1873 | 5.00 |" in markdown
    )
    table1, table2 = markdown.split("## Table 1")[1].split("## Table 2")
    # the paper's Table 1, and its dense DS beside our grouped one
    assert rows_of(table1) == ["R50", "R50+SE", "R50+SK", "R50+DS", "R50+DS-dense"]
    assert rows_of(table2) == ["VGG16", "VGG16+DS", "MobileNet", "MobileNet+DS"]  # Table 2


def test_configuration_parameters_change_only_the_architecture(params):
    base = deep_merge(params, {"model": {"backbone": "resnet50", "weights": "r50_coco.pth"}})
    r50 = config_params(base, "R50+SE")
    assert (r50["model"]["backbone"], r50["model"]["attention"]) == ("resnet50", "se")
    assert r50["model"]["weights"] == "r50_coco.pth"  # the weights fit this backbone
    assert config_params(base, "VGG16+DS")["model"]["weights"] is None  # they would not fit
    per_backbone = deep_merge(base, {"ablate": {"weights": {"vgg16": "vgg_coco.pth"}}})
    assert config_params(per_backbone, "VGG16")["model"]["weights"] == "vgg_coco.pth"
    assert r50["train"] == base["train"] and r50["evaluate"] == base["evaluate"]
    assert r50["model"]["attention_groups"] == params["model"]["attention_groups"] == 128
    dense = config_params(base, "R50+DS-dense")["model"]
    assert (dense["backbone"], dense["attention"], dense["attention_groups"]) == (
        "resnet50", "ds", 1,
    )  # fmt: skip
    assert params["model"]["attention_groups"] == 128  # the caller's params are untouched


def test_unknown_configuration_is_rejected_with_the_choices(tmp_path):
    with pytest.raises(InputError, match="R50\\+DS"):
        ablate(tmp_path, tmp_path / "split.json", tmp_path / "out", {}, configs=["R101"])
    proc = subprocess.run(
        [sys.executable, "-m", "dsnet", "ablate", str(tmp_path), "--split",
         str(tmp_path / "split.json"), "--out", str(tmp_path / "out"), "--configs", "R50,R101"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "DSNET_TRACKING": "off"}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --configs: unknown configuration(s) R101")
