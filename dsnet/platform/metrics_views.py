"""Views of ``metrics.json`` for the KFP UI: a Markdown report and a confusion matrix.

``dsnet evaluate`` writes ``metrics.json`` (see `dsnet.evaluation.evaluate`); the pipeline's
evaluate step shows the same numbers as a Markdown artifact and as a KFP ``ClassificationMetrics``
confusion matrix, which the UI renders as a heat map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSED = "missed"
SUMMARY_ROWS = (
    ("map50", "mAP@0.5 (class-aware)"),
    ("ap50_agnostic", "AP@0.5 (vertebral body, class-agnostic)"),
    ("recall", "recall (IoU >= 0.5 and right class)"),
    ("acc", "grade accuracy per slice"),
    ("patient_acc", "diagnosis accuracy per patient"),
    ("hu_baseline_acc", "HU-threshold baseline, per slice"),
    ("hu_baseline_patient_acc", "HU-threshold baseline, per patient"),
    ("fps", "images per second"),
)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluation_markdown(metrics: Mapping[str, Any]) -> str:
    """Render the evaluation metrics as Markdown tables.

    Args:
        metrics: The content of ``metrics.json`` (undefined values are ``None``).

    Returns:
        Markdown: headline metrics, AP per class and the confusion matrix.

    """
    lines = [
        "# DSNet evaluation on the hold-out patients",
        "",
        f"{_number(metrics.get('n_images'))} slices of {_number(metrics.get('n_patients'))} "
        f"patients, device {metrics.get('device', 'n/a')}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {_number(metrics.get(key))} |" for key, label in SUMMARY_ROWS]
    per_class = metrics.get("ap_per_class") or {}
    if per_class:
        lines += ["", "| class | AP@0.5 |", "|---|---|"]
        lines += [f"| {name} | {_number(ap)} |" for name, ap in per_class.items()]
    confusion = metrics.get("confusion_matrix")
    if confusion:
        lines += [
            "",
            "Confusion matrix (rows: true class, columns: the model's answer):",
            "",
            "| true \\ answer | " + " | ".join(confusion["columns"]) + " |",
            "|---" * (len(confusion["columns"]) + 1) + "|",
        ]
        for name, row in zip(confusion["rows"], confusion["matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def kfp_confusion_matrix(metrics: Mapping[str, Any]) -> tuple[list[str], list[list[int]]]:
    """The confusion matrix in the square form ``ClassificationMetrics`` needs.

    ``metrics.json`` has one row per true class and one column per answered class plus
    ``missed`` (no answer at the decision threshold). KFP wants the same categories on
    both axes, so a ``missed`` row of zeros is added (nothing is truly "missed").

    Args:
        metrics: The content of ``metrics.json``.

    Returns:
        ``(categories, matrix)``: names ``[normal, osteopenia, osteoporosis, missed]`` and
        the 4 x 4 count matrix, rows true class, columns answer.

    Raises:
        KeyError: The metrics have no confusion matrix.
        ValueError: A column without a row other than ``missed``.

    """
    confusion = metrics["confusion_matrix"]
    categories = list(confusion["columns"])
    matrix = [[int(v) for v in row] for row in confusion["matrix"]]
    for name in categories[len(matrix) :]:
        if name != MISSED:
            raise ValueError(f"unexpected confusion column {name!r} without a row")
        matrix.append([0] * len(categories))
    return categories, matrix
