"""Data contract: `load_data_dir` accepts a valid data dir and reports every problem at once."""

from __future__ import annotations

import shutil

import pydicom
import pytest
from datadir_factory import make_data_dir, read_json, write_json

from dsnet.core.errors import DataValidationError, InputError
from dsnet.data.contract import DataDir, load_data_dir

T_SCORES = {
    "P001": {"L1": 0.2, "L2": -0.4},
    "P002": {"L1": -1.8, "L2": -2.1},
    "P003": {"L1": -2.9, "L2": -3.1},
}


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data") / "d", T_SCORES, slices_per_vertebra=2)


@pytest.fixture()
def data_copy(valid_dir, tmp_path):
    return shutil.copytree(valid_dir, tmp_path / "d")


def test_valid_dir_loads_with_lookups(valid_dir):
    data = load_data_dir(valid_dir)
    assert isinstance(data, DataDir)
    assert data.root == valid_dir
    assert len(data.images) == 12
    assert [i["id"] for i in data.images] == list(range(1, 13))
    assert all(len(data.annotations[i["id"]]) == 1 for i in data.images)
    assert data.patients() == ["P001", "P002", "P003"]
    assert [data.diagnosis(p) for p in data.patients()] == [1, 2, 3]
    assert data.dxa[("P002", "L2")] == pytest.approx(-2.1)
    assert {i["patient_id"] for i in data.images_of(["P002"])} == {"P002"}
    assert len(data.images_of(["P001", "P003"])) == 8
    assert data.image_path(data.images[0]).is_file()


def test_decode_option_catches_what_headers_alone_do_not(data_copy):
    assert len(load_data_dir(data_copy, decode=True).images) == 12
    coco = read_json(data_copy / "annotations.json")
    path = data_copy / coco["images"][2]["file_name"]
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(path)
    assert len(load_data_dir(data_copy).images) == 12  # headers look fine
    with pytest.raises(DataValidationError) as info:
        load_data_dir(data_copy, decode=True)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: ") and "PhotometricInterpretation" in problem


def test_unknown_patient_in_images_of_is_an_input_error(valid_dir):
    with pytest.raises(InputError, match="P999"):
        load_data_dir(valid_dir).images_of(["P001", "P999"])


def test_broken_dir_reports_every_problem_naming_each_file(data_copy):
    root = data_copy
    coco = read_json(root / "annotations.json")
    images, anns = coco["images"], coco["annotations"]
    # 1. DICOM file deleted
    (root / images[0]["file_name"]).unlink()
    # 2. truncated DICOM (pixel block cut short)
    truncated = root / images[1]["file_name"]
    truncated.write_bytes(truncated.read_bytes()[:-2000])
    # 3. width differs from DICOM Columns
    images[2]["width"] = 100
    # 4. box leaves the image
    anns[3]["bbox"] = [80.0, 10.0, 30.0, 20.0]
    # 5. degenerate box
    anns[4]["bbox"] = [10.0, 10.0, 0.5, 20.0]
    # 6. category is not the WHO class of the T-score (-1.8 is osteopenia = 2)
    anns[5]["category_id"] = 3
    # 7. annotation T differs from dxa.csv
    anns[6]["t_score"] = anns[6]["t_score"] + 0.5  # -2.1 -> -1.6, still osteopenia
    # 8. duplicate annotation id
    anns[7]["id"] = anns[8]["id"]
    # 9. annotation pointing to a missing image
    anns[9]["image_id"] = 999
    # 10. unknown category id
    anns[10]["category_id"] = 7
    # 11. vertebra outside L1..L4
    images[11]["vertebra"] = "T12"
    # 12. DICOM PatientID differs from images[].patient_id
    shutil.copy(root / images[4]["file_name"], root / images[3]["file_name"])
    write_json(root / "annotations.json", coco)
    # 13. patient/vertebra pair missing from dxa.csv
    lines = (root / "dxa.csv").read_text().splitlines()
    (root / "dxa.csv").write_text("\n".join(line for line in lines if "P003,L2" not in line))
    # 14. stray DICOM file no record lists
    shutil.copy(root / images[3]["file_name"], root / "dicom" / "P001" / "stray.dcm")

    with pytest.raises(DataValidationError) as info:
        load_data_dir(root)
    problems = info.value.problems
    ann_file = f"{root}/annotations.json"

    def one(fragment: str, file: str) -> None:
        hits = [p for p in problems if fragment in p]
        assert len(hits) == 1, (fragment, problems)
        assert hits[0].startswith(f"{file}:"), hits[0]

    one("file not found", f"{root}/{images[0]['file_name']}")
    one("truncated", f"{root}/{images[1]['file_name']}")
    one("DICOM Columns 96 differ from the image width 100", f"{root}/{images[2]['file_name']}")
    one("leaves the 96x96 image", ann_file)
    one("degenerate", ann_file)
    one("category_id 3 is not the WHO class 2", ann_file)
    one("differs from dxa.csv", ann_file)
    one(f"duplicate annotation id {anns[8]['id']}", ann_file)
    one("image_id 999 is not in images", ann_file)
    one("unknown category_id 7", ann_file)
    one("vertebra 'T12' is not one of L1..L4", ann_file)
    one("DICOM PatientID 'P002' differs from patient_id 'P001'", f"{root}/{images[3]['file_name']}")
    one("no row for patient P003 vertebra L2", f"{root}/dxa.csv")
    one("dicom/P001/stray.dcm is not listed", f"{root}/dicom")
    assert len(problems) == 14, problems


def test_missing_files_and_invalid_json_are_reported_together(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "annotations.json").write_text('{"images": [}')
    with pytest.raises(DataValidationError) as info:
        load_data_dir(root)
    assert info.value.problems == [
        f"{root}/annotations.json: invalid JSON at line 1 column 13: Expecting value",
        f"{root}/dxa.csv: file not found",
    ]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("patient,vert,t\n", "header must be patient_id,vertebra,t_score"),
        ("patient_id,vertebra,t_score\nP001,L1,abc\n", "line 2: t_score 'abc' is not a finite"),
        ("patient_id,vertebra,t_score\nP001,L1,0.2\nP001,L1,0.2\n", "line 3: duplicate row"),
        ("patient_id,vertebra,t_score\nP001,L7,0.2\n", "line 2: vertebra 'L7' is not one of"),
    ],
)
def test_bad_dxa_rows_name_the_line(data_copy, content, fragment):
    (data_copy / "dxa.csv").write_text(content)
    with pytest.raises(DataValidationError) as info:
        load_data_dir(data_copy)
    hits = [p for p in info.value.problems if fragment in p]
    assert hits and hits[0].startswith(f"{data_copy}/dxa.csv: ")


def test_not_a_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        load_data_dir(tmp_path / "absent")


def test_undecodable_file_is_named(data_copy):
    coco = read_json(data_copy / "annotations.json")
    (data_copy / coco["images"][0]["file_name"]).write_bytes(b"not a dicom file" * 10)
    with pytest.raises(DataValidationError) as info:
        load_data_dir(data_copy)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{data_copy}/{coco['images'][0]['file_name']}: ")
    assert "not a readable DICOM file" in info.value.problems[0]


def test_synthetic_data_set_passes_validation(tmp_path):
    from dsnet.synth.generate import synthesize

    summary = synthesize(tmp_path / "syn", patients=2, seed=5, slices_per_vertebra=1)
    data = load_data_dir(tmp_path / "syn", decode=True)
    assert len(data.images) == summary.slices == 8
    assert len(data.patients()) == 2
