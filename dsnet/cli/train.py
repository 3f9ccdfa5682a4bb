"""Training and evaluation commands: ``dsnet train`` (and the evaluation commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, bench_app, resolve_params

# --- dsnet train ----------------------------------------------------------------------------


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="Data dir (DICOM + annotations.json + dxa.csv).")],
    split: Annotated[Path, typer.Option("--split", help="split.json (patients per side).")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for model.pt, last.ckpt and train_run.json.")
    ],
    plots_dir: Annotated[
        Path, typer.Option("--plots-dir", help="Folder for train_loss.csv.")
    ] = Path("plots"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/last.ckpt up to train.epochs.")
    ] = False,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Train the detector on the split's training patients (torchrun-aware).

    Reads params sections preprocess, model and train. Run under
    ``torchrun --nproc_per_node N -m dsnet train ...`` for DistributedDataParallel.
    """
    from dsnet.training.train import train  # lazy: fast `dsnet --help`

    train(data, split, out, resolve_params(params, overrides), resume=resume, plots_dir=plots_dir)


# --- dsnet evaluate | predict | ablate | bench predict ---------------------------------------


def _params_if_present(files: list[Path] | None, overrides: list[str] | None) -> dict:
    """Like `resolve_params`, but without -p and without ./params.yaml give only the -S values."""
    from dsnet.core.config import DEFAULT_PARAMS, apply_override  # lazy: fast `dsnet --help`

    if files or DEFAULT_PARAMS.is_file():
        return resolve_params(files, overrides)
    params: dict = {}
    for override in overrides or ():
        apply_override(params, override)
    return params


@app.command("evaluate")
def evaluate_command(
    model: Annotated[Path, typer.Argument(help="Checkpoint model.pt.")],
    data: Annotated[Path, typer.Argument(help="Data dir (DICOM + annotations.json + dxa.csv).")],
    split: Annotated[Path, typer.Option("--split", help="split.json; its test patients are used.")],
    metrics: Annotated[
        Path, typer.Option("--metrics", help="Where to write metrics.json (atomically).")
    ] = Path("metrics.json"),
    plots_dir: Annotated[
        Path, typer.Option("--plots-dir", help="Folder for PR curves and confusion matrix.")
    ] = Path("plots"),
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Evaluate a checkpoint on the hold-out patients (mAP50, recall, accuracy, FPS, ...).

    Reads params sections preprocess and evaluate. Definitions: docs/metrics.md.
    """
    from dsnet.evaluation.evaluate import evaluate  # lazy: fast `dsnet --help`

    m = evaluate(model, data, split, metrics, plots_dir, resolve_params(params, overrides))

    def show(key: str) -> str:
        return "n/a" if m.get(key) is None else f"{m[key]:.3f}"

    typer.echo(
        f"mAP50 {show('map50')}  recall {show('recall')}  acc {show('acc')}  "
        f"patient acc {show('patient_acc')}  HU baseline acc {show('hu_baseline_acc')}  "
        f"{show('fps')} images/s on {m['device']}  ({m['n_images']} slices) -> {metrics}"
    )


@app.command("predict")
def predict_command(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files and/or folders (recursive).")],
    model: Annotated[
        str, typer.Option("--model", help="model.pt, or an MLflow URI like models:/dsnet@champion.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (JSON + PNG per slice).")],
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Find and grade the vertebral bodies on CT slices; write JSON, overlays and a summary.

    Uses params evaluate.decision_threshold, hu_thresholds and device when a params
    file is given or ./params.yaml exists. Exit 2 if any file could not be processed
    (one line per file on stderr; the others are still processed).
    """
    import sys  # lazy: fast `dsnet --help`

    from dsnet.core.errors import printable  # lazy: fast `dsnet --help`
    from dsnet.inference.predict import predict  # lazy: fast `dsnet --help`

    summary = predict(paths, model, out, _params_if_present(params, overrides))
    for failed in summary.failed:
        print(f"error: {printable(failed.file)}: {failed.reason}", file=sys.stderr)
    done = len(summary.files) - len(summary.failed)
    typer.echo(f"{done}/{len(summary.files)} slices predicted -> {out / 'summary.json'}")
    if summary.failed:
        raise typer.Exit(2)


@app.command("ablate")
def ablate_command(
    data: Annotated[Path, typer.Argument(help="Data dir (DICOM + annotations.json + dxa.csv).")],
    split: Annotated[Path, typer.Option("--split", help="split.json (patients per side).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for ablation.md/.csv and runs.")],
    configs: Annotated[
        list[str] | None,
        typer.Option(
            "--configs",
            help="Configurations, comma-separated or repeated (default: ablate.configs, "
            "else all eight): R50, R50+SE, R50+SK, R50+DS, VGG16, VGG16+DS, MobileNet, "
            "MobileNet+DS.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Reuse finished configurations with equal params.")
    ] = False,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Train and evaluate the paper's Table 1-2 configurations under identical settings."""
    from dsnet.evaluation.ablate import ablate  # lazy: fast `dsnet --help`

    names = [n.strip() for item in configs or () for n in item.split(",") if n.strip()]
    rows = ablate(data, split, out, resolve_params(params, overrides), names or None, resume)
    typer.echo(f"{len(rows)} configuration(s) -> {out / 'ablation.md'}, {out / 'ablation.csv'}")


@bench_app.command("predict")
def bench_predict_command(
    model: Annotated[str, typer.Argument(help="model.pt or an MLflow model URI.")],
    dicom: Annotated[list[Path], typer.Argument(help="DICOM slices to time.")],
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per slice.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the result JSON.")] = None,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Time end-to-end prediction per slice against the bare model forward (target <= 1.3x)."""
    from rich.console import Console  # lazy: fast `dsnet --help`
    from rich.table import Table  # lazy: fast `dsnet --help`

    from dsnet.bench.predict import TARGET_RATIO, bench_predict  # lazy: fast `dsnet --help`
    from dsnet.core.fsutil import atomic_write_json  # lazy: fast `dsnet --help`

    result = bench_predict(model, dicom, repeats, _params_if_present(params, overrides))
    table = Table(title=f"dsnet predict per slice vs model forward ({result.device})")
    for column in ("slice", "end to end ms", "forward ms", "ratio"):
        table.add_column(column, justify="left" if column == "slice" else "right")
    for s in result.slices:
        table.add_row(
            Path(s.file).name, f"{1e3 * s.end_to_end_s:.1f}", f"{1e3 * s.forward_s:.1f}",
            f"{s.ratio:.2f}x",
        )  # fmt: skip
    Console().print(table)
    verdict = "meets" if result.ratio <= TARGET_RATIO else "misses"
    typer.echo(f"overall ratio {result.ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    if out is not None:
        atomic_write_json(out, result.as_dict())
