"""Synthetic data commands: ``dsnet synth``, ``dsnet preview``, ``dsnet bench synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, bench_app

DEFAULT_SYNTH = {"patients": 60, "seed": 2022, "slices_per_vertebra": 2, "variants": 0.5}

PatientsOption = Annotated[
    int | None,
    typer.Option("--patients", help="Number of patients (default: params synth.patients)."),
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Data set seed (default: synth.seed).")
]
SlicesOption = Annotated[
    int | None,
    typer.Option(
        "--slices-per-vertebra",
        help="Axial slices through each of L1-L4 (default: synth.slices_per_vertebra).",
    ),
]
VariantsOption = Annotated[
    float | None,
    typer.Option(
        "--variants",
        help="Fraction of patients scanned as variants: other matrices, spacings, small "
        "fields of view, table heights, storage orientations (default: synth.variants).",
    ),
]


def _synth_settings(
    files: list[Path] | None, overrides: list[str] | None, **flags: float | None
) -> dict[str, Any]:
    """The `synth` section (built-in defaults without a params file), then the CLI flags."""
    from dsnet.core.config import (  # lazy: fast `dsnet --help`
        DEFAULT_PARAMS,
        apply_override,
        load_params,
        section,
    )

    if files or DEFAULT_PARAMS.exists():
        params = load_params(files or None, overrides or ())
    else:  # out of the box: no params.yaml in this folder
        params = {}
        for override in overrides or ():
            apply_override(params, override)
    settings = {**DEFAULT_SYNTH, **section(params, "synth")}
    settings.update({key: value for key, value in flags.items() if value is not None})
    return settings


@app.command("synth")
def synth_command(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Data dir to write atomically; an existing one must be empty or synth's own.",
        ),
    ],
    patients: PatientsOption = None,
    seed: SeedOption = None,
    slices_per_vertebra: SlicesOption = None,
    variants: VariantsOption = None,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Generate the embedded synthetic lumbar-CT data set (DICOM + COCO boxes + DXA)."""
    from dsnet.synth.generate import synthesize  # lazy: fast `dsnet --help`

    knobs = _synth_settings(
        params,
        overrides,
        patients=patients,
        seed=seed,
        slices_per_vertebra=slices_per_vertebra,
        variants=variants,
    )
    summary = synthesize(
        out,
        knobs["patients"],
        knobs["seed"],
        knobs["slices_per_vertebra"],
        float(knobs["variants"]),
    )
    classes = ", ".join(f"{name} {count}" for name, count in summary.slice_classes.items())
    diagnoses = ", ".join(f"{name} {count}" for name, count in summary.patient_classes.items())
    typer.echo(
        f"{out}: {summary.slices} slices of {summary.patients} patients "
        f"(seed {knobs['seed']}); slices: {classes}; patients: {diagnoses}"
    )


@app.command("preview")
def preview_command(
    data: Annotated[Path, typer.Argument(help="Data dir (docs/data.md).")],
    out: Annotated[Path, typer.Option("--out", help="PNG contact sheet to write.")],
    n: Annotated[int, typer.Option("--n", help="Number of slices on the sheet.")] = 12,
    seed: Annotated[int, typer.Option("--seed", help="Which slices are drawn.")] = 0,
) -> None:
    """Draw a contact sheet: slices with their boxes, class, T-score and trabecular HU."""
    from dsnet.synth.preview import render_contact_sheet  # lazy: fast `dsnet --help`

    typer.echo(render_contact_sheet(data, out, n=n, seed=seed))


@bench_app.command("synth")
def bench_synth_command(
    patients: Annotated[int, typer.Option("--patients", help="Patients to generate.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Data set seed.")] = 0,
    slices_per_vertebra: Annotated[
        int, typer.Option("--slices-per-vertebra", help="Slices per vertebra.")
    ] = 2,
) -> None:
    """Time synthetic data generation (slices/s, target >= 20) and report peak memory."""
    from dsnet.bench.synth import bench_synth  # lazy: fast `dsnet --help`

    result = bench_synth(patients, seed, slices_per_vertebra)
    typer.echo(
        f"synth: {result.slices} slices of {result.patients} patients in {result.seconds:.1f} s "
        f"= {result.slices_per_s:.1f} slices/s (target >= 20; "
        f"{result.slices / max(result.cpu_seconds, 1e-9):.1f} per CPU-second); "
        f"peak RSS {result.peak_rss_mb:.0f} MB ({result.rss_before_mb:.0f} MB before generating); "
        f"{result.mb_written:.0f} MB written"
    )
