"""The canonical model frame: display orientation, canonical spacing, fixed square canvas.

Every slice the detector sees - in training, evaluation, ``dsnet predict`` and the MLflow
pyfunc - is made by `to_canonical`:

1. the stored pixels are turned into the radiological display frame (anterior at the
   top, patient right on the image's left; `dsnet.io.geometry`);
2. resampled to square pixels of ``spacing_mm`` (`dsnet.io.transforms.resample`);
3. placed on a ``canvas_px`` x ``canvas_px`` canvas: centred and padded with air when
   smaller, cropped around the body (centred on the extent of the pixels above
   `BODY_THRESHOLD_HU`, clamped to the image) when larger;
4. windowed into one channel per HU window.

The canvas is the detector's own input size (``min_size = max_size = canvas_px``), so
torchvision's `GeneralizedRCNNTransform` scales it by exactly 1 and the network sees
anatomy at ``spacing_mm`` per pixel whatever the scanner's matrix, field of view or
storage orientation. `CanonicalPlacement` maps boxes between the canvas and the *stored*
pixel grid exactly (pixel-edge coordinates, x = column).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsnet.io.geometry import DisplayFrame
from dsnet.io.transforms import resample, window

AIR_HU = -1000.0
"""Fill value of the canvas outside the slice."""
BODY_THRESHOLD_HU = -500.0
"""Pixels above this are body (or table) when centring a crop."""
CANVAS_MULTIPLE = 32
"""The canvas side must be a multiple of this: torchvision pads batches to it."""


@dataclass(frozen=True)
class CanonicalPlacement:
    """Where a slice lies on the canvas, to map boxes between canvas and stored grid.

    Attributes:
        frame: Stored grid -> display frame (`dsnet.io.geometry.DisplayFrame`).
        scale: (sy, sx) display pixels per resampled pixel (`resample`).
        offset: (top, left) canvas position of the resampled image's corner (negative
            where the image was cropped).
        canvas_px: Side of the square canvas.

    """

    frame: DisplayFrame
    scale: tuple[float, float]
    offset: tuple[int, int]
    canvas_px: int

    def canvas_to_display(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Canvas boxes [N, 4] -> display-frame boxes [N, 4] (float64) of the original slice."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        top, left = self.offset
        sy, sx = self.scale
        shift = np.array([left, top, left, top], dtype=np.float64)
        return (boxes - shift) * np.array([sx, sy, sx, sy])

    def display_to_canvas(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Display-frame boxes [N, 4] -> canvas boxes [N, 4] float64 (inverse, not clipped)."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        top, left = self.offset
        sy, sx = self.scale
        shift = np.array([left, top, left, top], dtype=np.float64)
        return boxes / np.array([sx, sy, sx, sy]) + shift

    def canvas_to_stored(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Canvas boxes [N, 4] -> boxes [N, 4] on the stored pixel grid, clipped to it."""
        boxes = self.frame.boxes_to_stored(self.canvas_to_display(boxes_xyxy))
        rows, cols = self.frame.stored_shape
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0.0, float(cols))
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0.0, float(rows))
        return boxes

    def stored_to_canvas(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Stored-grid boxes [N, 4] -> canvas boxes [N, 4] float64 (not clipped)."""
        return self.display_to_canvas(self.frame.boxes_to_display(boxes_xyxy))


def check_canvas(canvas_px: object, source: object = "params preprocess.canvas_px") -> int:
    """Validate a canvas side: an integer >= `CANVAS_MULTIPLE`, a multiple of it.

    Raises:
        ValueError: (message naming `source`) otherwise.

    """
    if (
        isinstance(canvas_px, bool)
        or not isinstance(canvas_px, int | np.integer)
        or canvas_px < CANVAS_MULTIPLE
        or canvas_px % CANVAS_MULTIPLE
    ):
        raise ValueError(
            f"{source}: {canvas_px!r} is not a multiple of {CANVAS_MULTIPLE} px "
            f"(>= {CANVAS_MULTIPLE})"
        )
    return int(canvas_px)


def to_canonical_hu(
    hu: np.ndarray, frame: DisplayFrame, spacing_mm: float, canvas_px: int
) -> tuple[np.ndarray, CanonicalPlacement]:
    """Bring a stored HU slice onto the canonical canvas (steps 1-3 of the module docstring).

    Args:
        hu: float [Rows, Columns] Hounsfield units in stored order.
        frame: Its `DisplayFrame` (``CTSlice.frame``).
        spacing_mm: Canonical pixel spacing (params ``preprocess.spacing_mm``).
        canvas_px: Canvas side (params ``preprocess.canvas_px``).

    Returns:
        (canvas, placement): float32 [canvas_px, canvas_px] HU, air outside the slice.

    """
    canvas_px = check_canvas(canvas_px, "canvas_px")
    display = frame.to_display(np.asarray(hu, dtype=np.float32))
    resampled, scale = resample(display, frame.display_spacing, spacing_mm)
    body = resampled > np.float32(BODY_THRESHOLD_HU)
    top = _offset(resampled.shape[0], canvas_px, body.any(axis=1))
    left = _offset(resampled.shape[1], canvas_px, body.any(axis=0))
    canvas = np.full((canvas_px, canvas_px), AIR_HU, dtype=np.float32)
    src_y, dst_y = _overlap(top, resampled.shape[0], canvas_px)
    src_x, dst_x = _overlap(left, resampled.shape[1], canvas_px)
    canvas[dst_y, dst_x] = resampled[src_y, src_x]
    return canvas, CanonicalPlacement(frame, scale, (top, left), canvas_px)


def to_canonical(
    hu: np.ndarray,
    frame: DisplayFrame,
    spacing_mm: float,
    canvas_px: int,
    windows: Sequence[Sequence[float]],
) -> tuple[np.ndarray, CanonicalPlacement]:
    """Build the detector input of a slice: canonical canvas, one channel per HU window.

    Args:
        hu: float [Rows, Columns] Hounsfield units in stored order.
        frame: Its `DisplayFrame`.
        spacing_mm: Canonical pixel spacing (mm).
        canvas_px: Canvas side (px).
        windows: [C] (low, high) HU windows.

    Returns:
        (image, placement): float32 [C, canvas_px, canvas_px] in [0, 1].

    """
    if len(windows) == 0:
        raise ValueError("at least one HU window is required")
    canvas, placement = to_canonical_hu(hu, frame, spacing_mm, canvas_px)
    channels = [window(canvas, float(low), float(high)) for low, high in windows]
    return np.stack(channels, axis=0), placement


def _offset(size: int, canvas: int, body: np.ndarray) -> int:
    """Canvas position of an axis of `size` pixels: centred pad, or a crop around the body.

    Args:
        size: Pixels of the resampled image along the axis.
        canvas: Canvas pixels along the axis.
        body: bool [size], pixels along the axis that hold body.

    Returns:
        The canvas coordinate of the image's first pixel (<= 0 when cropping).

    """
    if size <= canvas:
        return (canvas - size) // 2
    where = np.flatnonzero(body)
    centre = (where[0] + where[-1] + 1) / 2 if where.size else size / 2
    start = int(round(centre - canvas / 2))
    return -min(max(start, 0), size - canvas)


def _overlap(offset: int, size: int, canvas: int) -> tuple[slice, slice]:
    """Source and canvas slices along one axis for an image placed at `offset`."""
    start = max(-offset, 0)
    stop = min(canvas - offset, size)
    return slice(start, stop), slice(start + offset, stop + offset)
