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
(`dsnet.review`: bootstrap intervals, champion comparison, error gallery, per-patient table)
goes to ``review/`` beside ``metrics.json``. When a ``train_run.json`` with a ``run_id``
sits beside the model, the metrics, plots, review, per-patient table (``log_table``) and
the hold-out data set (``log_input``) are also logged to that MLflow run through
`dsnet.tracking`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from dsnet.config import section
from dsnet.errors import InputError
from dsnet.fsutil import atomic_write_json
from dsnet.metrics.coco import CocoAP, average_precision
from dsnet.metrics.detection import (
    ImageDetections,
    MatchCounts,
    answers,
    match_counts,
    patient_accuracy,
    patient_grades,
    top_detection,
    vertebra_labels_by_confidence,
    vertebra_mean_hu,
)
from dsnet.predict import DEFAULT_DECISION_THRESHOLD, DEFAULT_HU_THRESHOLDS, SliceDetections

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


@dataclass(frozen=True)
class SliceResult:
    """One evaluated slice: its ground truth, detections and HU-baseline readings.

    Attributes:
        image: The COCO image record (``id``, ``patient_id``, ``vertebra``, ...).
        detections: ImageDetections in original pixels.
        gt_mean_hu: float[G] trabecular mean HU inside each ground-truth box.
        pred_mean_hu: float[G] trabecular mean HU inside the detector's answer for each
            ground-truth box (``nan`` where the box was missed).
        seconds: Inference time of the slice (model input -> boxes in original pixels).

    """

    image: dict[str, Any]
    detections: ImageDetections
    gt_mean_hu: np.ndarray
    pred_mean_hu: np.ndarray
    seconds: float


def xywh_to_xyxy(bbox: Sequence[float]) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` (same pixel grid)."""
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def device_description(device: Any) -> str:
    """Describe the device the timings were taken on, for people."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip() + ", "
                break
    except OSError:
        pass
    return f"cpu ({cpu}{torch.get_num_threads()} threads)"


def synchronize(device: Any) -> None:
    """Wait for queued GPU work so that a timer measures it (no-op on the CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_test_set(
    model: Any,
    data: Any,
    images: Sequence[dict[str, Any]],
    preprocess: Mapping[str, Any],
    device: Any,
    warmup: int,
    decision_threshold: float,
    iou_threshold: float,
) -> list[SliceResult]:
    """Run the detector on each test slice, timing it after `warmup` untimed passes.

    Args:
        model: Detector in eval mode on `device`.
        data: The `DataDir` (image paths and annotations).
        images: The test images' COCO records.
        preprocess: The checkpoint's ``preprocess`` (spacing_mm, windows).
        device: torch device.
        warmup: Untimed forward passes on the first slice before timing starts.
        decision_threshold: Minimum score of an answer (for the HU in the answer's box).
        iou_threshold: Minimum IoU of an answer to its ground-truth box.

    Returns:
        One `SliceResult` per image, in `images` order.

    """
    from dsnet.io import read_slice
    from dsnet.predict import box_mean_hu, detect, model_input

    results = []
    for index, image in enumerate(images):
        ct = read_slice(data.image_path(image))
        tensor, scale = model_input(ct, preprocess)
        if index == 0:
            for _ in range(max(0, int(warmup))):
                detect(model, tensor, scale, ct.hu.shape, device)
        synchronize(device)
        tick = time.perf_counter()
        found: SliceDetections = detect(model, tensor, scale, ct.hu.shape, device)
        synchronize(device)
        seconds = time.perf_counter() - tick
        anns = data.annotations[image["id"]]
        gt_boxes = np.array([xywh_to_xyxy(a["bbox"]) for a in anns], dtype=np.float64)
        detections = ImageDetections(
            image_id=int(image["id"]),
            gt_boxes=gt_boxes.reshape(-1, 4),
            gt_labels=np.array([a["category_id"] for a in anns], dtype=np.int64),
            boxes=found.boxes,
            labels=found.labels,
            scores=found.scores,
        )
        _, answer = answers(detections, decision_threshold, iou_threshold)
        results.append(
            SliceResult(
                image=image,
                detections=detections,
                gt_mean_hu=np.array([box_mean_hu(ct.hu, b) for b in gt_boxes]),
                pred_mean_hu=np.array(
                    [box_mean_hu(ct.hu, found.boxes[i]) if i >= 0 else math.nan for i in answer]
                ),
                seconds=seconds,
            )
        )
    return results


def hu_class(mean_hu: float, thresholds: Sequence[float]) -> int | None:
    """HU-baseline class of a mean HU, ``None`` when the ROI gave no value."""
    from dsnet.data.hu_baseline import classify_hu

    if mean_hu is None or not math.isfinite(mean_hu):
        return None
    return int(classify_hu(float(mean_hu), tuple(thresholds)))


def hu_baseline_metrics(
    results: Sequence[SliceResult],
    truth: Mapping[str, int],
    thresholds: Sequence[float],
) -> dict[str, float]:
    """Accuracy of the HU-threshold baseline on the evaluated slices and patients.

    Args:
        results: Evaluated slices.
        truth: Patient id -> DXA diagnosis.
        thresholds: ``evaluate.hu_thresholds`` (normal above the first, osteoporosis at
            or below the second).

    Returns:
        ``hu_baseline_acc`` / ``hu_baseline_patient_acc`` (ROI in the ground-truth box)
        and ``hu_baseline_pred_box_acc`` / ``hu_baseline_pred_box_patient_acc`` (ROI in
        the detector's box; a missed body counts as wrong).

    """
    out: dict[str, float] = {}
    for name, readings in (
        ("hu_baseline", [r.gt_mean_hu for r in results]),
        ("hu_baseline_pred_box", [r.pred_mean_hu for r in results]),
    ):
        right = total = 0
        per_slice = []
        for result, values in zip(results, readings, strict=True):
            for label, value in zip(result.detections.gt_labels, values, strict=True):
                right += int(hu_class(value, thresholds) == int(label))
                total += 1
                per_slice.append((result.image["patient_id"], result.image["vertebra"], value))
        vertebrae = {
            key: hu_class(value, thresholds) for key, value in vertebra_mean_hu(per_slice).items()
        }
        out[f"{name}_acc"] = right / total if total else math.nan
        out[f"{name}_patient_acc"] = patient_accuracy(patient_grades(vertebrae), truth)
    return out


def compute_metrics(
    results: Sequence[SliceResult],
    categories: Sequence[Mapping[str, Any]],
    truth: Mapping[str, int],
    cfg: Mapping[str, Any],
) -> tuple[dict[str, Any], CocoAP, MatchCounts]:
    """All metrics of the evaluation from the evaluated slices (see the module docstring).

    Args:
        results: Evaluated slices.
        categories: COCO categories.
        truth: Patient id -> DXA diagnosis of the test patients.
        cfg: The ``evaluate`` parameters.

    Returns:
        ``(metrics, class-aware AP, match counts)``; the metrics dict lacks the speed and
        device entries, the other two feed the plots.

    """
    iou = float(cfg.get("iou_threshold", 0.5))
    threshold = float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))
    images = [{"id": int(r.image["id"])} for r in results]
    gt, dt = [], []
    for r in results:
        d = r.detections
        for box, label in zip(d.gt_boxes, d.gt_labels, strict=True):
            gt.append({"image_id": d.image_id, "category_id": int(label), "bbox": _xywh(box)})
        for box, label, score in zip(d.boxes, d.labels, d.scores, strict=True):
            dt.append(
                {
                    "image_id": d.image_id,
                    "category_id": int(label),
                    "bbox": _xywh(box),
                    "score": float(score),
                }
            )
    aware = average_precision(images, categories, gt, dt, iou_threshold=iou)
    agnostic = average_precision(images, categories, gt, dt, iou_threshold=iou, class_agnostic=True)
    class_ids = [int(c["id"]) for c in categories]
    counts = match_counts([r.detections for r in results], class_ids, threshold, iou)
    slices = []
    for r in results:
        label, score, _ = top_detection(r.detections, threshold)
        slices.append((r.image["patient_id"], r.image["vertebra"], label, score))
    grades = patient_grades(vertebra_labels_by_confidence(slices))
    names = {int(c["id"]): str(c["name"]) for c in categories}
    return (
        {
            "map50": aware.mean_ap,
            "ap_per_class": {names[c]: ap for c, ap in aware.ap_per_class.items()},
            "ap50_agnostic": agnostic.mean_ap,
            "recall": counts.recall,
            "acc": counts.accuracy,
            "patient_acc": patient_accuracy(grades, truth),
            **hu_baseline_metrics(results, truth, cfg.get("hu_thresholds", DEFAULT_HU_THRESHOLDS)),
            "confusion_matrix": {
                "rows": [names[c] for c in counts.class_ids],
                "columns": [*(names[c] for c in counts.class_ids), "missed"],
                "matrix": counts.confusion.tolist(),
            },
            "n_images": len(results),
            "n_gt_boxes": counts.n_gt,
            "n_patients": len(truth),
            "iou_threshold": iou,
            "decision_threshold": threshold,
            "score_threshold": float(cfg.get("score_threshold", 0.05)),
        },
        aware,
        counts,
    )


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (undefined metrics) by ``None`` so the JSON is valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


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
        model_path: ``model.pt`` (`dsnet.checkpoint`).
        data_dir: The data dir (DESIGN.md data contract).
        split_path: ``split.json``; its ``test`` patients are evaluated.
        metrics_path: Destination ``metrics.json`` (written atomically).
        plots_dir: Folder for the plot files (`dsnet.metrics.plots`).
        params: Parameters; the ``evaluate`` section is used (``score_threshold``,
            ``decision_threshold``, ``iou_threshold``, ``hu_thresholds``, ``fps_warmup``,
            ``device``, ``review``); ``register.model_name`` names the registered
            model whose champion the review compares with.
        review_against: Compare with this registered version instead of the champion.

    Returns:
        The metrics written (undefined values as ``None``).

    Raises:
        InputError: A missing or invalid model, data dir or split, or a split whose test
            patients have no slices in the data dir.

    """
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import read_split
    from dsnet.metrics.plots import write_confusion, write_loss_curve, write_pr_curves
    from dsnet.predict import load_detector
    from dsnet.review.step import review_evaluation
    from dsnet.training.device import select_device

    cfg = section(params, "evaluate")
    model_path, plots_dir = Path(model_path), Path(plots_dir)
    if not model_path.is_file():
        raise InputError(model_path, "model checkpoint not found")
    data = load_data_dir(data_dir)
    test_patients = list(read_split(split_path, data)["test"])
    if not test_patients:
        raise InputError(split_path, "the split has no test patients")
    images = data.images_of(test_patients)
    device = select_device(cfg.get("device", "auto"))
    decision = float(cfg.get("decision_threshold", DEFAULT_DECISION_THRESHOLD))
    kept = min(float(cfg.get("score_threshold", 0.05)), decision)  # answers must survive too
    model, ckpt = load_detector(model_path, device, kept)
    results = run_test_set(
        model,
        data,
        images,
        ckpt["preprocess"],
        device,
        warmup=int(cfg.get("fps_warmup", 3)),
        decision_threshold=decision,
        iou_threshold=float(cfg.get("iou_threshold", 0.5)),
    )
    truth = {p: data.diagnosis(p) for p in test_patients}
    metrics, aware, counts = compute_metrics(results, data.categories, truth, cfg)
    total = sum(r.seconds for r in results)
    metrics |= {
        "fps": len(results) / total if total > 0 else math.nan,
        "seconds_per_image": total / len(results),
        "device": device_description(device),
        "model": str(model_path),
    }
    metrics = json_safe(metrics)
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
        images=images,
        results=results,
        truth=truth,
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
    from dsnet.review.evidence import REVIEW_DIR, review_paths
    from dsnet.tracking import start_run

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
