import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dsnet.core.errors import InputError
from dsnet.synth.generate import synthesize
from dsnet.synth.preview import render_contact_sheet, sheet_size


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(
        tmp_path_factory.mktemp("prev") / "data", 1, seed=3, slices_per_vertebra=1
    ).out_dir


def test_sheet_has_the_expected_size_and_content(data, tmp_path):
    out = render_contact_sheet(data, tmp_path / "sheet.png", n=3, seed=0)
    image = Image.open(out)
    assert image.format == "PNG"
    assert image.size == sheet_size(3) == (3 * 520, 290)
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.std() > 20, "not a blank sheet"
    # class-coloured boxes/titles: some strongly coloured (non-grey) pixels
    assert (np.ptp(pixels, axis=2) > 100).sum() > 200


def test_sheet_with_more_slices_requested_than_available(data, tmp_path):
    out = render_contact_sheet(data, tmp_path / "all.png", n=50)
    assert Image.open(out).size == sheet_size(4) == (4 * 520, 290)


def test_bad_input(data, tmp_path):
    with pytest.raises(InputError, match="^n: must be at least 1, got 0$"):
        render_contact_sheet(data, tmp_path / "x.png", n=0)
    with pytest.raises(InputError, match="annotations.json"):
        render_contact_sheet(tmp_path / "missing", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cli_preview(data, tmp_path):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsnet",
            "preview",
            str(data),
            "--out",
            str(tmp_path / "s.png"),
            "--n",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert Image.open(tmp_path / "s.png").size == sheet_size(2)
    bad = subprocess.run(
        [sys.executable, "-m", "dsnet", "preview", str(tmp_path), "--out", str(tmp_path / "t.png")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
