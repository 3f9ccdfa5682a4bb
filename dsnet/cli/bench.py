"""``dsnet bench``: ``overhead`` (the attention modules' latency), ``gpu`` and ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import ParamsOption, SetOption, bench_app, params_if_present, resolve_params

PAPER_PROFILE_FILES = [Path("params.yaml"), Path("params/paper.yaml")]
ProfileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--params",
        "-p",
        help="Parameter files of the profile, merged in order "
        "(default: params.yaml params/paper.yaml, the paper profile).",
    ),
]


@bench_app.command("overhead")
def overhead(
    size: Annotated[int, typer.Option(help="Input side in pixels (size × size, batch 1).")] = 256,
    repeats: Annotated[int, typer.Option(help="Timed rounds; the median is reported.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed rounds first.")] = 2,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's setting).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    backbone: Annotated[
        list[str] | None,
        typer.Option(help="Only this backbone family (repeatable): resnet50, vgg16, mobilenet_v3."),
    ] = None,
) -> None:
    """Time every detector configuration (R50 none/se/sk/ds, VGG16 ±DS, MobileNetV3 ±DS).

    Eval mode, batch 1, the same input and shared weights for all, in one run; prints
    ms/image and the ratio to the plain detector of the same backbone.
    """
    from rich.console import Console  # lazy: fast `dsnet --help`

    from dsnet.bench.overhead import benchmark_overhead, overhead_table  # lazy: fast `dsnet --help`
    from dsnet.models import BACKBONES  # lazy: fast `dsnet --help`

    result = benchmark_overhead(
        size=size,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        device=device,
        backbones=backbone or BACKBONES,
    )
    Console().print(overhead_table(result))


@bench_app.command("gpu")
def gpu(
    out: Annotated[Path | None, typer.Option(help="Write the result JSON here.")] = None,
    tiny: Annotated[
        bool, typer.Option(help="Test size (64 px, batch 2, 1 step per stage); ignores --params.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[
        list[str] | None, typer.Option(help="fp16 | bf16 | fp32 (repeatable; default all).")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Timed iterations per stage.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed iterations per stage.")] = None,
    stage_seconds: Annotated[float | None, typer.Option(help="Time cap of one stage.")] = None,
    budget_seconds: Annotated[
        float | None, typer.Option(help="No stage starts after this many seconds.")
    ] = None,
    params: ProfileOption = None,
    overrides: SetOption = None,
) -> None:
    """Train and infer R50 and R50+DS at the paper profile: images/s, ratios, memory, settings.

    Training (batch of the profile) and inference (batch 1 and 16) images/s in fp16, bf16
    and fp32, DS/plain ratios, peak GPU memory, the projected paper-profile time, and
    channels_last, cudnn.benchmark and torch.compile each off and on. Same as
    python -m dsnet.bench.gpu (torch only) and bench/gpu.sh; docs/training.md explains
    the table.
    """
    from dsnet.bench.gpu import (  # lazy: fast `dsnet --help`
        TINY_BUDGET,
        TINY_PROFILE,
        BenchBudget,
        bench_gpu,
        format_table,
    )
    from dsnet.bench.gpu.measure import PRECISIONS  # lazy: fast `dsnet --help`
    from dsnet.bench.gpu.profile import profile_from_params, with_bounds  # lazy: fast --help

    if tiny:
        profile = TINY_PROFILE
    else:
        profile = profile_from_params(resolve_params(params or PAPER_PROFILE_FILES, overrides))
    budget = with_bounds(
        TINY_BUDGET if tiny else BenchBudget(),
        iterations=iterations,
        warmup=warmup,
        stage_seconds=stage_seconds,
        total_seconds=budget_seconds,
    )
    result = bench_gpu(profile, budget, device, precision or tuple(PRECISIONS), out, tiny=tiny)
    typer.echo(format_table(result))
    if out is not None:
        typer.echo(f"wrote {out}")


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

    result = bench_predict(model, dicom, repeats, params_if_present(params, overrides))
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
