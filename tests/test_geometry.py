"""The canonical frame: orientation from DICOM tags, canonical spacing, a canvas the
detector never rescales, and boxes back on the stored grid (docs/dicom.md).

Storages and their tags are derived here from first principles (which display pixel each
stored pixel holds, and the DICOM formula for its patient position), independently of
`dsnet.io.geometry`; a known-answer detector (intensity moments of the bone) makes the
agreement tests about geometry, not training.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import tiny
import torch
from datadir_factory import write_slice

from dsnet.core.errors import InputError
from dsnet.data.contract import load_data_dir
from dsnet.data.dataset import CTDetectionDataset
from dsnet.inference.detect import detect, model_input
from dsnet.io import read_slice, storage_frames
from dsnet.models.checkpoint import build_model, model_config
from dsnet.synth.dicomct import StudyInfo, ct_slice_dataset

CT_SMALL = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
PREPROCESS = {"spacing_mm": 2.0, "canvas_px": 192, "windows": [[-200, 1200], [0, 400], [-160, 240]]}
STORAGES = {
    "identity": lambda a: a,
    "flip columns": lambda a: a[:, ::-1],
    "flip rows": lambda a: a[::-1],
    "rotate 180": lambda a: a[::-1, ::-1],
    "transpose": lambda a: a.T,
    "transpose, flip rows": lambda a: a.T[::-1],
    "transpose, flip columns": lambda a: a.T[:, ::-1],
    "transpose, flip both": lambda a: a.T[::-1, ::-1],
}
"""The 8 flip/transpose storages of a display-frame image (rows A->P, columns R->L)."""
TISSUE_HU, BONE_HU = 40.0, 300.0
BONE_CENTRE, BONE_SEMI_AXES = (15.0, 40.0), (20.0, 14.0)  # patient x, y mm
BODY_SEMI_AXES = (150.0, 100.0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class KnownAnswerDetector(torch.nn.Module):
    """Answers the box of the bright bone: centroid +- 2 standard deviations per axis.

    The weight of a pixel is its bone fraction, (HU - tissue) / (bone - tissue) clipped to
    [0, 1], read from channel 0 (the [-200, 1200] HU window); for a uniform ellipse
    centroid +- 2 sd is exactly its bounding box, and moments are sub-pixel accurate.
    """

    def __init__(self, tissue_hu: float = TISSUE_HU, bone_hu: float = BONE_HU) -> None:
        super().__init__()
        self.tissue_hu, self.bone_hu = tissue_hu, bone_hu

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            hu = image[0].double() * 1400.0 - 200.0
            weight = ((hu - self.tissue_hu) / (self.bone_hu - self.tissue_hu)).clamp(0.0, 1.0)
            rows, cols = torch.meshgrid(
                torch.arange(hu.shape[0], dtype=torch.float64) + 0.5,
                torch.arange(hu.shape[1], dtype=torch.float64) + 0.5,
                indexing="ij",
            )
            total = weight.sum()
            cx, cy = (weight * cols).sum() / total, (weight * rows).sum() / total
            sx = ((weight * (cols - cx) ** 2).sum() / total).sqrt()
            sy = ((weight * (rows - cy) ** 2).sum() / total).sqrt()
            box = torch.stack([cx - 2 * sx, cy - 2 * sy, cx + 2 * sx, cy + 2 * sy])
            out.append(
                {
                    "boxes": box[None].float(),
                    "labels": torch.tensor([1]),
                    "scores": torch.tensor([1.0]),
                }
            )
        return out


def render_display(matrix: int, spacing: float, centre: tuple[float, float]) -> np.ndarray:
    """Soft-tissue trunk with one bone ellipse, display frame, 4x4 supersampled (HU)."""
    sub = 4
    offsets = (np.arange(matrix * sub) + 0.5) / sub - 0.5  # sub-pixel centres, pixel units
    axis = (offsets - (matrix - 1) / 2) * spacing
    x = axis[None, :] + centre[0]
    y = axis[:, None] + centre[1]
    body = (x / BODY_SEMI_AXES[0]) ** 2 + (y / BODY_SEMI_AXES[1]) ** 2 <= 1
    bone = ((x - BONE_CENTRE[0]) / BONE_SEMI_AXES[0]) ** 2 + (
        (y - BONE_CENTRE[1]) / BONE_SEMI_AXES[1]
    ) ** 2 <= 1
    hu = np.where(bone, BONE_HU, np.where(body, TISSUE_HU, -1000.0))
    return hu.reshape(matrix, sub, matrix, sub).mean(axis=(1, 3))


def store(display: np.ndarray, name: str, first_centre: np.ndarray, spacing: tuple[float, float]):
    """Stored pixels and (IOP, IPP, PixelSpacing) of a display image in storage `name`.

    Args:
        display: [H, W] display-frame image.
        name: Key of `STORAGES`.
        first_centre: Patient (x, y, z) of the centre of display pixel [0, 0].
        spacing: (row, col) spacing of the display image (mm).

    """
    storage = STORAGES[name]
    rows, cols = np.indices(display.shape)
    held_rows, held_cols = storage(rows), storage(cols)  # display pixel held by each stored one

    def patient(r: int, c: int) -> np.ndarray:
        dr, dc = held_rows[r, c], held_cols[r, c]
        return first_centre + np.array([dc * spacing[1], dr * spacing[0], 0.0])

    origin = patient(0, 0)
    along_col, along_row = patient(0, 1) - origin, patient(1, 0) - origin
    col_mm, row_mm = np.linalg.norm(along_col), np.linalg.norm(along_row)
    orientation = [*(along_col / col_mm), *(along_row / row_mm)]
    return (
        np.ascontiguousarray(storage(display)),
        [float(v) + 0.0 for v in orientation],
        [float(v) for v in origin],
        (float(row_mm), float(col_mm)),
    )


def patient_box(box: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """(x1, y1, x2, y2) patient mm of a stored-grid box, from the file's own tags."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    corners = []
    for x, y in ((box[0], box[1]), (box[2], box[3])):
        corners.append(ipp + (x - 0.5) * col_mm * iop[:3] + (y - 0.5) * row_mm * iop[3:])
    corners = np.array(corners)[:, :2]
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def predicted_patient_box(path: Path) -> np.ndarray:
    """Read, canonicalise, detect with the known-answer detector, map back, to patient mm."""
    ct = read_slice(path)
    image, placement = model_input(ct, PREPROCESS)
    found = detect(KnownAnswerDetector(), image, placement, torch.device("cpu"))
    return patient_box(found.boxes[0], pydicom.dcmread(path))


@pytest.mark.parametrize("matrix", [128, 256, 512])
@pytest.mark.parametrize("spacing", [0.5, 0.7, 1.0])
def test_same_anatomy_gives_the_same_patient_box_in_every_storage(tmp_path, matrix, spacing):
    centre = (BONE_CENTRE[0] + 3.0, BONE_CENTRE[1] - 4.0)  # small FOVs stay around the bone
    display = render_display(matrix, spacing, centre)
    first = np.array(
        [centre[0] - (matrix - 1) / 2 * spacing, centre[1] - (matrix - 1) / 2 * spacing, -80.0]
    )
    truth = np.array(
        [
            BONE_CENTRE[0] - BONE_SEMI_AXES[0],
            BONE_CENTRE[1] - BONE_SEMI_AXES[1],
            BONE_CENTRE[0] + BONE_SEMI_AXES[0],
            BONE_CENTRE[1] + BONE_SEMI_AXES[1],
        ]
    )
    for name in STORAGES:
        stored, iop, ipp, pixel_spacing = store(display, name, first, (spacing, spacing))
        path = write_slice(
            tmp_path / f"{name}.dcm",
            stored,
            "GEOM",
            spacing=pixel_spacing,
            ImageOrientationPatient=iop,
            ImagePositionPatient=ipp,
        )
        box = predicted_patient_box(path)
        np.testing.assert_allclose(
            box, truth, atol=1.0, err_msg=f"{matrix} px, {spacing} mm, {name}"
        )


def test_non_square_pixels_follow_pixel_spacing_order(tmp_path):
    """PixelSpacing is (row, column): a transposed storage swaps it, boxes still agree."""
    display = render_display(256, 0.5, (BONE_CENTRE[0], BONE_CENTRE[1]))[:, ::2]  # 0.5 x 1.0 mm
    first = np.array([BONE_CENTRE[0] - 127.5 * 0.5 + 0.25, BONE_CENTRE[1] - 127.5 * 0.5, 0.0])
    boxes = []
    for name in ("identity", "transpose, flip rows"):
        stored, iop, ipp, pixel_spacing = store(display, name, first, (0.5, 1.0))
        path = write_slice(tmp_path / f"{name}.dcm", stored, "GEOM", spacing=pixel_spacing,
                           ImageOrientationPatient=iop, ImagePositionPatient=ipp)  # fmt: skip
        boxes.append(predicted_patient_box(path))
    np.testing.assert_allclose(boxes[0], boxes[1], atol=1.0)


def test_ct_small_restored_in_every_storage_maps_to_the_same_patient_box(tmp_path):
    original = pydicom.dcmread(CT_SMALL)
    assert [float(v) for v in original.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    hu = read_slice(CT_SMALL).hu
    spacing = tuple(float(v) for v in original.PixelSpacing)
    first = np.array([float(v) for v in original.ImagePositionPatient])
    boxes = {}
    for name in STORAGES:
        stored, iop, ipp, pixel_spacing = store(hu, name, first, spacing)
        path = write_slice(tmp_path / f"{name}.dcm", stored, "1CT1", spacing=pixel_spacing,
                           ImageOrientationPatient=iop, ImagePositionPatient=ipp)  # fmt: skip
        ct = read_slice(path)
        image, placement = model_input(ct, PREPROCESS)
        found = detect(KnownAnswerDetector(150.0, 450.0), image, placement, torch.device("cpu"))
        boxes[name] = patient_box(found.boxes[0], pydicom.dcmread(path))
    reference = boxes["identity"]
    assert reference[2] - reference[0] > 10  # a real box on the bone, not a degenerate one
    for name, box in boxes.items():
        np.testing.assert_allclose(box, reference, atol=1.0, err_msg=name)


def test_oblique_slice_is_refused_with_one_line_naming_the_file(tmp_path):
    turn = np.radians(15.0)  # an oblique reformat: pixel axes rotated 15° about z
    cos, sin = float(np.cos(turn)), float(np.sin(turn))
    path = write_slice(
        tmp_path / "oblique.dcm",
        read_slice(CT_SMALL).hu,
        "1CT1",
        ImageOrientationPatient=[cos, sin, 0.0, -sin, cos, 0.0],
    )
    with pytest.raises(InputError) as caught:
        read_slice(path)
    message = str(caught.value)
    assert str(path) in message and "oblique" in message and "\n" not in message
    assert "15.0°" in message

    model = tiny.untrained_checkpoint(tmp_path, {"note": "untrained"})
    result = subprocess.run(
        [sys.executable, "-m", "dsnet", "predict", str(path), "--model", str(model),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and str(path) in errors[0] and "oblique" in errors[0]
    assert "Traceback" not in result.stderr


def test_gantry_tilt_is_accepted_up_to_30_degrees(tmp_path):
    """A tilt about the patient's left-right axis is how CT cuts parallel to the discs."""
    real = pydicom.data.get_testdata_file("J2K_pixelrep_mismatch.dcm")  # a real 22° tilt
    assert read_slice(real).frame.is_identity
    steep = np.radians(35.0)
    path = write_slice(tmp_path / "steep.dcm", read_slice(CT_SMALL).hu, "1CT1",
                       ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, float(np.cos(steep)),
                                                float(-np.sin(steep))])  # fmt: skip
    with pytest.raises(InputError, match="gantry tilt is 35.0°"):
        read_slice(path)


def test_sagittal_slice_is_refused_as_not_axial(tmp_path):
    path = write_slice(tmp_path / "sagittal.dcm", read_slice(CT_SMALL).hu, "1CT1",
                       ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0])  # fmt: skip
    with pytest.raises(InputError, match="not an axial slice"):
        read_slice(path)


def test_generator_tags_match_its_stored_pixels(tmp_path):
    """Each of the generator's 8 storages reads back to the display image, same geometry."""
    display = np.arange(12 * 20, dtype=np.int16).reshape(12, 20)
    study = StudyInfo(
        seed=0, patient_id="SYN-0001", age=60, sex="F",
        study_datetime=dt.datetime(2020, 1, 1, 9), birth_date=dt.date(1960, 1, 1),
        spacing=0.7, slice_thickness=1.0, kernel="B30f", table_height=140.0,
        fov_centre_xy=(12.0, -30.0),
    )  # fmt: skip
    for frame in storage_frames((12, 20), (0.7, 0.7)):
        storage = (frame.transpose, frame.flip_rows, frame.flip_cols)
        stored_study = StudyInfo(**{**study.__dict__, "storage": storage})
        ds = ct_slice_dataset(stored_study, display, 5.0, 1, image_key="L1 1/1")
        path = tmp_path / f"{storage}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ct = read_slice(path)
        np.testing.assert_array_equal(ct.frame.to_display(ct.hu), display - 1024)
        # the centre of display pixel (r, c) is at fov centre + ((c, r) - (W-1, H-1)/2) * spacing
        box = ct.frame.boxes_to_stored(np.array([[3.0, 2.0, 4.0, 3.0]]))[0]  # display pixel (2, 3)
        centre = patient_box(box, pydicom.dcmread(path))
        expected = [12.0 + (3 - 9.5) * 0.7, -30.0 + (2 - 5.5) * 0.7]
        np.testing.assert_allclose((centre[:2] + centre[2:]) / 2, expected, atol=1e-3)


def test_detector_transform_scales_every_input_by_exactly_one(tmp_path):
    from dsnet.synth.generate import synthesize

    synthesize(tmp_path / "data", patients=2, seed=3, slices_per_vertebra=1, variants=1.0)
    data = load_data_dir(tmp_path / "data")
    augment = {"hflip": 0.5, "intensity_jitter_hu": 15, "scale": [0.9, 1.1]}
    inputs = []
    for params in (None, augment):
        dataset = CTDetectionDataset(data, data.patients(), PREPROCESS, params, seed=1)
        for image, target in (dataset[i] for i in range(len(dataset))):
            inputs.append(image)
            x1, y1, x2, y2 = (int(round(float(v))) for v in target["boxes"][0])
            inside = torch.zeros(image.shape[1:], dtype=torch.bool)
            inside[y1:y2, x1:x2] = True
            assert image[1][inside].mean() > 2 * image[1][~inside].mean()  # box on the bone
    stored = {
        tuple(pydicom.dcmread(data.image_path(im)).ImageOrientationPatient) for im in data.images
    }
    assert len(stored) == 2  # the two variant patients are stored in different orientations
    inputs += [
        model_input(read_slice(data.image_path(im)), PREPROCESS)[0]
        for im in data.images_of(data.patients())
    ]
    inputs.append(model_input(read_slice(CT_SMALL), PREPROCESS)[0])
    architecture = {"backbone": "mobilenet_v3", "attention": "none", "attention_residual": True}
    config = model_config(architecture, num_classes=4, canvas_px=PREPROCESS["canvas_px"])
    transform = build_model(config).eval().transform
    for image in inputs:
        height, width = image.shape[-2:]
        scale = min(
            transform.min_size[-1] / min(height, width), transform.max_size / max(height, width)
        )  # torchvision's _resize_image_and_masks
        assert scale == 1.0
        batch, _ = transform([image])
        assert batch.image_sizes == [(height, width)] == [(192, 192)]
        normalised = transform.normalize(image)
        assert batch.tensors.shape[-2:] == (192, 192)
        torch.testing.assert_close(batch.tensors[0], normalised, rtol=0, atol=1e-6)


def test_pyfunc_maps_boxes_to_each_rows_own_grid():
    """The MLflow pyfunc serves the same frame: a posterior-up HU row gets the flipped box."""
    import pandas as pd

    from dsnet.inference.pyfunc import DSNetPyfunc

    model = DSNetPyfunc()
    model.threshold, model.device = 0.5, torch.device("cpu")
    model.detector, model.checkpoint = KnownAnswerDetector(150.0, 450.0), {"preprocess": PREPROCESS}
    ct = read_slice(CT_SMALL)
    rows = pd.DataFrame(
        {
            "path": [str(CT_SMALL), None],
            "hu": [None, ct.hu[::-1].tolist()],
            "spacing": [None, list(ct.spacing)],
            "orientation": [None, [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]],
            "file": [None, "posterior-up"],
        }
    )
    out = model.predict(None, rows)
    assert list(out["file"]) == [str(CT_SMALL), "posterior-up"]
    plain, flipped = out[["x1", "y1", "x2", "y2"]].to_numpy()
    np.testing.assert_allclose(
        flipped, [plain[0], 128 - plain[3], plain[2], 128 - plain[1]], atol=1e-4
    )
