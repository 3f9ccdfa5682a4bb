"""``dsnet bench overhead`` (latency cost of the attention modules) and ``dsnet bench gpu``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import SetOption, bench_app, resolve_params

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
    from dsnet.bench.gpu.profile import (  # lazy: fast `dsnet --help`
        profile_from_params,
        with_bounds,
    )

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
