"""``dsnet evaluate``: a checkpoint on the hold-out patients."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, resolve_params


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
