"""Ablation of the paper's Tables 1-2: nine detector configurations, identical settings.

``ablate(data_dir, split, out_dir, params)`` trains (`dsnet.training.train.train`) and evaluates
(`dsnet.evaluation.evaluate.evaluate`) each configuration with the same parameters, changing only
``model.backbone`` and ``model.attention`` (and, for ``R50+DS-dense``, the paper's dense
DS, ``model.attention_groups: 1``), and writes ``ablation.csv`` and
``ablation.md`` with our numbers beside the paper's. Each configuration keeps its files
in ``<out>/<slug>/`` (``models/``, ``plots/``, ``metrics.json``, ``config.json``); with
``resume=True`` a configuration whose ``metrics.json`` was produced with the same
parameters is not trained again.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.config import params_hash, section
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json, atomic_write_text
from dsnet.evaluation.evaluate import evaluate
from dsnet.training.train import train

PAPER_CITATION = (
    "Xue et al., DSNet: dual-selective channel attention for osteoporosis detection on "
    "lumbar CT, Acadlore Trans. Mach. Learn. 2022, Tables 1-2 (private CT data, RTX 2080 Ti)"
)


@dataclass(frozen=True)
class PaperResult:
    """A row of the paper's Table 1 or 2.

    Metrics are percentages; ``seconds_per_image`` is the paper's "FPS" column, whose
    values (about 0.18) are seconds per image.
    """

    table: int
    map50: float
    recall: float
    acc: float
    seconds_per_image: float


CONFIGS: dict[str, tuple[str, str]] = {
    "R50": ("resnet50", "none"),
    "R50+SE": ("resnet50", "se"),
    "R50+SK": ("resnet50", "sk"),
    "R50+DS": ("resnet50", "ds"),
    "R50+DS-dense": ("resnet50", "ds"),
    "VGG16": ("vgg16", "none"),
    "VGG16+DS": ("vgg16", "ds"),
    "MobileNet": ("mobilenet_v3", "none"),
    "MobileNet+DS": ("mobilenet_v3", "ds"),
}
"""Configuration name -> (``model.backbone``, ``model.attention``), in table order."""

MODEL_OVERRIDES: dict[str, dict[str, Any]] = {"R50+DS-dense": {"attention_groups": 1}}
"""Further ``model`` settings of a configuration: R50+DS-dense is the paper's DS, whose
convolutions are dense; R50+DS is ours, grouped (``docs/model.md``, "Cost")."""

PAPER: dict[str, PaperResult] = {
    "R50": PaperResult(1, 78.2, 88.1, 74.1, 0.1849),
    "R50+SE": PaperResult(1, 80.4, 88.5, 73.7, 0.1834),
    "R50+SK": PaperResult(1, 81.4, 89.2, 73.8, 0.1829),
    "R50+DS": PaperResult(1, 83.4, 90.0, 75.9, 0.1846),
    "VGG16": PaperResult(2, 80.0, 88.5, 71.1, 0.1873),
    "VGG16+DS": PaperResult(2, 80.2, 89.9, 71.8, 0.1870),
    "MobileNet": PaperResult(2, 80.9, 86.4, 73.0, 0.1856),
    "MobileNet+DS": PaperResult(2, 83.0, 88.1, 72.7, 0.1846),
}
"""The paper's numbers (`PAPER_CITATION`), per configuration."""
PAPER["R50+DS-dense"] = PAPER["R50+DS"]  # the paper's DS is dense: its row is this one

CSV_COLUMNS = (
    "table",
    "config",
    "backbone",
    "attention",
    "map50_pct",
    "paper_map50_pct",
    "recall_pct",
    "paper_recall_pct",
    "acc_pct",
    "paper_acc_pct",
    "seconds_per_image",
    "paper_seconds_per_image",
    "fps",
    "ap50_agnostic_pct",
    "patient_acc_pct",
    "hu_baseline_acc_pct",
    "n_images",
    "device",
)


def slug(name: str) -> str:
    """Folder name of a configuration: ``R50+DS`` -> ``r50-ds``."""
    return name.lower().replace("+", "-")


def check_configs(names: Sequence[str]) -> list[str]:
    """Validate configuration names; return them in table order without duplicates.

    Raises:
        InputError: An unknown name (the valid ones are listed).

    """
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise InputError(
            "--configs", f"unknown configuration(s) {', '.join(unknown)}; choose from "
            f"{', '.join(CONFIGS)}"
        )  # fmt: skip
    return [n for n in CONFIGS if n in set(names)]


def config_params(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Return the parameters of one configuration: `params` with its architecture.

    Initial weights: ``ablate.weights[<backbone>]`` when given, else ``model.weights`` if
    the backbone is ``model.backbone``'s, else none (a checkpoint fits one backbone only).
    """
    backbone, attention = CONFIGS[name]
    out = copy.deepcopy(dict(params))
    model = out.setdefault("model", {})
    per_backbone = section(params, "ablate").get("weights") or {}
    if backbone in per_backbone:
        model["weights"] = per_backbone[backbone]
    elif backbone != model.get("backbone"):
        model["weights"] = None
    model["backbone"], model["attention"] = backbone, attention
    model.update(copy.deepcopy(MODEL_OVERRIDES.get(name, {})))
    return out


def run_config(
    name: str,
    data_dir: Path,
    split_path: Path,
    out_dir: Path,
    params: Mapping[str, Any],
    resume: bool,
) -> dict[str, Any]:
    """Train and evaluate one configuration (or reuse its results); return its metrics."""
    folder = out_dir / slug(name)
    cfg_params = config_params(params, name)
    digest = params_hash(cfg_params, ("preprocess", "model", "train", "evaluate"))
    metrics_path, config_path = folder / "metrics.json", folder / "config.json"
    if resume and metrics_path.is_file() and config_path.is_file():
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
        if recorded.get("params_hash") == digest:
            return json.loads(metrics_path.read_text(encoding="utf-8"))
    result = train(data_dir, split_path, folder / "models", cfg_params, plots_dir=folder / "plots")
    metrics = evaluate(
        result.model_path, data_dir, split_path, metrics_path, folder / "plots", cfg_params
    )
    atomic_write_json(
        config_path,
        {"config": name, "params_hash": digest, "model": cfg_params["model"],
         "train": cfg_params.get("train", {}), "epochs": result.epochs},
    )  # fmt: skip
    return metrics


def _pct(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else round(100.0 * value, 1)


def table_row(name: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One row of ``ablation.csv``: our metrics (percent) beside the paper's."""
    backbone, attention = CONFIGS[name]
    paper = PAPER[name]
    return {
        "table": paper.table,
        "config": name,
        "backbone": backbone,
        "attention": attention,
        "map50_pct": _pct(metrics.get("map50")),
        "paper_map50_pct": paper.map50,
        "recall_pct": _pct(metrics.get("recall")),
        "paper_recall_pct": paper.recall,
        "acc_pct": _pct(metrics.get("acc")),
        "paper_acc_pct": paper.acc,
        "seconds_per_image": metrics.get("seconds_per_image"),
        "paper_seconds_per_image": paper.seconds_per_image,
        "fps": metrics.get("fps"),
        "ap50_agnostic_pct": _pct(metrics.get("ap50_agnostic")),
        "patient_acc_pct": _pct(metrics.get("patient_acc")),
        "hu_baseline_acc_pct": _pct(metrics.get("hu_baseline_acc")),
        "n_images": metrics.get("n_images"),
        "device": metrics.get("device"),
    }


def ablation_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render the rows as CSV text (empty cells for undefined values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def ablation_markdown(rows: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """``ablation.md``: Tables 1 and 2 with our numbers beside the paper's."""
    train_cfg = section(params, "train")
    lines = [
        "# Ablation: DSNet Tables 1-2 reproduced on our data",
        "",
        "Ours: every configuration trained and evaluated with identical parameters "
        f"(epochs {train_cfg.get('epochs')}, batch {train_cfg.get('batch_size')}, "
        f"lr {train_cfg.get('lr')}, seed {train_cfg.get('seed')}) on the same split; "
        "metrics as defined in docs/metrics.md. Paper: "
        f'{PAPER_CITATION}. The paper\'s "FPS" column is seconds per image.',
        "",
    ]
    devices = sorted({str(r["device"]) for r in rows if r.get("device")})
    if devices:
        lines += [f"Timings measured on: {'; '.join(devices)}.", ""]
    for table, title in ((1, "Table 1 (ResNet50 backbone)"), (2, "Table 2 (backbones +- DS)")):
        chosen = [r for r in rows if r["table"] == table]
        if not chosen:
            continue
        lines += [
            f"## {title}",
            "",
            "| method | mAP50 % | paper | Recall % | paper | Acc % | paper "
            "| s/image | paper | images/s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in chosen:
            lines.append(
                f"| {r['config']} | {_cell(r['map50_pct'])} | {_cell(r['paper_map50_pct'])} "
                f"| {_cell(r['recall_pct'])} | {_cell(r['paper_recall_pct'])} "
                f"| {_cell(r['acc_pct'])} | {_cell(r['paper_acc_pct'])} "
                f"| {_cell(r['seconds_per_image'], 4)} | {_cell(r['paper_seconds_per_image'], 4)} "
                f"| {_cell(r['fps'], 2)} |"
            )
        lines.append("")
    return "\n".join(lines)


def ablate(
    data_dir: str | PathLike[str],
    split_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    params: Mapping[str, Any],
    configs: Sequence[str] | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Train and evaluate the paper's configurations; write ``ablation.csv``/``.md``.

    Args:
        data_dir: The data dir.
        split_path: ``split.json`` (train patients for training, test for evaluation).
        out_dir: Output folder (one subfolder per configuration, plus the two tables).
        params: Resolved parameters shared by all configurations; ``ablate.configs``
            selects configurations when `configs` is None (default: all eight), and
            ``ablate.weights`` maps a backbone to its initial weights.
        configs: Configuration names (`CONFIGS`), overriding ``ablate.configs``.
        resume: Reuse a configuration's results when its parameters are unchanged.

    Returns:
        The table rows, in table order (see `table_row`).

    Raises:
        InputError: Unknown configuration names, or bad inputs of train/evaluate.

    """
    names = check_configs(configs or section(params, "ablate").get("configs") or list(CONFIGS))
    out_dir = Path(out_dir)
    rows = []
    for name in names:
        metrics = run_config(name, Path(data_dir), Path(split_path), out_dir, params, resume)
        rows.append(table_row(name, metrics))
        atomic_write_text(out_dir / "ablation.csv", ablation_csv(rows))
        atomic_write_text(out_dir / "ablation.md", ablation_markdown(rows, params))
    return rows
