"""Data commands: ``dsnet split``, ``dsnet ingest`` and ``dsnet bench loader``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import (
    KeyFileOption,
    KeyOption,
    ParamsOption,
    SetOption,
    app,
    bench_app,
    resolve_params,
)

DataArg = Annotated[Path, typer.Argument(help="Data dir (docs/data.md).")]


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
    from dsnet.core.config import section  # lazy: fast `dsnet --help`
    from dsnet.data.contract import load_data_dir  # lazy: fast `dsnet --help`
    from dsnet.data.split import (  # lazy: fast `dsnet --help`
        describe_split,
        read_split,
        split_patients,
        write_split,
    )

    knobs = section(resolve_params(params, overrides), "split")
    dataset = load_data_dir(data)
    earlier = read_split(previous, both_sides=True) if previous is not None else None
    split = split_patients(
        dataset,
        test_fraction=knobs.get("test_fraction", 0.2),
        seed=knobs.get("seed", 0),
        previous=earlier,
    )
    write_split(split, out)
    typer.echo(f"{out}: {describe_split(dataset, split)}")


@app.command("ingest")
def ingest_command(
    src: Annotated[
        Path, typer.Argument(help="A data dir in the contract's layout, or a CSV of boxes.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Data dir to write (de-identified).")],
    key_file: KeyFileOption = None,
    key: KeyOption = None,
) -> None:
    """Import real CT data: check, de-identify, write a data dir and ingest_report.json.

    The key comes from --key, --key-file or env DSNET_DEID_KEY (in that order).
    """
    from dsnet.ingest.sources import REPORT_FILE, ingest, resolve_key  # lazy: fast `dsnet --help`

    report = ingest(src, out, resolve_key(key, key_file))
    summary = report.to_json()["summary"]
    typer.echo(
        f"{out}: {summary['accepted']} slices of {summary['patients']} patients ingested, "
        f"{summary['rejected']} rejected (see {out / REPORT_FILE})"
    )
    for entry in report.rejected:
        typer.echo(f"rejected {entry['source']}: {entry['reason']}", err=True)


@bench_app.command("loader")
def bench_loader_command(
    data: DataArg,
    workers: Annotated[
        list[int] | None,
        typer.Option("--workers", help="Worker count(s); repeat. Default: 0 and train.workers."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Default: train.batch_size.")
    ] = None,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Data-loader throughput (images/s) for one epoch with the training augmentations."""
    import torch  # lazy: fast `dsnet --help`
    from rich.console import Console  # lazy: fast `dsnet --help`
    from rich.table import Table  # lazy: fast `dsnet --help`

    from dsnet.bench.loader import bench_loader  # lazy: fast `dsnet --help`
    from dsnet.core.config import section  # lazy: fast `dsnet --help`
    from dsnet.data.contract import load_data_dir  # lazy: fast `dsnet --help`

    torch.set_num_threads(1)
    settings = resolve_params(params, overrides)
    counts = workers or sorted({0, int(section(settings, "train").get("workers", 2))})
    speeds = bench_loader(load_data_dir(data), settings, counts, batch_size)
    table = Table(title=f"data loader, {data}")
    for column in ("workers", "batch size", "images", "seconds", "images/s"):
        table.add_column(column, justify="right")
    for speed in speeds:
        table.add_row(
            str(speed.workers),
            str(speed.batch_size),
            str(speed.images),
            f"{speed.seconds:.2f}",
            f"{speed.images_per_s:.1f}",
        )
    Console().print(table)
