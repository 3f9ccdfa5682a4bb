"""Per-epoch training history: records and ``plots/train_loss.csv`` (DVC plots format).

One row per epoch with the mean total loss, each Faster R-CNN loss component, the
learning rate of the epoch's last step and the epoch's throughput (images/s, all ranks).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsnet.core.fsutil import atomic_write_text

LOSS_COMPONENTS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
CSV_COLUMNS = ("epoch", "loss", *LOSS_COMPONENTS, "lr", "images_per_s")


def write_loss_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the history `rows` (dicts with `CSV_COLUMNS` keys) to `path` atomically.

    Args:
        path: Destination, usually ``plots/train_loss.csv``.
        rows: One mapping per epoch, in epoch order.

    Returns:
        The written path.

    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format(row[key]) for key in CSV_COLUMNS})
    return atomic_write_text(path, buffer.getvalue())


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
