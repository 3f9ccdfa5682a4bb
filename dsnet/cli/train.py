"""Training commands: ``dsnet train`` and ``dsnet ablate`` (train + evaluate per row)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, resolve_params


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
            "else all): R50, R50+SE, R50+SK, R50+DS, R50+DS-dense, VGG16, VGG16+DS, "
            "MobileNet, MobileNet+DS.",
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
