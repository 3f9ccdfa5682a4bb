"""Data commands: ``dsnet split``, ``dsnet ingest`` and ``dsnet bench loader``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, resolve_params

DataArg = Annotated[Path, typer.Argument(help="Data dir (DESIGN.md data contract).")]


@app.command("split")
def split_command(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help="split.json to write.")],
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="An earlier split.json: its patients keep their side (stable as data grows).",
        ),
    ] = None,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Split patients (never slices) into train and test, stratified by diagnosis."""
    from dsnet.config import section
    from dsnet.data.contract import load_data_dir
    from dsnet.data.split import describe_split, read_split, split_patients, write_split

    knobs = section(resolve_params(params, overrides), "split")
    dataset = load_data_dir(data)
    earlier = read_split(previous) if previous is not None else None
    split = split_patients(
        dataset,
        test_fraction=knobs.get("test_fraction", 0.2),
        seed=knobs.get("seed", 0),
        previous=earlier,
    )
    write_split(split, out)
    typer.echo(f"{out}: {describe_split(dataset, split)}")
