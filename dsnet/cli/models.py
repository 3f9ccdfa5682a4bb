"""``dsnet bench overhead``: latency cost of the attention modules."""

from __future__ import annotations

from typing import Annotated

import typer

from dsnet.cli.app import bench_app


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
