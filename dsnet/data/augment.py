"""Training augmentations that respect anatomy (params ``train.augment``).

Three, all optional, drawn once per item from a seeded generator:

- ``hflip``: probability of a left-right mirror (boxes mirrored with it). Lumbar anatomy is
  close to left-right symmetric; anterior stays up, so there is no vertical flip and no
  rotation beyond what patients show anyway.
- ``intensity_jitter_hu``: a global HU offset, uniform in +-this, added to the slice before
  windowing. It mimics scanner calibration drift, the main nuisance in HU-based grading.
- ``scale``: ``[low, high]`` zoom range; the slice is resampled to ``spacing_mm / zoom``
  onto the same canonical canvas (`dsnet.io.canonical`), boxes scaled with it and clipped
  to the canvas (`clip_boxes`).

Images here are numpy float32 [C, H, W]; boxes float32 [N, 4] (x1, y1, x2, y2) in
pixel-edge coordinates of that image (pixel column j spans x in [j, j + 1)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsnet.core.errors import InputError

PARAMS = "params train.augment"


@dataclass(frozen=True)
class AugmentConfig:
    """Validated augmentation settings.

    Attributes:
        hflip: Probability of a left-right mirror, in [0, 1].
        intensity_jitter_hu: Half-width (HU, >= 0) of the uniform global HU offset.
        scale: (low, high) zoom factors, 0 < low <= high; (1, 1) disables zoom.

    """

    hflip: float = 0.0
    intensity_jitter_hu: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from the ``train.augment`` mapping, raising `InputError` on bad values."""
        params = dict(params or {})
        unknown = sorted(set(params) - {"hflip", "intensity_jitter_hu", "scale"})
        if unknown:
            raise InputError(PARAMS, f"unknown key(s) {', '.join(unknown)}")
        hflip = _number(params.get("hflip", 0.0), "hflip")
        jitter = _number(params.get("intensity_jitter_hu", 0.0), "intensity_jitter_hu")
        scale = params.get("scale", (1.0, 1.0))
        if not isinstance(scale, list | tuple) or len(scale) != 2:
            raise InputError(PARAMS, f"scale {scale!r} must be [low, high]")
        low, high = (_number(s, "scale") for s in scale)
        if not 0.0 <= hflip <= 1.0:
            raise InputError(PARAMS, f"hflip {hflip} is not a probability in [0, 1]")
        if jitter < 0:
            raise InputError(PARAMS, f"intensity_jitter_hu {jitter} is negative")
        if not 0.0 < low <= high:
            raise InputError(PARAMS, f"scale {list(scale)} must satisfy 0 < low <= high")
        return cls(hflip=hflip, intensity_jitter_hu=jitter, scale=(low, high))


@dataclass(frozen=True)
class AugmentDraw:
    """One item's augmentation: mirror or not, HU offset, zoom factor."""

    mirror: bool = False
    hu_offset: float = 0.0
    zoom: float = 1.0


def draw(config: AugmentConfig, rng: np.random.Generator) -> AugmentDraw:
    """Draw one item's augmentation (always three draws, so streams stay aligned)."""
    mirror = bool(rng.random() < config.hflip)
    offset = float(rng.uniform(-config.intensity_jitter_hu, config.intensity_jitter_hu))
    zoom = float(rng.uniform(*config.scale))
    return AugmentDraw(mirror=mirror, hu_offset=offset, zoom=zoom)


def mirror(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: image [C, H, W] columns reversed, boxes x -> W - x (x1/x2 swapped)."""
    width = image.shape[-1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return np.ascontiguousarray(image[..., ::-1]), flipped


def clip_boxes(boxes: np.ndarray, canvas_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to a square canvas and drop those left with a side of 1 px or less.

    Args:
        boxes: [N, 4] xyxy in canvas pixels.
        canvas_px: Canvas side.

    Returns:
        (boxes [M, 4] float32 inside the canvas, keep [N] bool marking the survivors).

    """
    clipped = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).clip(0.0, float(canvas_px))
    keep = ((clipped[:, 2] - clipped[:, 0]) > 1) & ((clipped[:, 3] - clipped[:, 1]) > 1)
    return clipped[keep], keep


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(PARAMS, f"{key} {value!r} is not a number")
    return float(value)
