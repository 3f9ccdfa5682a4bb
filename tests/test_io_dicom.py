from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from badinput import BAD_INPUTS, sample_ct, write_dataset
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

from dsnet.core.errors import InputError
from dsnet.io import CTSlice, read_slice

REAL_CTS = ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"]


def _pydicom_hu(path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.mark.parametrize("name", REAL_CTS)
def test_hu_equals_stored_times_slope_plus_intercept_on_real_cts(name):
    path = get_testdata_file(name)
    ct = read_slice(path)
    assert isinstance(ct, CTSlice)
    assert ct.hu.dtype == np.float32
    np.testing.assert_array_equal(ct.hu, _pydicom_hu(path).astype(np.float32))


def test_ct_small_values_geometry_and_identifiers():
    ct = read_slice(get_testdata_file("CT_small.dcm"))
    assert ct.hu.shape == (128, 128)
    # Signed 16-bit stored values with intercept -1024: lung/air at the top left,
    # dense bone near the centre.
    assert ct.hu[0, 0] == -849.0
    assert ct.hu[64, 64] == 904.0
    assert float(ct.hu[:32, :32].mean()) < -700
    assert float(ct.hu.max()) == 1167.0
    assert int((ct.hu > 300).sum()) == 1015
    assert ct.spacing == (0.661468, 0.661468)
    assert ct.position == (-158.135803, -179.035797, -75.699997)
    assert ct.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    np.testing.assert_array_equal(ct.normal, [0.0, 0.0, 1.0])
    assert ct.patient_id == "1CT1"
    assert ct.instance_number == 1
    assert ct.sop_uid == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    assert ct.series_uid == "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    assert ct.study_uid == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def test_meta_holds_plain_technical_attributes():
    ct = read_slice(get_testdata_file("CT_small.dcm"))
    assert ct.meta["Modality"] == "CT"
    assert ct.meta["Manufacturer"] == "GE MEDICAL SYSTEMS"
    assert ct.meta["KVP"] == 120.0
    assert ct.meta["SliceThickness"] == 5.0
    assert ct.meta["ConvolutionKernel"] == "STANDARD"
    assert ct.meta["PhotometricInterpretation"] == "MONOCHROME2"
    assert ct.meta["BitsStored"] == 16
    assert ct.meta["PixelRepresentation"] == 1
    assert ct.meta["RescaleIntercept"] == -1024.0
    assert ct.meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert "PatientName" not in ct.meta
    json.dumps(ct.meta)  # plain, serialisable values


def test_real_jpeg2000_ct_reads_14_bit_signed_values():
    ct = read_slice(get_testdata_file("693_J2KI.dcm"))
    assert ct.meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.91"
    assert ct.meta["BitsStored"] == 14
    assert ct.spacing == (0.478516, 0.478516)
    # Stored values go below zero (signed), so HU reach below -1024.
    assert float(ct.hu.min()) == -3995.0
    assert float(ct.hu.max()) == 1812.0


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_ct_decodes_to_identical_hu(tmp_path, syntax):
    reference = read_slice(get_testdata_file("CT_small.dcm")).hu
    ds = sample_ct()
    ds.compress(syntax)
    path = write_dataset(tmp_path, f"ct_{syntax.keyword}.dcm", ds)
    ct = read_slice(path)
    assert ct.meta["TransferSyntaxUID"] == syntax
    np.testing.assert_array_equal(ct.hu, reference)


def test_jpeg_ls_lossless_pixel_data_decodes_exactly(tmp_path):
    # pydicom's real JPEG-LS lossless sample, relabelled as a CT with a rescale: its
    # HU must equal the uncompressed twin's stored values * 2 - 1000.
    ds = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    ds.Modality = "CT"
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ct = read_slice(write_dataset(tmp_path, "ct_jpegls.dcm", ds))
    stored = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(ct.hu, stored.astype(np.float32) * 2 - 1000)


def _jpeg_lossless_sv1(pixels: np.ndarray) -> bytes:
    """Encode uint16 [H, W] as a lossless JPEG (ITU T.81 process 14, predictor 1)."""
    height, width = pixels.shape
    values = pixels.astype(np.int64)
    predicted = np.empty_like(values)
    predicted[0, 0] = 1 << 15
    predicted[0, 1:] = values[0, :-1]
    predicted[1:, 0] = values[:-1, 0]
    predicted[1:, 1:] = values[1:, :-1]
    diffs = (values - predicted) % 65536
    diffs = np.where(diffs > 32768, diffs - 65536, diffs)
    # One Huffman table with 17 five-bit codes: category k has code k.
    bits = []
    for diff in diffs.ravel().tolist():
        category = 16 if diff == 32768 else abs(diff).bit_length()
        bits.append(format(category, "05b"))
        if 0 < category < 16:
            extra = diff if diff > 0 else diff + (1 << category) - 1
            bits.append(format(extra, f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")
    sof = b"\xff\xc3\x00\x0b\x10" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    sof += b"\x01\x01\x11\x00"
    dht = b"\xff\xc4" + (2 + 1 + 16 + 17).to_bytes(2, "big") + b"\x00"
    dht += bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + sof + dht + sos + scan + b"\xff\xd9"


def test_jpeg_lossless_process14_ct_decodes_to_identical_hu(tmp_path):
    ds = sample_ct()
    reference = read_slice(get_testdata_file("CT_small.dcm")).hu
    raw = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
    ds.PixelData = encapsulate([_jpeg_lossless_sv1(raw)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ct = read_slice(write_dataset(tmp_path, "ct_jpeg_ll.dcm", ds))
    assert ct.meta["TransferSyntaxUID"] == JPEGLosslessSV1
    np.testing.assert_array_equal(ct.hu, reference)


def test_header_less_dataset_is_read(tmp_path):
    ds = sample_ct()
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "raw_dataset.dcm"
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    ct = read_slice(path)
    np.testing.assert_array_equal(ct.hu, read_slice(get_testdata_file("CT_small.dcm")).hu)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_slice(tmp_path / "absent.dcm")


@pytest.mark.parametrize(("writer", "fragment"), BAD_INPUTS, ids=[f for _, f in BAD_INPUTS])
def test_bad_input_names_the_file_and_the_reason(tmp_path, writer, fragment):
    path = writer(tmp_path)
    with pytest.raises(InputError) as caught:
        read_slice(path)
    message = str(caught.value)
    assert caught.value.path == str(path)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message
