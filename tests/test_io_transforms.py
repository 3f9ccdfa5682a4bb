from __future__ import annotations

import numpy as np
import pytest

from dsnet.io import (
    boxes_to_model,
    boxes_to_original,
    resample,
    resampled_shape,
    to_model_input,
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


def test_to_model_input_stacks_one_channel_per_window():
    hu = np.full((64, 48), 100.0, dtype=np.float32)
    image, scale = to_model_input(hu, (0.75, 0.75), 1.5, WINDOWS)
    assert image.shape == (3, 32, 24)
    assert image.dtype == np.float32
    assert scale == (2.0, 2.0)
    expected = [(100 + 200) / 1400, 100 / 400, (100 + 160) / 400]
    np.testing.assert_allclose(image.mean(axis=(1, 2)), expected, atol=1e-6)
    np.testing.assert_allclose(image.std(axis=(1, 2)), 0.0, atol=1e-6)


def test_box_round_trip_is_exact():
    rng = np.random.default_rng(1)
    xy1 = rng.uniform(0, 400, size=(50, 2))
    boxes = np.concatenate([xy1, xy1 + rng.uniform(1, 100, size=(50, 2))], axis=1)
    scale = (512 / 239, 400 / 240)
    model = boxes_to_model(boxes, scale)
    np.testing.assert_allclose(boxes_to_original(model, scale), boxes, atol=1e-4, rtol=0)
    # x is divided by sx, y by sy.
    np.testing.assert_allclose(model[:, [0, 2]], boxes[:, [0, 2]] / scale[1])
    np.testing.assert_allclose(model[:, [1, 3]], boxes[:, [1, 3]] / scale[0])


def test_box_mapping_keeps_float32_and_accepts_empty():
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32)
    assert boxes_to_model(boxes, (2.0, 2.0)).dtype == np.float32
    np.testing.assert_array_equal(boxes_to_model(boxes, (2.0, 4.0)), [[2.5, 10.0, 7.5, 20.0]])
    assert boxes_to_original(np.zeros((0, 4)), (2.0, 2.0)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        boxes_to_model(np.zeros((3, 5)), (1.0, 1.0))


def _bright_extent(image: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) pixel-edge extent of pixels above `threshold`."""
    rows = np.flatnonzero((image > threshold).any(axis=1))
    cols = np.flatnonzero((image > threshold).any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


@pytest.mark.parametrize(
    ("spacing", "target"), [((0.6, 0.8), 1.5), ((0.5, 0.5), 1.0), ((2.0, 3.0), 1.5)]
)
def test_boxes_land_on_the_same_anatomy(spacing, target):
    # A bright 1000 HU rectangle on a -1000 HU background, at spacing != target.
    hu = np.full((300, 200), -1000.0, dtype=np.float32)
    box = np.array([[60.0, 120.0, 96.0, 150.0]])  # x1, y1, x2, y2 in original pixels
    hu[120:150, 60:96] = 1000.0
    image, scale = to_model_input(hu, spacing, target, [[-1000, 1000]])
    model_box = boxes_to_model(box, scale)[0]

    # The half-maximum extent of the square in model pixels is where the box says.
    np.testing.assert_allclose(_bright_extent(image[0], 0.5), model_box, atol=1.0)
    # The intensity centroid of the square is the box centre (sub-pixel).
    ys, xs = np.mgrid[0 : image.shape[1], 0 : image.shape[2]] + 0.5
    mass = image[0]
    centroid = (float((xs * mass).sum() / mass.sum()), float((ys * mass).sum() / mass.sum()))
    centre = ((model_box[0] + model_box[2]) / 2, (model_box[1] + model_box[3]) / 2)
    np.testing.assert_allclose(centroid, centre, atol=0.2)
    # And the box mapped back is the original box.
    np.testing.assert_allclose(boxes_to_original(model_box[None], scale), box, atol=1e-4)
