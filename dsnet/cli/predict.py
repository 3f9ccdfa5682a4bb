"""``dsnet predict``: find and grade the vertebral bodies on DICOM slices."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, params_if_present


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

    summary = predict(paths, model, out, params_if_present(params, overrides))
    for failed in summary.failed:
        print(f"error: {printable(failed.file)}: {failed.reason}", file=sys.stderr)
    done = len(summary.files) - len(summary.failed)
    typer.echo(f"{done}/{len(summary.files)} slices predicted -> {out / 'summary.json'}")
    if summary.failed:
        raise typer.Exit(2)
