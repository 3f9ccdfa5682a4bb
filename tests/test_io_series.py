from __future__ import annotations

import numpy as np
import pytest
from badinput import sample_ct, write_dataset, write_mr_slice, write_text_file, write_truncated
from pydicom.uid import generate_uid

from dsnet.errors import InputError
from dsnet.io import CTSlice, read_series
from dsnet.io.series import order_slices

SERIES_A = "1.2.826.0.1.3680043.8.498.10"
SERIES_B = "1.2.826.0.1.3680043.8.498.20"


def _write_slice(folder, name, series_uid, z, instance, orientation=None, position=True):
    """A CT_small copy with its own SOP UID, z position and instance number."""
    ds = sample_ct()
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = instance
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if position:
        ds.ImagePositionPatient = [-158.1, -179.0, z]
    else:
        del ds.ImagePositionPatient
    ds.PixelData = (ds.pixel_array + instance).astype(ds.pixel_array.dtype).tobytes()
    return write_dataset(folder, name, ds)


def test_groups_by_series_orders_by_position_and_reports_junk(tmp_path):
    # Series A: file names and instance numbers both disagree with the z order.
    zs = {"c.dcm": -70.0, "a.dcm": -75.0, "e.dcm": -72.5, "b.dcm": -80.0, "d.dcm": -77.5}
    for instance, (name, z) in enumerate(zs.items(), start=1):
        _write_slice(tmp_path, name, SERIES_A, z, instance)
    _write_slice(tmp_path / "sub", "s2.dcm", SERIES_B, 10.0, 2)
    _write_slice(tmp_path / "sub", "s1.dcm", SERIES_B, 5.0, 1)
    junk = [write_text_file(tmp_path), write_mr_slice(tmp_path), write_truncated(tmp_path)]

    scan = read_series(tmp_path)

    assert set(scan.series) == {SERIES_A, SERIES_B}
    a = scan.series[SERIES_A]
    assert all(isinstance(s, CTSlice) for s in a)
    assert [s.position[2] for s in a] == [-80.0, -77.5, -75.0, -72.5, -70.0]
    assert [s.path.name for s in a] == ["b.dcm", "d.dcm", "a.dcm", "e.dcm", "c.dcm"]
    # The pixels travel with their slice (each slice was offset by its instance number).
    base = sample_ct().pixel_array.astype(np.float32) - 1024
    for s in a:
        np.testing.assert_array_equal(s.hu, base + s.instance_number)
    assert [s.path.name for s in scan.series[SERIES_B]] == ["s1.dcm", "s2.dcm"]

    rejected = dict(scan.rejected)
    assert set(rejected) == set(junk)
    assert rejected[junk[0]].startswith("not a DICOM file")
    assert rejected[junk[1]] == "modality is MR, expected CT"
    assert rejected[junk[2]].startswith("truncated file")


def test_orders_along_the_normal_of_tilted_slices(tmp_path):
    # Gantry tilt: normal = row x col = (0, 0.3746, 0.9272) for the orientation below.
    orientation = (1.0, 0.0, 0.0, 0.0, 0.9272, -0.3746)
    normal = np.cross(orientation[:3], orientation[3:])
    for instance, step in enumerate([2, 0, 1], start=1):
        ds = sample_ct()
        ds.SeriesInstanceUID = SERIES_A
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = instance
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = list(np.array([0.0, 40.0, -10.0]) + 3.0 * step * normal)
        write_dataset(tmp_path, f"{instance}.dcm", ds)
    ordered = read_series(tmp_path).series[SERIES_A]
    projections = [float(np.dot(s.position, normal)) for s in ordered]
    assert projections == sorted(projections)
    assert [s.instance_number for s in ordered] == [2, 3, 1]


def test_falls_back_to_instance_number_without_positions(tmp_path):
    for instance, name in [(3, "a.dcm"), (1, "b.dcm"), (2, "c.dcm")]:
        _write_slice(tmp_path, name, SERIES_A, 0.0, instance, position=False)
    ordered = read_series(tmp_path).series[SERIES_A]
    assert [s.instance_number for s in ordered] == [1, 2, 3]
    assert [s.path.name for s in ordered] == ["b.dcm", "c.dcm", "a.dcm"]


def test_duplicate_instances_are_rejected(tmp_path):
    original = _write_slice(tmp_path, "a.dcm", SERIES_A, 0.0, 1)
    copy = tmp_path / "z_copy.dcm"
    copy.write_bytes(original.read_bytes())
    scan = read_series(tmp_path)
    assert len(scan.series[SERIES_A]) == 1
    assert scan.rejected == [(copy, f"duplicate SOPInstanceUID of {original}")]


def test_order_slices_of_empty_list_is_empty():
    assert order_slices([]) == []


def test_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        read_series(tmp_path / "absent")
    with pytest.raises(InputError, match="not a folder"):
        read_series(write_text_file(tmp_path))
