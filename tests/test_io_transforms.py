from __future__ import annotations

import numpy as np
import pytest

from dsnet.io import (
    resample,
    resampled_shape,
    window,
)

WINDOWS = [[-200, 1200], [0, 400], [-160, 240]]


def test_window_maps_low_to_zero_high_to_one_and_clips():
    hu = np.array([-1000.0, -200.0, 500.0, 1200.0, 3000.0])
    out = window(hu, -200, 1200)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_window_rejects_empty_range():
    with pytest.raises(ValueError, match="must exceed"):
        window(np.zeros(3), 400, 400)


def test_resample_shape_and_scale_follow_spacing_per_axis():
    hu = np.zeros((512, 400), dtype=np.float32)
    image, scale = resample(hu, (0.7, 0.9), 1.5)
    # H' = round(512 * 0.7 / 1.5) = round(238.93) = 239; W' = round(400 * 0.9 / 1.5) = 240.
    assert image.shape == (239, 240) == resampled_shape((512, 400), (0.7, 0.9), 1.5)
    assert image.dtype == np.float32
    assert scale == pytest.approx((512 / 239, 400 / 240))


def test_resample_upsamples_coarse_slices():
    hu = np.arange(12, dtype=np.float32).reshape(3, 4)
    image, scale = resample(hu, (3.0, 3.0), 1.5)
    assert image.shape == (6, 8)
    assert scale == (0.5, 0.5)
    # Bilinear, pixel-area aligned: the mean intensity is preserved for a linear ramp.
    assert image.mean() == pytest.approx(hu.mean(), abs=1e-4)


def test_resample_at_target_spacing_is_identity():
    hu = np.random.default_rng(0).normal(size=(20, 30)).astype(np.float32)
    image, scale = resample(hu, (1.5, 1.5), 1.5)
    assert scale == (1.0, 1.0)
    np.testing.assert_array_equal(image, hu)


def test_downsampling_is_anti_aliased():
    # One-pixel vertical stripes of +-1000 HU; shrinking by 3 must average them (mean 0),
    # where plain bilinear sampling would hit stripes and keep a +-1000 pattern.
    stripes = np.where(np.arange(120) % 2 == 0, 1000.0, -1000.0)
    hu = np.tile(stripes, (120, 1)).astype(np.float32)
    image, scale = resample(hu, (0.5, 0.5), 1.5)
    assert scale == (3.0, 3.0)
    assert abs(float(image.mean())) < 5.0
    assert float(image.std()) < 100.0
