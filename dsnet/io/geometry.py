"""Slice orientation: from the stored pixel grid to the radiological display frame and back.

DICOM geometry (PS3.3 C.7.6.2), in LPS patient coordinates (x to the patient's left, y
posterior, z head): ImageOrientationPatient holds the *row cosine* (direction of
increasing column index) then the *column cosine* (direction of increasing row index);
PixelSpacing is (row spacing = distance between rows, column spacing); the centre of
stored pixel (r, c) lies at ``IPP + c * col_spacing * row_cosine + r * row_spacing *
column_cosine``.

The *display frame* is the radiological convention for an axial slice: display rows run
anterior to posterior (+y down the image, anterior at the top) and display columns run
from the patient's right to their left (+x across, patient right on the image's left).
Any axial storage - supine or prone, head or feet first, flipped or transposed - is one of
8 axis permutations/flips of it, found from ImageOrientationPatient. Accepted slices:

- the cosine closest to the patient x axis lies within `OBLIQUE_TOLERANCE_DEG` (5°) of it;
- the other one lies, seen from the head (projected on the axial x-y plane), within 5° of
  the y axis, and leaves that plane by at most `MAX_GANTRY_TILT_DEG` (30°): a *gantry
  tilt*, the rotation about the patient's left-right axis that CT scanners use to cut
  parallel to the discs. The tilted slice is used in its own plane, as the scanner
  reconstructed it.

Anything else - an in-plane rotation, a tilt about another axis, a steeper tilt, a
sagittal or coronal slice - is refused (`InputError`, one line naming the file).

Boxes and points use pixel-edge coordinates (pixel column j spans x in [j, j + 1)), so a
flip maps x to ``W - x`` and the mapping is exact both ways.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsnet.core.errors import InputError

OBLIQUE_TOLERANCE_DEG = 5.0
"""Largest in-plane rotation of the pixel axes (and tilt of the x cosine) accepted."""
MAX_GANTRY_TILT_DEG = 30.0
"""Largest gantry tilt (rotation about the patient x axis) accepted."""
AXIS_NAMES = ("x (right-left)", "y (anterior-posterior)", "z (foot-head)")
STANDARD_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""ImageOrientationPatient of a slice stored in the display frame (the common axial)."""


@dataclass(frozen=True)
class DisplayFrame:
    """How a stored slice becomes its display-frame image: transpose, then flips.

    ``display = stored`` (``.T`` if `transpose`), then rows reversed if `flip_rows` and
    columns reversed if `flip_cols`.

    Attributes:
        stored_shape: (Rows, Columns) of the stored pixel grid.
        stored_spacing: PixelSpacing (row spacing, column spacing) in mm.
        transpose: Display rows come from stored columns (the row cosine runs along y).
        flip_rows: Display rows are reversed (after the transpose).
        flip_cols: Display columns are reversed (after the transpose).

    """

    stored_shape: tuple[int, int]
    stored_spacing: tuple[float, float]
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def display_shape(self) -> tuple[int, int]:
        """(H, W) of the display-frame image."""
        rows, cols = self.stored_shape
        return (cols, rows) if self.transpose else (rows, cols)

    @property
    def display_spacing(self) -> tuple[float, float]:
        """(row spacing, column spacing) in mm of the display-frame image."""
        row, col = self.stored_spacing
        return (col, row) if self.transpose else (row, col)

    @property
    def is_identity(self) -> bool:
        """True when the slice is stored in the display frame already."""
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def to_display(self, image: np.ndarray) -> np.ndarray:
        """Stored [..., Rows, Columns] array -> display-frame [..., H, W] array (a copy)."""
        out = np.swapaxes(image, -1, -2) if self.transpose else image
        if self.flip_rows:
            out = out[..., ::-1, :]
        if self.flip_cols:
            out = out[..., ::-1]
        return np.ascontiguousarray(out)

    def to_stored(self, image: np.ndarray) -> np.ndarray:
        """Display-frame [..., H, W] array -> stored [..., Rows, Columns] (inverse, a copy)."""
        out = image[..., ::-1, :] if self.flip_rows else image
        if self.flip_cols:
            out = out[..., ::-1]
        if self.transpose:
            out = np.swapaxes(out, -1, -2)
        return np.ascontiguousarray(out)

    def points_to_display(self, xy: np.ndarray) -> np.ndarray:
        """Stored pixel-edge points [N, 2] (x = column, y = row) -> display points [N, 2]."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        out = xy[:, ::-1].copy() if self.transpose else xy.copy()
        height, width = self.display_shape
        if self.flip_cols:
            out[:, 0] = width - out[:, 0]
        if self.flip_rows:
            out[:, 1] = height - out[:, 1]
        return out

    def points_to_stored(self, xy: np.ndarray) -> np.ndarray:
        """Display pixel-edge points [N, 2] -> stored points [N, 2] (inverse, exact)."""
        out = np.asarray(xy, dtype=np.float64).reshape(-1, 2).copy()
        height, width = self.display_shape
        if self.flip_cols:
            out[:, 0] = width - out[:, 0]
        if self.flip_rows:
            out[:, 1] = height - out[:, 1]
        return out[:, ::-1].copy() if self.transpose else out

    def boxes_to_display(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Stored-grid boxes [N, 4] (x1, y1, x2, y2) -> display-frame boxes [N, 4] float64."""
        return _map_boxes(boxes_xyxy, self.points_to_display)

    def boxes_to_stored(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Display-frame boxes [N, 4] -> stored-grid boxes [N, 4] float64 (exact inverse)."""
        return _map_boxes(boxes_xyxy, self.points_to_stored)

    def stored_orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient of this storage of a display-frame slice.

        Returns:
            The row cosine (stored column direction) then the column cosine (stored row
            direction), each a signed patient axis, for a slice whose display frame has
            `STANDARD_ORIENTATION`.

        """
        origin = self.points_to_display(np.array([[0.5, 0.5]]))[0]
        along_col = self.points_to_display(np.array([[1.5, 0.5]]))[0] - origin
        along_row = self.points_to_display(np.array([[0.5, 1.5]]))[0] - origin
        # display x is patient +x, display y is patient +y
        row_cosine = (float(along_col[0]), float(along_col[1]), 0.0)
        column_cosine = (float(along_row[0]), float(along_row[1]), 0.0)
        return tuple(v + 0.0 for v in (*row_cosine, *column_cosine))  # no -0.0

    def stored_position(self, display_position: Sequence[float]) -> tuple[float, float, float]:
        """ImagePositionPatient of this storage, given that of the display-frame slice.

        Args:
            display_position: Patient (x, y, z) mm of the centre of display pixel [0, 0].

        Returns:
            Patient (x, y, z) mm of the centre of stored pixel [0, 0].

        """
        x, y = self.points_to_display(np.array([[0.5, 0.5]]))[0]
        row_mm, col_mm = self.display_spacing
        px, py, pz = (float(v) for v in display_position)
        return (px + (x - 0.5) * col_mm, py + (y - 0.5) * row_mm, pz)


def display_frame(
    orientation: Sequence[float] | None,
    spacing: tuple[float, float],
    shape: tuple[int, int],
    source: object = "slice",
) -> DisplayFrame:
    """Find how a stored axial slice maps to the radiological display frame.

    Args:
        orientation: ImageOrientationPatient (6 cosines), or None: then the slice is taken
            to be stored in the display frame (`STANDARD_ORIENTATION`).
        spacing: PixelSpacing (row spacing, column spacing) in mm.
        shape: (Rows, Columns) of the stored pixels.
        source: What to name in an error (the file).

    Returns:
        The `DisplayFrame`.

    Raises:
        InputError: (one line naming `source`) an oblique slice (module docstring: in-plane
            rotation or x-cosine tilt over `OBLIQUE_TOLERANCE_DEG`, gantry tilt over
            `MAX_GANTRY_TILT_DEG`), a slice that is not axial, or degenerate cosines.

    """
    frame = DisplayFrame((int(shape[0]), int(shape[1])), (float(spacing[0]), float(spacing[1])))
    if orientation is None:
        return frame
    row, col = (_unit(c, orientation, source) for c in (orientation[:3], orientation[3:]))
    x_cosine, which = (row, "row") if abs(row[0]) >= abs(col[0]) else (col, "column")
    other, other_name = (col, "column") if which == "row" else (row, "row")
    x_angle = _degrees(abs(x_cosine[0]))
    in_plane = math.degrees(math.atan2(abs(other[0]), abs(other[1])))
    tilt = _degrees(math.hypot(other[0], other[1]))
    if abs(other[1]) < abs(other[2]) or abs(x_cosine[0]) < abs(x_cosine[2]):
        raise InputError(
            source,
            f"ImageOrientationPatient {_cosines(orientation)} is not an axial slice "
            f"(a pixel axis runs along {AXIS_NAMES[2]})",
        )
    for angle, limit, what in (
        (x_angle, OBLIQUE_TOLERANCE_DEG, f"its {which} cosine is {x_angle:.1f}° off x"),
        (in_plane, OBLIQUE_TOLERANCE_DEG, f"it is rotated {in_plane:.1f}° in plane"),
        (tilt, MAX_GANTRY_TILT_DEG, f"its gantry tilt is {tilt:.1f}°"),
    ):
        if angle > limit:
            raise InputError(
                source,
                f"oblique slice: ImageOrientationPatient {_cosines(orientation)}: {what} "
                f"(accepted: {OBLIQUE_TOLERANCE_DEG:g}° in plane, gantry tilt up to "
                f"{MAX_GANTRY_TILT_DEG:g}°); only axial slices are supported",
            )
    x_sign, y_sign = float(np.sign(x_cosine[0])), float(np.sign(other[1]))
    if which == "row":  # stored columns run along x: no transpose
        return DisplayFrame(frame.stored_shape, frame.stored_spacing, False, y_sign < 0, x_sign < 0)
    return DisplayFrame(frame.stored_shape, frame.stored_spacing, True, y_sign < 0, x_sign < 0)


def storage_frames(shape: tuple[int, int], spacing: tuple[float, float]) -> list[DisplayFrame]:
    """The 8 flip/transpose storages of a display-frame slice of `shape` and `spacing`.

    Args:
        shape: (H, W) of the display-frame image.
        spacing: (row, col) spacing of the display-frame image in mm.

    Returns:
        Eight frames (the identity first) whose ``display_shape`` is `shape`.

    """
    frames = []
    for transpose in (False, True):
        stored_shape = (shape[1], shape[0]) if transpose else tuple(shape)
        stored_spacing = (spacing[1], spacing[0]) if transpose else tuple(spacing)
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                frames.append(
                    DisplayFrame(stored_shape, stored_spacing, transpose, flip_rows, flip_cols)
                )
    return frames


def patient_points(
    xy: np.ndarray,
    position: Sequence[float],
    orientation: Sequence[float] | None,
    spacing: tuple[float, float],
) -> np.ndarray:
    """Patient (x, y, z) mm of stored pixel-edge points, from the slice's geometry tags.

    Args:
        xy: [N, 2] (x = column, y = row) pixel-edge coordinates of the stored grid; the
            centre of pixel (r, c) is (c + 0.5, r + 0.5).
        position: ImagePositionPatient (centre of stored pixel [0, 0]).
        orientation: ImageOrientationPatient (None: `STANDARD_ORIENTATION`).
        spacing: PixelSpacing (row spacing, column spacing) mm.

    Returns:
        float64 [N, 3] LPS patient coordinates.

    """
    cosines = np.asarray(orientation if orientation is not None else STANDARD_ORIENTATION, float)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    cols, rows = xy[:, 0] - 0.5, xy[:, 1] - 0.5
    return (
        np.asarray(position, dtype=np.float64)[None, :]
        + (cols * spacing[1])[:, None] * cosines[None, :3]
        + (rows * spacing[0])[:, None] * cosines[None, 3:]
    )


def _unit(cosine: Sequence[float], orientation: Sequence[float], source: object) -> np.ndarray:
    """A direction cosine scaled to unit length (InputError when it has none)."""
    vector = np.asarray(cosine, dtype=np.float64)
    length = float(np.linalg.norm(vector))
    if not length > 0:
        raise InputError(source, f"ImageOrientationPatient {_cosines(orientation)} is degenerate")
    return vector / length


def _degrees(cos: float) -> float:
    """The angle (degrees) whose cosine is `cos` (clipped to [0, 1])."""
    return math.degrees(math.acos(min(1.0, max(0.0, cos))))


def _map_boxes(boxes_xyxy: np.ndarray, points: object) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    first = points(boxes[:, :2])
    second = points(boxes[:, 2:])
    return np.concatenate([np.minimum(first, second), np.maximum(first, second)], axis=1)


def _cosines(orientation: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.3g}" for v in orientation) + "]"
