"""Drawing on an axial slice: the pixel grid in anatomical millimetres, and simple shapes.

Coordinates. The *anatomy frame* (u, v) is in millimetres with its origin at the centre
of the vertebral body; +u points to the patient's left (image right) and +v posterior
(image down), i.e. the DICOM patient axes x, y with the patient's roll removed. The
*scanner frame* (x, y) is the same but fixed to the scanner, origin at the centre of the
scanner's isocentre. Pixel (row r, col c) has its centre at
``x = cx + (c - (W - 1) / 2) * spacing``, ``y = cy + (r - (H - 1) / 2) * spacing``, where
(cx, cy) is the centre of the reconstruction field of view (the isocentre unless the
reconstruction is targeted).

Every shape knows a bounding circle, so painting evaluates it only on the few pixels
around it (vectorised numpy on a window), which keeps a 512 x 512 slice cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Pose:
    """Where the anatomy frame sits in the scanner frame.

    Attributes:
        angle_deg: Roll of the patient about the z axis (positive turns +u towards +y).
        origin_xy: Scanner coordinates (mm) of the anatomy origin (vertebral body centre).

    """

    angle_deg: float
    origin_xy: tuple[float, float]

    def to_scanner(self, u: float, v: float) -> tuple[float, float]:
        """Map an anatomy point (u, v) mm to scanner coordinates (x, y) mm."""
        cos, sin = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        return self.origin_xy[0] + cos * u - sin * v, self.origin_xy[1] + sin * u + cos * v


class Canvas:
    """The pixel grid of one slice with the anatomy coordinates of every pixel centre.

    Args:
        size: Rows = columns of the image (512).
        spacing: Pixel spacing in mm (square pixels).
        pose: Where the anatomy frame lies in the scanner frame.

    Attributes:
        x, y: float32 [size, size] scanner coordinates (mm) of the pixel centres.
        u, v: float32 [size, size] anatomy coordinates (mm) of the pixel centres.

    """

    def __init__(
        self, size: int, spacing: float, pose: Pose, centre_xy: tuple[float, float] = (0.0, 0.0)
    ) -> None:
        self.size = size
        self.spacing = spacing
        self.pose = pose
        self.centre_xy = (float(centre_xy[0]), float(centre_xy[1]))
        axis = ((np.arange(size, dtype=np.float32) - (size - 1) / 2) * spacing).astype(np.float32)
        x_axis = axis + np.float32(self.centre_xy[0])
        y_axis = axis + np.float32(self.centre_xy[1])
        self.x = np.broadcast_to(x_axis[None, :], (size, size))
        self.y = np.broadcast_to(y_axis[:, None], (size, size))
        cos = np.float32(math.cos(math.radians(pose.angle_deg)))
        sin = np.float32(math.sin(math.radians(pose.angle_deg)))
        dx = self.x - np.float32(pose.origin_xy[0])
        dy = self.y - np.float32(pose.origin_xy[1])
        self.u = cos * dx + sin * dy
        self.v = -sin * dx + cos * dy

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        """Scanner (x, y) mm -> fractional (row, col) of the pixel grid."""
        centre = (self.size - 1) / 2
        cx, cy = self.centre_xy
        return (y - cy) / self.spacing + centre, (x - cx) / self.spacing + centre

    def window(self, u: float, v: float, radius: float) -> tuple[slice, slice] | None:
        """The pixel window covering the anatomy disc (u, v, radius mm), or None if outside."""
        row, col = self.pixel(*self.pose.to_scanner(u, v))
        reach = radius / self.spacing + 1.0
        r0, r1 = max(math.floor(row - reach), 0), min(math.ceil(row + reach) + 1, self.size)
        c0, c1 = max(math.floor(col - reach), 0), min(math.ceil(col + reach) + 1, self.size)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def mask(self, shape: Shape) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Evaluate `shape` on its window: (window, bool mask [h, w]) or None if off-image."""
        win = self.window(*shape.bound())
        if win is None:
            return None
        return win, shape.contains(self.u[win], self.v[win])

    def paint(self, image: np.ndarray, layer: Fill) -> None:
        """Paint one layer into `image` float32 [size, size] (in place)."""
        found = self.mask(layer.shape)
        if found is None:
            return
        win, inside = found
        if layer.v_max is not None:
            inside &= self.v[win] < layer.v_max
        image[win][inside] = layer.hu


class Shape(Protocol):
    """A region of the anatomy plane."""

    def bound(self) -> tuple[float, float, float]:
        """A disc (u, v, radius) in mm that contains the shape."""
        ...

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Bool array: which points (u, v) (mm, any equal shapes) lie inside."""
        ...


@dataclass(frozen=True)
class Ellipse(Shape):
    """A (super-)ellipse ``|u'/a|^p + |v'/b|^p <= 1`` in its own rotated frame.

    Attributes:
        u, v: Centre (mm).
        a, b: Semi-axes along the shape's own u and v axes (mm).
        angle_deg: Rotation of the shape's axes (positive turns +u towards +v).
        power: 2 for an ellipse, larger for a boxier outline.

    """

    u: float
    v: float
    a: float
    b: float
    angle_deg: float = 0.0
    power: float = 2.0

    def bound(self) -> tuple[float, float, float]:  # noqa: D102
        scale = 2 ** (0.5 - 1 / self.power) if self.power > 2 else 1.0
        return self.u, self.v, max(self.a, self.b) * scale

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:  # noqa: D102
        du, dv = u - np.float32(self.u), v - np.float32(self.v)
        if self.angle_deg:
            cos = np.float32(math.cos(math.radians(self.angle_deg)))
            sin = np.float32(math.sin(math.radians(self.angle_deg)))
            du, dv = cos * du + sin * dv, -sin * du + cos * dv
        if self.power == 2.0:
            return (du / np.float32(self.a)) ** 2 + (dv / np.float32(self.b)) ** 2 <= 1.0
        p = np.float32(self.power)
        return np.abs(du / np.float32(self.a)) ** p + np.abs(dv / np.float32(self.b)) ** p <= 1.0


@dataclass(frozen=True)
class Capsule(Shape):
    """All points within `radius` of the segment (u0, v0)-(u1, v1); a bone process or strut.

    The radius may taper linearly from `radius` at the start to `radius_end` at the end.
    """

    u0: float
    v0: float
    u1: float
    v1: float
    radius: float
    radius_end: float | None = None

    def bound(self) -> tuple[float, float, float]:  # noqa: D102
        half = math.hypot(self.u1 - self.u0, self.v1 - self.v0) / 2
        return (
            (self.u0 + self.u1) / 2,
            (self.v0 + self.v1) / 2,
            half + max(self.radius, self.radius_end or 0.0),
        )

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:  # noqa: D102
        du, dv = self.u1 - self.u0, self.v1 - self.v0
        length2 = max(du * du + dv * dv, 1e-9)
        t = np.clip(((u - self.u0) * du + (v - self.v0) * dv) / np.float32(length2), 0.0, 1.0)
        dist2 = (u - self.u0 - t * du) ** 2 + (v - self.v0 - t * dv) ** 2
        end = self.radius if self.radius_end is None else self.radius_end
        radius = self.radius + (end - self.radius) * t
        return dist2 <= radius * radius


@dataclass(frozen=True)
class Intersection(Shape):
    """The part of `first` that also lies in `second` (e.g. an organ within the cavity)."""

    first: Shape
    second: Shape

    def bound(self) -> tuple[float, float, float]:  # noqa: D102
        return self.second.bound()

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.first.contains(u, v) & self.second.contains(u, v)


@dataclass(frozen=True)
class Fill:
    """One drawing step: set the pixels of `shape` to `hu`.

    Attributes:
        shape: The region.
        hu: The value painted (Hounsfield units).
        v_max: If set, only the part of the region anterior to ``v = v_max`` is painted
            (a gas-fluid level in a supine patient, the flattened back on the table).

    """

    shape: Shape
    hu: float
    v_max: float | None = None
