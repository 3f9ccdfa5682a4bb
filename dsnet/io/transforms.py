"""HU windowing and resampling to a canonical pixel spacing (used by `dsnet.io.canonical`).

Coordinate convention (shared with torchvision boxes): continuous pixel-edge
coordinates. Pixel (row i, col j) covers x in [j, j + 1) and y in [i, i + 1); an image
of width W spans x in [0, W]. Boxes are [N, 4] arrays of (x1, y1, x2, y2) in pixels.

Scale convention: `scale = (sy, sx)` is the number of *original* pixels per *model*
(resampled) pixel along rows (y) and columns (x):

    sy = H / H',   sx = W / W',   with H' = round(H * row_spacing / target_mm)

so that the resampled image covers exactly the same field of view as the original
(its pixels are `target_mm` wide up to the rounding of H' and W'). A point maps as

    x_original = x_model * sx,   y_original = y_model * sy

(`dsnet.io.canonical.CanonicalPlacement`) and the resampling samples model pixel centre
(j + 0.5) at original position (j + 0.5) * sx, i.e. the same mapping (scipy's `grid_mode=True`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def window(hu: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map HU linearly so that `low` -> 0 and `high` -> 1, clipping outside.

    Args:
        hu: Hounsfield units, any shape.
        low: HU shown as black (0).
        high: HU shown as white (1); must exceed `low`.

    Returns:
        float32 array of the same shape with values in [0, 1].

    """
    if not high > low:
        raise ValueError(f"window high ({high}) must exceed low ({low})")
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def resampled_shape(
    shape: tuple[int, int], spacing: tuple[float, float], target_mm: float
) -> tuple[int, int]:
    """Return (H', W') of an image `shape` [H, W] at `spacing` (row, col) mm resampled."""
    _check_spacing(spacing, target_mm)
    return tuple(max(1, round(n * s / target_mm)) for n, s in zip(shape, spacing, strict=True))


def resample(
    hu: np.ndarray, spacing: tuple[float, float], target_mm: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample a slice to square pixels of `target_mm` (bilinear, anti-aliased).

    When an axis is shrunk by a factor s > 1 the image is first smoothed with a Gaussian
    of sigma (s - 1) / 2 pixels along it, so thin bright structures are averaged rather
    than aliased; enlarging axes are only interpolated.

    Args:
        hu: float [H, W] image (HU).
        spacing: (row, col) pixel spacing of `hu` in mm.
        target_mm: Output pixel spacing in mm (params `preprocess.spacing_mm`).

    Returns:
        (image, scale): float32 [H', W'] with H' = round(H * spacing[0] / target_mm) (at
        least 1, same for W'), and scale (sy, sx) = (H / H', W / W') original pixels per
        resampled pixel (see the module docstring).

    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2:
        raise ValueError(f"expected a 2-D [H, W] image, got shape {hu.shape}")
    out_shape = resampled_shape(hu.shape, spacing, target_mm)
    scale = (hu.shape[0] / out_shape[0], hu.shape[1] / out_shape[1])
    if out_shape == hu.shape:
        return hu.copy(), scale
    sigma = [max(0.0, (s - 1.0) / 2.0) for s in scale]
    smoothed = ndimage.gaussian_filter(hu, sigma, mode="nearest") if any(sigma) else hu
    zoom = (out_shape[0] / hu.shape[0], out_shape[1] / hu.shape[1])
    image = ndimage.zoom(smoothed, zoom, order=1, mode="nearest", grid_mode=True)
    return image.astype(np.float32, copy=False), scale


def _check_spacing(spacing: tuple[float, float], target_mm: float) -> None:
    """Raise ValueError unless both spacings and the target are positive."""
    if len(spacing) != 2 or not all(s > 0 for s in spacing) or not target_mm > 0:
        raise ValueError(f"spacing {spacing} and target_mm {target_mm} must be positive")
