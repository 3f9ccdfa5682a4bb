import csv
import io
import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, CTImageStorage

from dsnet.core.errors import InputError
from dsnet.data.classes import who_class
from dsnet.synth import phantom, population
from dsnet.synth.generate import MAX_SLICE_REACH_MM, slice_offsets, synthesize

LEVELS = ("L1", "L2", "L3", "L4")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = synthesize(out, patients=3, seed=11, slices_per_vertebra=2)
    return out, summary


def _coco(out):
    return json.loads((out / "annotations.json").read_text())


def _csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_writes_the_data_contract(data):
    out, summary = data
    coco = _coco(out)
    files = sorted(p.relative_to(out).as_posix() for p in (out / "dicom").rglob("*.dcm"))
    assert summary.patients == 3 and summary.slices == 3 * 4 * 2 == len(files)
    assert sorted(im["file_name"] for im in coco["images"]) == files
    assert {f.split("/")[1] for f in files} == {"SYN-0001", "SYN-0002", "SYN-0003"}
    assert coco["categories"] == [
        {"id": 1, "name": "normal"},
        {"id": 2, "name": "osteopenia"},
        {"id": 3, "name": "osteoporosis"},
    ]
    assert sum(summary.slice_classes.values()) == summary.slices
    assert sum(summary.patient_classes.values()) == summary.patients
    for image in coco["images"]:
        assert image["width"] == image["height"] == 512
        assert image["file_name"].startswith(f"dicom/{image['patient_id']}/")
        assert image["vertebra"] in LEVELS
    assert (out / "dxa.csv").read_text().splitlines()[0] == "patient_id,vertebra,t_score"


def test_every_file_is_a_ct_slice_with_consistent_geometry(data):
    out, _ = data
    coco = _coco(out)
    truth = {(r["patient_id"], r["vertebra"]): r for r in _csv(out / "synth_truth.csv")}
    positions = {}
    for image in coco["images"]:
        path = out / image["file_name"]
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert UID(uid).is_valid
        assert ds.Modality == "CT" and (ds.Rows, ds.Columns) == (512, 512)
        pixels = ds.pixel_array
        assert pixels.dtype == np.int16 and pixels.shape == (512, 512)
        assert pixels.min() >= 0 and pixels.max() <= 4095
        assert (ds.RescaleIntercept, ds.RescaleSlope) == (-1024, 1)
        row_mm, col_mm = (float(s) for s in ds.PixelSpacing)
        assert row_mm == col_mm and 0.6 <= row_mm <= 0.9
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
        assert float(ds.ImagePositionPatient[0]) == pytest.approx(-255.5 * col_mm, abs=1e-3)
        row = truth[(image["patient_id"], image["vertebra"])]
        assert ds.PatientID == image["patient_id"]
        assert ds.PatientSex == row["sex"] and ds.PatientAge == f"{int(row['age']):03d}Y"
        # pydicom round trip keeps header and pixels
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        again = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        assert again.SOPInstanceUID == ds.SOPInstanceUID
        np.testing.assert_array_equal(again.pixel_array, pixels)
        positions.setdefault(image["patient_id"], []).append(
            (ds.InstanceNumber, image["vertebra"], float(ds.SliceLocation))
        )
    for slices in positions.values():
        slices.sort()
        z = [s[2] for s in slices]
        assert z == sorted(z, reverse=True), "instance numbers run cranio-caudally"
        assert [s[1] for s in slices] == [lv for lv in LEVELS for _ in range(2)]
        mids = {lv: np.mean([s[2] for s in slices if s[1] == lv]) for lv in LEVELS}
        gaps = np.diff([mids[lv] for lv in LEVELS])
        assert np.all((gaps > -45) & (gaps < -25)), "one vertebral level apart"


def test_files_read_as_hounsfield_units_with_dsnet_io(data):
    from dsnet.io import read_slice

    out, _ = data
    image = _coco(out)["images"][0]
    ct = read_slice(out / image["file_name"])
    assert ct.hu.shape == (512, 512)
    assert ct.hu[0, 0] == -1024.0  # outside the reconstruction circle
    assert ct.orientation == (1, 0, 0, 0, 1, 0)
    assert 0.6 <= ct.spacing[0] <= 0.9


def test_data_dir_passes_the_contract_validator(data):
    from dsnet.data.contract import load_data_dir

    out, summary = data
    loaded = load_data_dir(out, decode=True)
    assert len(loaded.patients()) == summary.patients


def test_labels_agree_with_dxa_and_who(data):
    out, summary = data
    coco = _coco(out)
    dxa = {(r["patient_id"], r["vertebra"]): float(r["t_score"]) for r in _csv(out / "dxa.csv")}
    assert len(dxa) == 3 * 4
    images = {im["id"]: im for im in coco["images"]}
    assert len(coco["annotations"]) == len(images)
    for ann in coco["annotations"]:
        image = images[ann["image_id"]]
        t = dxa[(image["patient_id"], image["vertebra"])]
        assert ann["t_score"] == t
        assert ann["category_id"] == who_class(t)
        assert ann["vertebra"] == image["vertebra"]
        assert ann["iscrowd"] == 0
        x, y, w, h = ann["bbox"]
        assert ann["area"] == w * h
        assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
        assert 25 <= w * 0.75 <= 70  # a lumbar body is ~40-55 mm wide at ~0.75 mm/px


def test_box_is_tight_around_the_body_and_excludes_posterior_elements():
    rng = np.random.default_rng(3)
    scene = phantom.build_scene(rng, population.sample_patient(rng, 0))
    for level in LEVELS:
        rendered = phantom.render_slice(scene, level, 1.5, np.random.default_rng(9))
        x1, y1, x2, y2 = rendered.box_xyxy
        mask = rendered.body_mask
        assert mask.sum() == mask[y1:y2, x1:x2].sum(), "no body pixel outside the box"
        for edge in (mask[y1, x1:x2], mask[y2 - 1, x1:x2], mask[y1:y2, x1], mask[y1:y2, x2 - 1]):
            assert edge.any(), "every box edge touches the body"
        # the cortex shows on the box border of the image itself
        hu = rendered.hu
        for edge in (hu[y1, x1:x2], hu[y2 - 1, x1:x2], hu[y1:y2, x1], hu[y1:y2, x2 - 1]):
            assert edge.max() > 250
        # posterior elements (pedicles, laminae, spinous process) are bone behind the box
        behind = hu[y2 + 5 : y2 + 60, x1:x2]
        assert (behind > 300).sum() > 50


def test_targeted_variant_is_a_square_crop_of_tissue_with_the_body_inside():
    """Small fields of view (down to 84 mm, like CT_small) show tissue up to the edges."""
    fovs = []
    for index in range(60):
        rng = np.random.default_rng([5, index])
        scene = phantom.sample_variant(
            rng, phantom.build_scene(rng, population.sample_patient(rng, index))
        )
        if not scene.scan.targeted:
            assert scene.scan.matrix * scene.scan.spacing >= scene.habitus.width + 60.0
            continue
        fov = scene.scan.matrix * scene.scan.spacing
        fovs.append(fov)
        background = phantom.level_background(scene, "L3")
        if fov < 200.0:  # the whole crop lies in the scanner's 500 mm measured field
            assert not background.outside.any(), f"{fov:.0f} mm: a reconstruction circle"
        rendered = phantom.render_slice(scene, "L3", 0.0, np.random.default_rng(index), background)
        if fov < 100.0:  # a crop well inside the trunk: tissue in every corner
            assert (rendered.hu[[0, 0, -1, -1], [0, -1, 0, -1]] > -900).all(), f"{fov:.0f} mm"
        x1, y1, x2, y2 = rendered.box_xyxy
        matrix = scene.scan.matrix
        assert 0 < x1 < x2 < matrix and 0 < y1 < y2 < matrix, f"{fov:.0f} mm: body cut off"
    assert min(fovs) >= phantom.MIN_FOV_MM and min(fovs) < 100.0  # CT_small's 85 mm is covered
    assert len(fovs) >= 15


def test_variant_bodies_reach_small_round_shapes_with_an_open_canal():
    """Variant L1 bodies come down to ~25 mm wide and as round as CT_small's (26 x 25 mm)."""
    shapes = []
    for index in range(60):
        rng = np.random.default_rng([6, index])
        scene = phantom.build_scene(rng, population.sample_patient(rng, index))
        variant = phantom.sample_variant(rng, scene)
        width = variant.vertebrae["L1"].half_width / scene.vertebrae["L1"].half_width
        depth = variant.vertebrae["L1"].half_depth / scene.vertebrae["L1"].half_depth
        assert phantom.VARIANT_BODY_WIDTH[0] <= width <= phantom.VARIANT_BODY_WIDTH[1]
        assert phantom.VARIANT_BODY_DEPTH[0] <= depth <= phantom.VARIANT_BODY_DEPTH[1]
        for level, vb in variant.vertebrae.items():
            before = scene.vertebrae[level]
            assert vb.half_width == pytest.approx(before.half_width * width)
            assert vb.half_depth == pytest.approx(before.half_depth * depth)
            assert vb.trabecular_hu == before.trabecular_hu  # density untouched
        l1 = variant.vertebrae["L1"]
        shapes.append((2 * l1.half_width, l1.half_width / l1.half_depth))
    widths, aspects = np.array(shapes).T
    assert widths.min() < 29.0 and widths.max() > 40.0
    assert aspects.min() < 1.0 and aspects.max() > 1.5  # as round as thoracic, as flat as L4

    rng = np.random.default_rng(3)
    scene = phantom.build_scene(rng, population.sample_patient(rng, 0))
    full = phantom.render_slice(scene, "L2", 0.0, np.random.default_rng(1))
    resized = phantom.resize_bodies(scene, 0.7, 0.9)
    shrunk = phantom.render_slice(resized, "L2", 0.0, np.random.default_rng(1))
    (x1, y1, x2, y2), (u1, v1, u2, v2) = full.box_xyxy, shrunk.box_xyxy
    assert u2 - u1 == pytest.approx(0.7 * (x2 - x1), abs=2)
    assert v2 - v1 == pytest.approx(0.9 * (y2 - y1), abs=2)
    # the canal stays open, and narrower than a narrow body (CANAL_BODY_RATIO)
    assert 10 <= _canal_width(shrunk) <= _canal_width(full)
    assert _canal_width(shrunk) < 0.75 * (u2 - u1)


def _canal_width(rendered: phantom.RenderedSlice) -> int:
    """Pixels of CSF-like values (-30..60 HU) across the canal, 8 px behind the body's box."""
    x1, _, x2, y2 = rendered.box_xyxy
    centre = (x1 + x2) // 2
    row = rendered.hu[y2 + 8, centre - 30 : centre + 30]
    return int(((row > -30) & (row < 60)).sum())


def test_shared_level_background_gives_the_same_slice():
    rng = np.random.default_rng(4)
    scene = phantom.build_scene(rng, population.sample_patient(rng, 0))
    background = phantom.level_background(scene, "L2")
    before = background.hu.copy()
    shared = phantom.render_slice(scene, "L2", -1.0, np.random.default_rng(1), background)
    alone = phantom.render_slice(scene, "L2", -1.0, np.random.default_rng(1))
    np.testing.assert_array_equal(shared.hu, alone.hu)
    assert shared.box_xyxy == alone.box_xyxy
    np.testing.assert_array_equal(background.hu, before)  # shared, so never painted on


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = synthesize(tmp_path / "a", patients=1, seed=5, slices_per_vertebra=1).out_dir
    second = synthesize(tmp_path / "b", patients=1, seed=5, slices_per_vertebra=1).out_dir
    other = synthesize(tmp_path / "c", patients=1, seed=6, slices_per_vertebra=1).out_dir
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4 + 3
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    slice_a = pydicom.dcmread(first / "dicom/SYN-0001/L1_1.dcm")
    slice_c = pydicom.dcmread(other / "dicom/SYN-0001/L1_1.dcm")
    assert slice_a.SOPInstanceUID != slice_c.SOPInstanceUID
    assert not np.array_equal(slice_a.pixel_array, slice_c.pixel_array)


def test_bad_arguments_leave_existing_output_untouched(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    for kwargs in (
        {"patients": 0},
        {"patients": 1, "seed": -1},
        {"patients": 1, "slices_per_vertebra": 0},
    ):
        with pytest.raises(InputError):
            synthesize(out, **{"seed": 1, **kwargs})
    assert (out / "keep.txt").read_text() == "old"
    with pytest.raises(InputError, match="not an earlier dsnet synth output"):
        synthesize(out, patients=1, seed=1, slices_per_vertebra=1)  # an unrelated folder
    assert [p.name for p in tmp_path.iterdir()] == ["data"] and (out / "keep.txt").exists()
    (out / "keep.txt").unlink()
    synthesize(out, patients=1, seed=1, slices_per_vertebra=1)
    synthesize(out, patients=1, seed=2, slices_per_vertebra=1)  # its own output is replaced
    assert json.loads((out / "annotations.json").read_text())["info"]["seed"] == 2


def test_out_of_the_wrong_kind_is_refused_and_kept(tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(InputError, match="is a file"):
        synthesize(notes, patients=1, seed=1, slices_per_vertebra=1)
    assert notes.read_text() == "mine"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="current folder"):
        synthesize(".", patients=1, seed=1, slices_per_vertebra=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_sop_instance_uids_follow_the_slice_content(tmp_path):
    uids = {}
    for count in (1, 2):
        out = synthesize(tmp_path / f"s{count}", patients=1, seed=3, slices_per_vertebra=count)
        uids[count] = {pydicom.dcmread(p).SOPInstanceUID for p in out.out_dir.rglob("*.dcm")}
    assert (len(uids[1]), len(uids[2])) == (4, 8)
    assert uids[1].isdisjoint(uids[2])  # other slices, other UIDs: intake keeps them apart
    again = synthesize(tmp_path / "again", patients=1, seed=3, slices_per_vertebra=2).out_dir
    assert {pydicom.dcmread(p).SOPInstanceUID for p in again.rglob("*.dcm")} == uids[2]


@pytest.mark.parametrize(("count", "thickness"), [(1, 2.5), (2, 1.0), (3, 2.5), (8, 2.5)])
def test_slice_offsets_stay_in_mid_body(count, thickness):
    offsets = slice_offsets(np.random.default_rng(0), count, thickness)
    assert len(offsets) == count
    assert offsets == sorted(offsets, reverse=True) and len(set(offsets)) == count
    assert max(abs(o) for o in offsets) <= MAX_SLICE_REACH_MM


def test_population_mix_and_correlation():
    rng = np.random.default_rng(0)
    patients = [population.sample_patient(rng, i) for i in range(3000)]
    t = np.array([[v.t_score for v in p.vertebrae] for p in patients])
    classes = np.array([[v.category for v in p.vertebrae] for p in patients])
    mix = [np.mean(classes == c) for c in (1, 2, 3)]
    assert 0.3 < mix[0] < 0.5 and 0.28 < mix[1] < 0.45 and 0.15 < mix[2] < 0.35
    assert mix[0] > mix[1] > mix[2]
    assert 0.7 < np.mean([p.sex == "F" for p in patients]) < 0.8
    assert np.corrcoef(t[:, 0], t[:, 3])[0, 1] > 0.8, "L1 and L4 share the patient's density"
    ages = np.array([p.age for p in patients])
    assert np.corrcoef(ages, t.min(axis=1))[0, 1] < -0.2, "bone density falls with age"


def _dsnet(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dsnet", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_synth_reads_params_and_flags_override(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "synth:\n  patients: 7\n  seed: 42\n  slices_per_vertebra: 1\n"
    )
    result = _dsnet("synth", "--out", "d", "--patients", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    coco = _coco(tmp_path / "d")
    assert len(coco["images"]) == 4  # 1 patient (flag) x 4 levels x 1 slice (params)
    assert coco["info"]["seed"] == 42
    assert "4 slices" in result.stdout


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    result = _dsnet("synth", "--out", "d", "--patients", "0", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "patients" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()
    missing = _dsnet("synth", "--out", "d", "-p", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
