"""Evaluation on the hold-out patients with the paper's metrics (docs/metrics.md).

``evaluate(model, data_dir, split, metrics.json, plots/, params)`` runs the checkpoint on
every slice of the split's test patients and writes ``metrics.json``:

- ``map50``, ``ap_per_class``: COCO AP at IoU 0.5, class-aware (pycocotools);
  ``ap50_agnostic``: the same ignoring classes (finding the vertebral body);
- ``recall``, ``acc``: hits (IoU >= 0.5 and right class) / ground-truth boxes, and
  correct answers / ground-truth boxes, at ``evaluate.decision_threshold``;
- ``confusion_matrix``: true class x class of the answer (+ missed);
- ``patient_acc``: patient diagnosis (lowest grade over L1-L4) vs DXA;
- ``hu_baseline_*``: the trabecular-HU threshold baseline on the same slices, in the
  ground-truth box and in the detector's box, per slice and per patient;
- ``fps``, ``seconds_per_image``, ``device``: inference speed after warm-up.

Plots (PR curves, confusion matrix, training loss) go to `plots_dir`; the review report
(`dsnet.evaluation.review`: bootstrap intervals, champion comparison, error gallery,
per-patient table) goes to ``review/`` beside ``metrics.json``. When a ``train_run.json``
with a ``run_id`` sits beside the model, the metrics, plots, review, per-patient table
(``log_table``) and the hold-out data set (``log_dataset``) are also logged to that MLflow
run through `dsnet.tracking.runs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from dsnet.core.config import section
from dsnet.core.device import configure_backends, select_device
from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_write_json
from dsnet.data.contract import load_data_dir
from dsnet.data.split import read_split
from dsnet.evaluation.plots import write_confusion, write_loss_curve, write_pr_curves
from dsnet.evaluation.review.evidence import REVIEW_DIR, review_paths
from dsnet.evaluation.review.step import review_evaluation
from dsnet.evaluation.scoring import evaluate_detector, json_safe
from dsnet.inference.detect import DEFAULT_DECISION_THRESHOLD
from dsnet.inference.load import load_detector
from dsnet.tracking.runs import start_run

TRAIN_RUN_FILE = "train_run.json"
METRIC_KEYS = (
    "map50",
    "recall",
    "acc",
    "fps",
    "seconds_per_image",
    "device",
    "ap_per_class",
    "ap50_agnostic",
    "patient_acc",
    "hu_baseline_acc",
    "hu_baseline_patient_acc",
    "confusion_matrix",
    "n_images",
    "n_patients",
)


def train_run_id(model_path: Path) -> str | None:
    """Return the MLflow run id training recorded in ``train_run.json`` beside the model."""
    path = model_path.parent / TRAIN_RUN_FILE
    if not path.is_file():
        return None
    try:
        run_id = json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (json.JSONDecodeError, OSError, AttributeError) as exc:
        raise InputError(path, f"unreadable training-run record ({exc})") from None
    return str(run_id) if run_id else None


def evaluate(
    model_path: str | PathLike[str],
    data_dir: str | PathLike[str],
    split_path: str | PathLike[str],
    metrics_path: str | PathLike[str],
    plots_dir: str | PathLike[str],
    params: Mapping[str, Any],
    review_against: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on the test patients of a split and write the metrics.

    Args:
        model_path: ``model.pt`` (`dsnet.models.checkpoint`).
        data_dir: The data dir (docs/data.md).
        split_path: ``split.json``; its ``test`` patients are evaluated.
        metrics_path: Destination ``metrics.json`` (written atomically).
        plots_dir: Folder for the plot files (`dsnet.evaluation.plots`).
        params: Parameters; the ``evaluate`` section is used (``score_threshold``,
            ``decision_threshold``, ``iou_threshold``, ``hu_thresholds``, ``fps_warmup``,
            ``device``, ``channels_last``, ``cudnn_benchmark``, ``review``);
            ``register.model_name`` names the registered model whose champion the review
            compares with.
        review_against: Compare with this registered version instead of the champion.

    Returns:
        The metrics written (undefined values as ``None``).

    Raises:
        InputError: A missing or invalid model, data dir or split, or a split whose test
            patients have no slices in the data dir.

    """
    cfg = section(params, "evaluate")
    model_path, plots_dir = Path(model_path), Path(plots_dir)
    if not model_path.is_file():
        raise InputError(model_path, "model checkpoint not found")
    data = load_data_dir(data_dir)
    test_patients = list(read_split(split_path, data)["test"])
    if not test_patients:
        raise InputError(split_path, "the split has no test patients")
    device = select_device(cfg.get("device", "auto"), setting="evaluate.device")
    configure_backends(cfg.get("cudnn_benchmark", True))
    decision = float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))
    kept = min(float(cfg.get("score_threshold", 0.05)), decision)  # answers must survive too
    model, ckpt = load_detector(model_path, device, kept, cfg.get("channels_last", False))
    metrics, aware, counts, results = evaluate_detector(
        model, ckpt["preprocess"], data, test_patients, device, cfg
    )
    metrics = json_safe(metrics | {"model": str(model_path)})
    names = {int(c["id"]): str(c["name"]) for c in data.categories}
    plots = [
        *write_pr_curves(aware, names, plots_dir),
        *write_confusion(counts.confusion, counts.class_ids, names, plots_dir),
    ]
    loss_png = write_loss_curve(plots_dir / "train_loss.csv", plots_dir / "train_loss.png")
    plots += [loss_png] if loss_png else []
    atomic_write_json(metrics_path, metrics)
    evidence = review_evaluation(
        model_path=model_path,
        checkpoint=ckpt,
        data=data,
        data_dir=data_dir,
        images=[r.image for r in results],
        results=results,
        truth={p: data.diagnosis(p) for p in test_patients},
        metrics=metrics,
        params=params,
        plots_dir=plots_dir,
        metrics_path=Path(metrics_path),
        device=device,
        against=review_against,
    )
    _log_to_training_run(model_path, Path(metrics_path), plots, metrics, evidence, data_dir)
    return metrics


def _log_to_training_run(
    model_path: Path,
    metrics_path: Path,
    plots: Sequence[Path],
    metrics: Mapping[str, Any],
    evidence: Mapping[str, Any],
    data_dir: str | PathLike[str],
) -> None:
    """Log metrics, plots, review and hold-out to the training run, if training recorded one."""
    run_id = train_run_id(model_path)
    if run_id is None:
        return

    with start_run(step="evaluate", run_id=run_id) as run:
        run.log_metrics(metrics)
        run.log_artifact(metrics_path, "evaluation")
        for plot in plots:
            run.log_artifact(plot, "evaluation/plots")
        for path in review_paths(metrics_path):
            run.log_artifact(path, REVIEW_DIR)
        run.log_table(evidence["patients"], f"{REVIEW_DIR}/patients.json")
        card = evidence["card"]["data"]
        run.log_dataset(data_dir, card["version"], "evaluation", card["synthetic"])
