"""A contact sheet of a data dir, for a person to look at the data.

Each tile shows one slice twice: the whole slice in a soft-tissue window (W 400 / L 40)
with the annotated vertebral-body box, and the box region enlarged in a bone window
(W 1400 / L 350) with the trabecular ROI of the HU baseline. The title gives patient,
level, class, DXA T-score and the ROI mean HU. Slices are drawn class by class in turn,
so all classes appear when the sheet has room.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pydicom
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Rectangle
from pydicom.pixels import apply_rescale

from dsnet.core.errors import InputError
from dsnet.core.fsutil import atomic_path
from dsnet.data.classes import CLASS_NAMES
from dsnet.models.hu_baseline import trabecular_mean_hu, trabecular_roi

COLUMNS = 4
TILE_PX = (520, 290)  # width, height of one tile in the PNG
DPI = 100
SOFT_WINDOW = (-160.0, 240.0)
BONE_WINDOW = (-350.0, 1050.0)
CLASS_COLOURS = {1: "#2ca02c", 2: "#ff9f1c", 3: "#d62728"}


def sheet_size(n: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG for `n` slices."""
    columns = min(n, COLUMNS)
    return columns * TILE_PX[0], math.ceil(n / columns) * TILE_PX[1]


def _pick(images: list[dict], categories: dict[int, int], n: int, seed: int) -> list[dict]:
    """Up to `n` images, drawn class by class in turn, shuffled within class by `seed`."""
    rng = np.random.default_rng(seed)
    pools = []
    for class_id in sorted(set(categories.values())):
        pool = [im for im in images if categories[im["id"]] == class_id]
        pools.append([pool[i] for i in rng.permutation(len(pool))])
    picked: list[dict] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def _read_hu(path: Path) -> np.ndarray:

    try:
        ds = pydicom.dcmread(path)
        return np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float32)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad input
        raise InputError(path, f"cannot read DICOM pixels: {exc}") from None


def render_contact_sheet(
    data_dir: str | os.PathLike[str], out_png: str | os.PathLike[str], n: int = 12, seed: int = 0
) -> Path:
    """Draw `n` annotated slices of a data dir into one PNG.

    Args:
        data_dir: A data dir (``annotations.json`` + ``dicom/``).
        out_png: The PNG to write (atomically); size is `sheet_size` of the slices drawn.
        n: Number of slices (fewer if the data dir has fewer).
        seed: Which slices are drawn.

    Returns:
        The path of the PNG.

    Raises:
        InputError: If `n` < 1, the data dir has no annotations or a file is unreadable.
    """
    if n < 1:
        raise InputError("n", f"must be at least 1, got {n}")
    data_dir = Path(data_dir)
    coco_path = data_dir / "annotations.json"
    try:
        coco = json.loads(coco_path.read_text(encoding="utf-8"))
        boxes = {a["image_id"]: a for a in coco["annotations"]}
        images = [im for im in coco["images"] if im["id"] in boxes]
    except FileNotFoundError:
        raise InputError(coco_path, "not found (is this a data dir?)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(coco_path, f"not COCO annotations: {exc}") from None
    picked = _pick(images, {i: boxes[i]["category_id"] for i in boxes}, n, seed)
    if not picked:
        raise InputError(coco_path, "no annotated images")

    width, height = sheet_size(len(picked))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="black")
    columns = min(len(picked), COLUMNS)
    rows = math.ceil(len(picked) / columns)
    for index, image in enumerate(picked):
        ann = boxes[image["id"]]
        hu = _read_hu(data_dir / image["file_name"])
        x, y, w, h = ann["bbox"]
        box = (x, y, x + w, y + h)
        colour = CLASS_COLOURS.get(ann["category_id"], "white")
        row, col = divmod(index, columns)
        left, bottom = col / columns, 1.0 - (row + 1) / rows
        tile_w, tile_h = 1.0 / columns, 1.0 / rows
        full = fig.add_axes(
            (left + 0.01 * tile_w, bottom + 0.02 * tile_h, 0.47 * tile_w, 0.8 * tile_h)
        )
        zoom = fig.add_axes(
            (left + 0.51 * tile_w, bottom + 0.02 * tile_h, 0.47 * tile_w, 0.8 * tile_h)
        )
        full.imshow(
            hu, cmap="gray", vmin=SOFT_WINDOW[0], vmax=SOFT_WINDOW[1], interpolation="bilinear"
        )
        full.add_patch(
            Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.0)
        )
        margin = 0.35 * max(w, h)
        zoom.imshow(
            hu, cmap="gray", vmin=BONE_WINDOW[0], vmax=BONE_WINDOW[1], interpolation="nearest"
        )
        zoom.set_xlim(x - margin - 0.5, x + w + margin - 0.5)
        zoom.set_ylim(y + h + margin - 0.5, y - margin - 0.5)
        zoom.add_patch(
            Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=1.2)
        )
        roi = trabecular_roi(hu, box)
        rows_in, cols_in = np.nonzero(roi)
        zoom.add_patch(
            Ellipse(
                ((cols_in.min() + cols_in.max()) / 2, (rows_in.min() + rows_in.max()) / 2),
                cols_in.max() - cols_in.min() + 1,
                rows_in.max() - rows_in.min() + 1,
                fill=False,
                edgecolor="cyan",
                linewidth=0.8,
                linestyle="--",
            )
        )
        for axes in (full, zoom):
            axes.set_axis_off()
        title = (
            f"{image.get('patient_id', '?')} {image.get('vertebra', '?')}  "
            f"{CLASS_NAMES.get(ann['category_id'], ann['category_id'])}  "
            f"T {ann.get('t_score', float('nan')):+.2f}  ROI {trabecular_mean_hu(hu, box):.0f} HU"
        )
        fig.text(
            left + 0.5 * tile_w,
            bottom + 0.91 * tile_h,
            title,
            color=colour,
            ha="center",
            va="center",
            fontsize=10,
            family="monospace",
        )
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="black")
    return out_png
