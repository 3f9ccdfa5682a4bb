"""The canonical canvas: orientation, spacing, pad/crop placement and exact box mapping."""

from __future__ import annotations

import numpy as np
import pytest

from dsnet.io import DisplayFrame, display_frame, storage_frames, to_canonical, to_canonical_hu
from dsnet.io.canonical import AIR_HU, check_canvas

WINDOWS = [[-200, 1200], [0, 400], [-160, 240]]


def test_channels_canvas_and_air_padding():
    hu = np.full((64, 48), 100.0, dtype=np.float32)
    image, placement = to_canonical(hu, DisplayFrame((64, 48), (0.75, 0.75)), 1.5, 64, WINDOWS)
    assert image.shape == (3, 64, 64) and image.dtype == np.float32
    assert placement.scale == (2.0, 2.0)
    assert placement.offset == (16, 20)  # 32 x 24 px centred on the 64 px canvas
    inside = image[:, 16:48, 20:44]
    expected = [(100 + 200) / 1400, 100 / 400, (100 + 160) / 400]
    np.testing.assert_allclose(inside.mean(axis=(1, 2)), expected, atol=1e-6)
    assert np.all(image[:, :16] == 0.0) and np.all(image[:, :, :20] == 0.0)  # air


def test_large_slices_are_cropped_around_the_body():
    hu = np.full((400, 400), -1024.0, dtype=np.float32)
    hu[300:360, 40:100] = 50.0  # the body sits low on the left
    canvas, placement = to_canonical_hu(hu, DisplayFrame((400, 400), (1.0, 1.0)), 1.0, 128)
    assert canvas.shape == (128, 128)
    assert placement.offset == (-(330 - 64), -(70 - 64))  # body centre (330, 70) -> (64, 64)
    assert (canvas > -500).sum() == 60 * 60  # the whole body is on the canvas
    assert canvas.min() >= -1024.0 and AIR_HU == -1000.0


@pytest.mark.parametrize("frame", storage_frames((30, 50), (0.6, 0.9)), ids=str)
def test_box_round_trip_through_the_canvas_is_exact(frame):
    rng = np.random.default_rng(1)
    rows, cols = frame.stored_shape
    xy1 = rng.uniform(0, [cols / 2, rows / 2], size=(20, 2))
    boxes = np.concatenate([xy1, xy1 + rng.uniform(1, [cols / 2, rows / 2], size=(20, 2))], 1)
    hu = np.zeros(frame.stored_shape, dtype=np.float32)
    _, placement = to_canonical_hu(hu, frame, 0.7, 64)
    canvas = placement.stored_to_canvas(boxes)
    np.testing.assert_allclose(placement.canvas_to_stored(canvas), boxes, atol=1e-9)
    assert np.all(canvas[:, 2] > canvas[:, 0]) and np.all(canvas[:, 3] > canvas[:, 1])


@pytest.mark.parametrize(
    ("spacing", "target"), [((0.6, 0.8), 1.5), ((0.5, 0.5), 1.0), ((2.0, 3.0), 1.5)]
)
def test_boxes_land_on_the_same_anatomy(spacing, target):
    # A bright 1000 HU rectangle on a -1000 HU background, at spacing != target.
    hu = np.full((300, 200), -1000.0, dtype=np.float32)
    box = np.array([[60.0, 120.0, 96.0, 150.0]])  # x1, y1, x2, y2 in stored pixels
    hu[120:150, 60:96] = 1000.0
    frame = DisplayFrame(hu.shape, spacing)
    image, placement = to_canonical(hu, frame, target, 256, [[-1000, 1000]])
    model_box = placement.stored_to_canvas(box)[0]
    ys, xs = np.mgrid[0 : image.shape[1], 0 : image.shape[2]] + 0.5
    mass = image[0]
    centroid = (float((xs * mass).sum() / mass.sum()), float((ys * mass).sum() / mass.sum()))
    centre = ((model_box[0] + model_box[2]) / 2, (model_box[1] + model_box[3]) / 2)
    np.testing.assert_allclose(centroid, centre, atol=0.2)
    np.testing.assert_allclose(placement.canvas_to_stored(model_box[None]), box, atol=1e-9)


def test_orientation_turns_storage_into_the_display_frame():
    """A posterior-up storage ([1, 0, 0, 0, -1, 0]) is flipped upside down, nothing else."""
    stored = np.arange(12.0).reshape(3, 4)
    frame = display_frame((1, 0, 0, 0, -1, 0), (0.5, 0.7), stored.shape, "f.dcm")
    np.testing.assert_array_equal(frame.to_display(stored), stored[::-1])
    transposed = display_frame((0, 1, 0, 1, 0, 0), (0.5, 0.7), stored.shape, "f.dcm")
    np.testing.assert_array_equal(transposed.to_display(stored), stored.T)
    assert transposed.display_spacing == (0.7, 0.5)


def test_canvas_side_must_be_a_multiple_of_32():
    assert check_canvas(192) == 192
    for bad in (0, 100, 16, 192.0, True):
        with pytest.raises(ValueError, match="multiple of 32"):
            check_canvas(bad)
