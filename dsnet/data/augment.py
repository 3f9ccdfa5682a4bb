"""Training augmentations that respect anatomy (params ``train.augment``).

Three, all optional, drawn once per item from a seeded generator:

- ``hflip``: probability of a left-right mirror (boxes mirrored with it). Lumbar anatomy is
  close to left-right symmetric; anterior stays up, so there is no vertical flip and no
  rotation beyond what patients show anyway.
- ``intensity_jitter_hu``: a global HU offset, uniform in +-this, added to the slice before
  windowing. It mimics scanner calibration drift, the main nuisance in HU-based grading.
- ``scale``: ``[low, high]`` zoom range; the slice is resampled to ``spacing_mm / zoom``
  and centre-cropped or air-padded back to the un-zoomed size, boxes scaled with it.

Images here are numpy float32 [C, H, W]; boxes float32 [N, 4] (x1, y1, x2, y2) in
pixel-edge coordinates of that image (pixel column j spans x in [j, j + 1)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsnet.core.errors import InputError

AIR_HU = -1000.0  # fill value of the padding a zoom-out adds
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


def crop_or_pad(
    image: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre-crop or pad `image` [C, H, W] to [C, *shape], moving and clipping the boxes.

    Args:
        image: float32 [C, H, W].
        boxes: float32 [N, 4] xyxy in `image` pixels.
        shape: Target (H', W').
        fill: [C] per-channel padding values.

    Returns:
        (image [C, H', W'], boxes [M, 4] clipped to the new image, keep [N] bool): boxes
        left with a side <= 1 px after clipping are dropped (`keep` marks the survivors).

    """
    channels, height, width = image.shape
    out = np.empty((channels, *shape), dtype=image.dtype)
    out[:] = fill.reshape(-1, 1, 1)
    top, left = (height - shape[0]) // 2, (width - shape[1]) // 2  # < 0 means padding
    src_y, dst_y = _overlap(top, height, shape[0])
    src_x, dst_x = _overlap(left, width, shape[1])
    out[:, dst_y, dst_x] = image[:, src_y, src_x]
    moved = boxes - np.array([left, top, left, top], dtype=boxes.dtype)
    moved[:, 0::2] = moved[:, 0::2].clip(0, shape[1])
    moved[:, 1::2] = moved[:, 1::2].clip(0, shape[0])
    keep = ((moved[:, 2] - moved[:, 0]) > 1) & ((moved[:, 3] - moved[:, 1]) > 1)
    return out, moved[keep], keep


def _overlap(offset: int, size: int, target: int) -> tuple[slice, slice]:
    """Source and destination slices along one axis for a crop/pad starting at `offset`."""
    start = max(offset, 0)
    stop = min(offset + target, size)
    return slice(start, stop), slice(start - offset, stop - offset)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(PARAMS, f"{key} {value!r} is not a number")
    return float(value)
