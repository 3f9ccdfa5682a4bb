"""The bad-input corpus: every hostile or careless input the CLI must refuse cleanly.

Each `Case` builds its inputs in a fresh folder (nothing is checked in: DICOM comes from
pydicom's real sample CT and phantom slices, checkpoints from an untrained tiny model)
and returns a `Spec`: the ``dsnet`` arguments, the environment, and what the one stderr
line must say. Categories:

- ``destroy``: outputs that would overwrite or swallow what the user has;
- ``contract``: inputs that used to give tracebacks, exit 1 or hangs (FIFOs, deep JSON,
  worker-side read errors, malformed checkpoints, bad tracking URIs...);
- ``message``: errors that must name the right file or setting, on one line;
- ``strict``: typos and out-of-range values that used to be accepted silently;
- ``accept``: unusual but valid inputs that must be accepted (exit 0).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import torch
import yaml
from datadir_factory import make_data_dir, read_json
from phi_factory import BOX, SIZE
from pydicom.uid import DeflatedExplicitVRLittleEndian

KEY = "corpus-test-key-0123456789"
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
TINY_TRAIN = {
    "preprocess": {"spacing_mm": 1.5, "canvas_px": 128,
                   "windows": [[-200, 1200], [0, 400], [-160, 240]]},
    "model": {"backbone": "mobilenet_v3", "attention": "none", "anchor_sizes": []},
    "train": {"device": "cpu", "epochs": 1, "batch_size": 2, "workers": 1, "amp": False,
              "cpu_bf16": False},
}  # fmt: skip


@dataclass(frozen=True)
class World:
    """Inputs shared by the cases (read-only): a data dir, its split, a checkpoint.

    Attributes:
        root: Folder holding them.
        data: Data dir of three phantom patients.
        split: Its split.json.
        model: An untrained tiny checkpoint (``model.pt``).
        slice: One good CT slice.
        params: The repository's params.yaml.
    """

    root: Path
    data: Path
    split: Path
    model: Path
    slice: Path
    params: Path


@dataclass
class Spec:
    """One run of ``dsnet`` and what must come out of it.

    Attributes:
        argv: Arguments after ``dsnet``.
        names: Texts the stderr line must contain (the file or parameter it blames).
        fragment: Text the stderr line must contain (what is wrong).
        exit: Expected exit status (2; 0 for ``accept`` cases).
        env: Extra environment variables.
        cwd: Working folder (default: the case folder).
        absent: Texts that must not appear on stderr.
        subprocess: Run as a real process (stderr and exit status exactly as a user sees
            them: library warnings, logging); otherwise in-process through `dsnet.cli.main`.
        progress: The command reports progress on stderr before failing (``train``): the
            error must still be the one ``error:`` line, and the last.
    """

    argv: list[str]
    names: list[str] = field(default_factory=list)
    fragment: str = ""
    exit: int = 2
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    absent: list[str] = field(default_factory=list)
    subprocess: bool = False
    progress: bool = False


@dataclass(frozen=True)
class Case:
    """A named bad input: `build(world, folder)` writes it and returns its `Spec`."""

    category: str
    name: str
    build: Callable[[World, Path], Spec]

    @property
    def id(self) -> str:
        return f"{self.category}-{self.name}"


def make_world(root: Path) -> World:
    """Write the shared inputs into `root`."""
    from tiny import untrained_checkpoint

    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import split_patients, write_split

    scores = {"P1": -1.2, "P2": -1.6, "P3": 0.4, "P4": 0.2, "P5": -2.8, "P6": -3.0}
    data = make_data_dir(root / "data", {p: {"L1": t} for p, t in scores.items()}, size=SIZE)
    write_split(split_patients(load_data_dir(data), 0.34, 0), root / "split.json")
    model = untrained_checkpoint(root, {"note": "corpus"})
    first = read_json(data / "annotations.json")["images"][0]["file_name"]
    params = Path(shutil.copy(PARAMS, root))
    return World(root, data, root / "split.json", model, data / first, params)


def one_slice_source(folder: Path, t_score: float = -1.2) -> tuple[Path, Path]:
    """A data dir of one patient with one slice; returns (data dir, its DICOM file)."""
    src = make_data_dir(folder, {"P1": {"L1": t_score}}, size=SIZE)
    return src, src / read_json(src / "annotations.json")["images"][0]["file_name"]


def edit_slice(path: Path, **tags: object) -> None:
    """Set header attributes of a DICOM file in place."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def copy_data(world: World, folder: Path) -> Path:
    return Path(shutil.copytree(world.data, folder / "data"))


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def bad_checkpoint(world: World, folder: Path, section: str, key: str, value: object) -> Path:
    checkpoint = torch.load(world.model, weights_only=True)
    checkpoint[section][key] = value
    torch.save(checkpoint, folder / "bad.pt")
    return folder / "bad.pt"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def ingest_of(src: Path, folder: Path) -> list[str]:
    return ["ingest", str(src), "--out", str(folder / "out"), "--key", KEY]


def predict_of(world: World, folder: Path, *extra: str, model: Path | None = None) -> list[str]:
    model = model or world.model
    return ["predict", str(world.slice), "--model", str(model), "--out", str(folder / "o"), *extra]


def split_of(data: Path, folder: Path, *extra: str, params: Path | None = None) -> list[str]:
    argv = ["split", str(data), "--out", str(folder / "split.json"), *extra]
    return argv if "-p" in extra else [*argv, "-p", str(params or PARAMS)]


# --- destroy ----------------------------------------------------------------------------


def _synth_unrelated(world: World, folder: Path) -> Spec:
    thesis = folder / "thesis"
    thesis.mkdir()
    (thesis / "ch1.tex").write_text("years of work")
    argv = ["synth", "--out", str(thesis), "--patients", "1", "--slices-per-vertebra", "1"]
    return Spec(argv, [str(thesis)], "not an earlier dsnet synth output")


def _synth_file(world: World, folder: Path) -> Spec:
    (folder / "notes.txt").write_text("mine")
    argv = ["synth", "--out", str(folder / "notes.txt"), "--patients", "1"]
    return Spec(argv, [str(folder / "notes.txt")], "is a file")


def _synth_cwd(world: World, folder: Path) -> Spec:
    (folder / "notes.txt").write_text("mine")
    return Spec(["synth", "--out", ".", "--patients", "1"], [str(folder)], "current folder")


def _ingest_onto_file(world: World, folder: Path) -> Spec:
    (folder / "out").write_text("a report I wrote")
    return Spec(ingest_of(world.data, folder), [str(folder / "out")], "not an earlier ingest")


def _split_onto_folder(world: World, folder: Path) -> Spec:
    (folder / "split.json").mkdir()
    (folder / "split.json" / "keep.txt").write_text("mine")
    return Spec(split_of(world.data, folder), [str(folder / "split.json")], "is a folder")


def _predict_onto_file(world: World, folder: Path) -> Spec:
    (folder / "o").write_text("mine")
    return Spec(predict_of(world, folder), [str(folder / "o")], "is a file")


def _evaluate_metrics_onto_folder(world: World, folder: Path) -> Spec:
    (folder / "m").mkdir()
    (folder / "m" / "keep.txt").write_text("mine")
    argv = ["evaluate", str(world.model), str(world.data), "--split", str(world.split)]
    argv += ["--metrics", str(folder / "m"), "-p", str(world.params), "-S", "evaluate.device=cpu"]
    return Spec(argv, [str(folder / "m")], "is a folder", env={"DSNET_TRACKING": "off"})


def _train_onto_file(world: World, folder: Path) -> Spec:
    (folder / "models").write_text("mine")
    argv = ["train", str(world.data), "--split", str(world.split), "--out", str(folder / "models")]
    argv += ["-p", str(world.params), "-S", "train.device=cpu"]
    return Spec(argv, [str(folder / "models")], "is a file", env={"DSNET_TRACKING": "off"})


# --- contract ---------------------------------------------------------------------------


def _train_worker_read_error(world: World, folder: Path) -> Spec:
    data = copy_data(world, folder)
    for path in sorted((data / "dicom").rglob("*.dcm")):
        edit_slice(path, PixelSpacing=[10.0, 10.0])  # passes header checks, fails to read
    params = folder / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY_TRAIN))
    argv = ["train", str(data), "--split", str(world.split), "--out", str(folder / "run")]
    argv += ["-p", str(world.params), "-p", str(params)]
    return Spec(
        argv,
        [str(data / "dicom")],
        "absurd PixelSpacing",
        env={"DSNET_TRACKING": "off"},
        progress=True,
    )


def _ingest_fifo(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    path.unlink()
    fifo(path)
    return Spec(ingest_of(src, folder), [str(path)], "is a FIFO")


def _annotations_deep(world: World, folder: Path) -> Spec:
    data = copy_data(world, folder)
    (data / "annotations.json").write_text(deep_json())
    return Spec(split_of(data, folder), [str(data / "annotations.json")], "nested too deeply")


def _previous_deep(world: World, folder: Path) -> Spec:
    (folder / "prev.json").write_text(deep_json())
    argv = split_of(world.data, folder, "--previous", str(folder / "prev.json"))
    return Spec(argv, [str(folder / "prev.json")], "nested too deeply")


def _params_deep(world: World, folder: Path) -> Spec:
    (folder / "deep.yaml").write_text("split: " + deep_json(1_000))
    argv = split_of(world.data, folder, "-p", str(folder / "deep.yaml"))
    return Spec(argv, [str(folder / "deep.yaml")], "nested too deeply")


def _checkpoint_bad_value(world: World, folder: Path) -> Spec:
    model = bad_checkpoint(world, folder, "model", "min_size", "abc")
    spec = predict_of(world, folder, model=model)
    return Spec(spec, [str(model), "model.min_size"], "is not an integer")


def _checkpoint_bad_windows(world: World, folder: Path) -> Spec:
    model = bad_checkpoint(world, folder, "preprocess", "windows", [[400, 0]])
    spec = predict_of(world, folder, model=model)
    return Spec(spec, [str(model), "preprocess.windows"], "ascending")


def _checkpoint_pickle(world: World, folder: Path) -> Spec:
    torch.save({"format": "dsnet-checkpoint/1", "x": _Evil()}, folder / "evil.pt")
    spec = predict_of(world, folder, model=folder / "evil.pt")
    return Spec(spec, [str(folder / "evil.pt")], "not a readable checkpoint",
                absent=["weights_only", "pwned"])  # fmt: skip


def _key_file_fifo(world: World, folder: Path) -> Spec:
    key = fifo(folder / "key")
    argv = ["ingest", str(world.data), "--out", str(folder / "out"), "--key-file", str(key)]
    return Spec(argv, [str(key)], "is a FIFO")


def _params_fifo(world: World, folder: Path) -> Spec:
    params = fifo(folder / "params.yaml")
    return Spec(split_of(world.data, folder, "-p", str(params)), [str(params)], "is a FIFO")


def _predict_fifo_input(world: World, folder: Path) -> Spec:
    pipe = fifo(folder / "slice.dcm")
    argv = ["predict", str(pipe), "--model", str(world.model), "--out", str(folder / "o")]
    return Spec(argv, [str(pipe)], "is a FIFO")


def _tracking_bogus(world: World, folder: Path) -> Spec:
    env = {"MLFLOW_TRACKING_URI": "bogus://x"}
    return Spec(["registry", "list"], ["MLFLOW_TRACKING_URI"], "unsupported scheme", env=env)


def _tracking_sqlite_missing_dir(world: World, folder: Path) -> Spec:
    env = {"MLFLOW_TRACKING_URI": "sqlite:////nonexistent/dir/x.db"}
    return Spec(["registry", "list"], ["MLFLOW_TRACKING_URI"], "does not exist", env=env)


def _tracking_sqlite_missing_store(world: World, folder: Path) -> Spec:
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'none.db'}"}
    return Spec(["registry", "list"], ["MLFLOW_TRACKING_URI"], "no tracking store", env=env)


def _registry_unknown_name(world: World, folder: Path) -> Spec:
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("dsnet")
    return Spec(
        ["registry", "list", "--name", "dnset"],
        ["--name dnset"],
        "registered: dsnet",
        env={"MLFLOW_TRACKING_URI": uri},
        subprocess=True,  # MLflow and alembic log on stderr: only the error may show
    )


def _inbox_is_file(world: World, folder: Path) -> Spec:
    from intake_factory import data_repo

    repo = data_repo(folder / "repo", str(folder / "remote"))
    (folder / "inbox.txt").write_text("not a folder")
    argv = ["intake", "--inbox", str(folder / "inbox.txt"), "--data-repo", str(repo)]
    argv += ["--key", KEY, "-p", str(world.params)]
    return Spec(argv, [str(folder / "inbox.txt")], "is a file", env={"DSNET_TRACKING": "off"})


def _ingest_missing_source(world: World, folder: Path) -> Spec:
    return Spec(ingest_of(folder / "nope", folder), [str(folder / "nope")], "not found")


def _warnings_stay_off_stderr(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    ds = pydicom.dcmread(path)
    ds.InstitutionName = "x" * 80  # pydicom warns: longer than LO allows
    ds.PixelSpacing = [10.0, 10.0]  # and the slice is refused
    ds.save_as(path, enforce_file_format=True)
    return Spec(ingest_of(src, folder), [str(path)], "absurd PixelSpacing", subprocess=True)


# --- message ----------------------------------------------------------------------------


def _device_names_setting(world: World, folder: Path) -> Spec:
    spec = predict_of(world, folder, "-S", "evaluate.device=tpu")
    return Spec(spec, ["evaluate.device"], "not one of auto, cpu, cuda", absent=["train.device"])


def _newline_in_data_name(world: World, folder: Path) -> Spec:
    forged = folder / "x\nerror: forged line"
    return Spec(split_of(forged, folder), ["x\\nerror: forged line"], "")


def _newline_in_predict_input(world: World, folder: Path) -> Spec:
    path = folder / "a\nerror: all good.dcm"
    path.write_text("not DICOM")
    argv = ["predict", str(path), "--model", str(world.model), "--out", str(folder / "o")]
    return Spec(argv, ["a\\nerror: all good.dcm"], "not a DICOM file")


# --- strict -----------------------------------------------------------------------------


def _set_unknown_key(world: World, folder: Path) -> Spec:
    argv = split_of(world.data, folder, "-S", "train.epoch=3")
    return Spec(argv, ["train.epoch", "-S train.epoch=3"], "did you mean train.epochs")


def _params_unknown_key(world: World, folder: Path) -> Spec:
    (folder / "p.yaml").write_text("split:\n  test_fration: 0.3\n")
    argv = split_of(world.data, folder, "-p", str(folder / "p.yaml"))
    return Spec(argv, ["split.test_fration", str(folder / "p.yaml")], "did you mean")


def _set_unknown_section(world: World, folder: Path) -> Spec:
    argv = split_of(world.data, folder, "-S", "trian.epochs=3")
    return Spec(argv, ["trian"], "did you mean train")


def _threshold_text(world: World, folder: Path) -> Spec:
    spec = predict_of(world, folder, "-S", "evaluate.decision_threshold=abc")
    return Spec(spec, ["evaluate.decision_threshold"], "is not a number")


def _threshold_two(world: World, folder: Path) -> Spec:
    spec = predict_of(world, folder, "-S", "evaluate.decision_threshold=2")
    return Spec(spec, ["evaluate.decision_threshold"], "must be <= 1")


def _test_fraction_one(world: World, folder: Path) -> Spec:
    argv = split_of(world.data, folder, "-S", "split.test_fraction=1")
    return Spec(argv, ["split.test_fraction"], "must be < 1")


def _hflip_probability(world: World, folder: Path) -> Spec:
    argv = split_of(world.data, folder, "-S", "train.augment.hflip=1.5")
    return Spec(argv, ["train.augment.hflip"], "must be <= 1")


def _hu_thresholds_order(world: World, folder: Path) -> Spec:
    spec = predict_of(world, folder, "-S", "evaluate.hu_thresholds=[100,160]")
    return Spec(spec, ["evaluate.hu_thresholds"], "descending")


def _t_score_99(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    (src / "dxa.csv").write_text("patient_id,vertebra,t_score\nP1,L1,99\n")
    coco = read_json(src / "annotations.json")
    coco["annotations"][0].update(t_score=99.0, category_id=1)
    (src / "annotations.json").write_text(json.dumps(coco))
    return Spec(ingest_of(src, folder), [str(src / "dxa.csv")], "outside the plausible range -6..6")


def _boxes_as_strings(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    coco = read_json(src / "annotations.json")
    coco["annotations"][0]["bbox"] = [str(v) for v in coco["annotations"][0]["bbox"]]
    (src / "annotations.json").write_text(json.dumps(coco))
    return Spec(ingest_of(src, folder), [str(path)], "is not [x, y, w, h] numbers")


def _rows_columns_beyond_pixels(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    edit_slice(path, Rows=SIZE[0] * 2, Columns=SIZE[1] * 2)
    coco = read_json(src / "annotations.json")
    coco["images"][0].update(width=SIZE[1] * 2, height=SIZE[0] * 2)
    (src / "annotations.json").write_text(json.dumps(coco))
    return Spec(ingest_of(src, folder), [str(path)], "Pixel Data holds")


def _slope_1e300(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    edit_slice(path, RescaleSlope=1e300)
    return Spec(ingest_of(src, folder), [str(path)], "non-finite HU")


def _float_bits_in_integer_pixels(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = hu.tobytes()  # float32 bits where the header says int32
    ds.save_as(path, enforce_file_format=True)
    return Spec(ingest_of(src, folder), [str(path)], "outside the plausible")


def _previous_empty_side(world: World, folder: Path) -> Spec:
    prev = folder / "prev.json"
    prev.write_text(json.dumps({"train": [], "test": ["P1"], "seed": 0, "test_fraction": 0.2}))
    argv = split_of(world.data, folder, "--previous", str(prev))
    return Spec(argv, [str(prev)], "'train' is empty")


def _csv_t_score(world: World, folder: Path) -> Spec:
    src, path = one_slice_source(folder / "src")
    (src / "annotations.json").unlink()
    (src / "dxa.csv").unlink()
    table = src / "boxes.csv"
    x1, y1, x2, y2 = BOX
    rel = path.relative_to(src).as_posix()
    table.write_text(
        f"file,patient_id,vertebra,x1,y1,x2,y2,t_score\n{rel},P1,L1,{x1},{y1},{x2},{y2},-99\n"
    )
    return Spec(ingest_of(table, folder), [str(path)], "outside the plausible range")


# --- accept -----------------------------------------------------------------------------


def _dxa_with_bom(world: World, folder: Path) -> Spec:
    data = copy_data(world, folder)
    dxa = data / "dxa.csv"
    dxa.write_bytes(b"\xef\xbb\xbf" + dxa.read_bytes())
    return Spec(split_of(data, folder), exit=0)


def _deflated_slice(world: World, folder: Path) -> Spec:
    data = copy_data(world, folder)
    for path in sorted((data / "dicom").rglob("*.dcm"))[:2]:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    return Spec(split_of(data, folder), exit=0)


CASES = [
    Case("destroy", "synth-into-unrelated-folder", _synth_unrelated),
    Case("destroy", "synth-onto-file", _synth_file),
    Case("destroy", "synth-into-current-folder", _synth_cwd),
    Case("destroy", "ingest-onto-file", _ingest_onto_file),
    Case("destroy", "split-onto-folder", _split_onto_folder),
    Case("destroy", "predict-onto-file", _predict_onto_file),
    Case("destroy", "evaluate-metrics-onto-folder", _evaluate_metrics_onto_folder),
    Case("destroy", "train-out-onto-file", _train_onto_file),
    Case("contract", "train-worker-read-error", _train_worker_read_error),
    Case("contract", "ingest-fifo-in-annotations", _ingest_fifo),
    Case("contract", "annotations-nested-too-deep", _annotations_deep),
    Case("contract", "previous-split-nested-too-deep", _previous_deep),
    Case("contract", "params-nested-too-deep", _params_deep),
    Case("contract", "checkpoint-malformed-config", _checkpoint_bad_value),
    Case("contract", "checkpoint-inverted-window", _checkpoint_bad_windows),
    Case("contract", "checkpoint-with-code", _checkpoint_pickle),
    Case("contract", "key-file-fifo", _key_file_fifo),
    Case("contract", "params-fifo", _params_fifo),
    Case("contract", "predict-fifo-input", _predict_fifo_input),
    Case("contract", "tracking-uri-bogus-scheme", _tracking_bogus),
    Case("contract", "tracking-sqlite-missing-folder", _tracking_sqlite_missing_dir),
    Case("contract", "tracking-sqlite-missing-store", _tracking_sqlite_missing_store),
    Case("contract", "registry-unknown-model", _registry_unknown_name),
    Case("contract", "inbox-is-a-file", _inbox_is_file),
    Case("contract", "library-warnings-off-stderr", _warnings_stay_off_stderr),
    Case("message", "device-error-names-its-setting", _device_names_setting),
    Case("message", "ingest-missing-source", _ingest_missing_source),
    Case("message", "newline-in-data-dir-name", _newline_in_data_name),
    Case("message", "newline-in-predict-input", _newline_in_predict_input),
    Case("strict", "set-unknown-key", _set_unknown_key),
    Case("strict", "set-unknown-section", _set_unknown_section),
    Case("strict", "params-file-unknown-key", _params_unknown_key),
    Case("strict", "decision-threshold-text", _threshold_text),
    Case("strict", "decision-threshold-2", _threshold_two),
    Case("strict", "test-fraction-1", _test_fraction_one),
    Case("strict", "hflip-probability-1.5", _hflip_probability),
    Case("strict", "hu-thresholds-ascending", _hu_thresholds_order),
    Case("strict", "t-score-99", _t_score_99),
    Case("strict", "csv-t-score-minus-99", _csv_t_score),
    Case("strict", "boxes-as-strings", _boxes_as_strings),
    Case("strict", "rows-columns-beyond-pixel-data", _rows_columns_beyond_pixels),
    Case("strict", "rescale-slope-1e300", _slope_1e300),
    Case("strict", "float-bits-in-integer-pixels", _float_bits_in_integer_pixels),
    Case("strict", "previous-split-empty-side", _previous_empty_side),
    Case("accept", "dxa-csv-with-bom", _dxa_with_bom),
    Case("accept", "deflated-transfer-syntax-in-split", _deflated_slice),
]
"""Every case, one test id each."""
