"""Evaluation plots as files: PNG for people, CSV for ``dvc plots``.

Files written under a plots folder (each atomically, so an evaluation can share the
folder with the training step's ``train_loss.csv``):

- ``pr_curves.png`` / ``pr_curves.csv``: COCO 101-point interpolated precision per class
  at IoU 0.5; CSV columns ``recall,<class>...`` (``dvc plots``: x=recall, y=classes).
- ``confusion_matrix.png`` / ``confusion.csv``: one row per ground-truth box with
  ``actual,predicted`` class names (``missed`` when nothing answered it); DVC's
  ``confusion`` template reads it with x=actual, y=predicted.
- ``train_loss.png``: the ``loss*`` columns of ``train_loss.csv`` when it is present.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dsnet.core.fsutil import atomic_path, atomic_write_text
from dsnet.evaluation.coco import CocoAP

MISSED_NAME = "missed"


def _pyplot():
    import matplotlib  # lazy: select the headless Agg backend before pyplot is loaded

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend choice above

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_pr_curves(
    ap: CocoAP, class_names: Mapping[int, str], plots_dir: str | Path
) -> list[Path]:
    """Write the per-class precision-recall curves (PNG + CSV).

    Args:
        ap: Result of `dsnet.evaluation.coco.average_precision` (class-aware).
        class_names: Category id -> name.
        plots_dir: Destination folder.

    Returns:
        The written paths.

    """
    plots_dir = Path(plots_dir)
    ids = [c for c in class_names if c in ap.precision]
    recall = ap.recall_thresholds
    # Every class gets a column (blank when absent from the hold-out) so the DVC plot
    # definition, which names all classes, stays valid on small test sets.
    rows = [
        [
            f"{r:.2f}",
            *(f"{ap.precision[c][i]:.6f}" if c in ap.precision else "" for c in class_names),
        ]
        for i, r in enumerate(recall)
    ]
    csv_path = atomic_write_text(
        plots_dir / "pr_curves.csv", _csv_text(["recall", *class_names.values()], rows)
    )
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5.5, 4.5))
    for c in ids:
        axis.plot(
            recall, ap.precision[c], label=f"{class_names[c]} (AP50 {ap.ap_per_class[c]:.3f})"
        )
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axis.set_title(f"Precision-recall at IoU 0.5 (mAP50 {ap.mean_ap:.3f})")
    axis.grid(alpha=0.3)
    if ids:
        axis.legend(loc="lower left")
    return [csv_path, _save(fig, plots_dir / "pr_curves.png")]


def write_confusion(
    confusion: np.ndarray,
    class_ids: Sequence[int],
    class_names: Mapping[int, str],
    plots_dir: str | Path,
) -> list[Path]:
    """Write the confusion matrix (PNG) and its per-box rows (CSV for ``dvc plots``).

    Args:
        confusion: int[K, K + 1], rows = true class in `class_ids` order, columns = the
            answer's class, last column = missed.
        class_ids: Row/column order.
        class_names: Category id -> name.
        plots_dir: Destination folder.

    Returns:
        The written paths.

    """
    plots_dir = Path(plots_dir)
    rows_names = [class_names[c] for c in class_ids]
    col_names = [*rows_names, MISSED_NAME]
    rows = [
        [rows_names[i], col_names[j]]
        for i in range(confusion.shape[0])
        for j in range(confusion.shape[1])
        for _ in range(int(confusion[i, j]))
    ]
    csv_path = atomic_write_text(
        plots_dir / "confusion.csv", _csv_text(["actual", "predicted"], rows)
    )
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5.5, 4.2))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(col_names)), col_names, rotation=30, ha="right")
    axis.set_yticks(range(len(rows_names)), rows_names)
    axis.set(xlabel="predicted (answer of the detector)", ylabel="actual (DXA class)")
    top = confusion.max() if confusion.size else 0
    for (i, j), value in np.ndenumerate(confusion):
        colour = "white" if top and value > top / 2 else "black"
        axis.text(j, i, str(int(value)), ha="center", va="center", color=colour)
    axis.set_title("Confusion matrix (per ground-truth box)")
    return [csv_path, _save(fig, plots_dir / "confusion_matrix.png")]


def loss_series(train_loss_csv: str | Path) -> tuple[str, dict[str, list[tuple[float, float]]]]:
    """Read the loss curves of a training log.

    Args:
        train_loss_csv: CSV with a header; its first column is the x axis (epoch or
            step); every numeric column whose name starts with ``loss`` is a curve (all
            numeric columns when none does), so ``lr`` or ``images_per_s`` stay out.

    Returns:
        ``(x_name, {column: [(x, y), ...]})``; empty curves are left out, and a missing
        or empty file gives ``("", {})``.

    """
    train_loss_csv = Path(train_loss_csv)
    if not train_loss_csv.is_file():
        return "", {}
    with train_loss_csv.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    if not records:
        return "", {}
    x_name, *columns = records[0].keys()
    columns = [name for name in columns if name.startswith("loss")] or columns
    series: dict[str, list[tuple[float, float]]] = {name: [] for name in columns}
    for record in records:
        try:
            x = float(record[x_name])
        except (TypeError, ValueError):
            continue
        for name in columns:
            try:
                series[name].append((x, float(record[name])))
            except (TypeError, ValueError):
                continue
    return x_name, {name: points for name, points in series.items() if points}


def write_loss_curve(train_loss_csv: str | Path, out_png: str | Path) -> Path | None:
    """Plot the loss curves of the training log (`loss_series`) against epoch/step.

    Args:
        train_loss_csv: The training log (``train_loss.csv`` of ``dsnet train``).
        out_png: Destination PNG.

    Returns:
        `out_png`, or ``None`` when the CSV is absent or has no numeric rows.

    """
    x_name, series = loss_series(train_loss_csv)
    if not series:
        return None
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6, 4))
    for name, points in series.items():
        xs, ys = zip(*points, strict=True)
        axis.plot(xs, ys, label=name)
    axis.set(xlabel=x_name, ylabel="loss", title="Training loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _save(fig, Path(out_png))
