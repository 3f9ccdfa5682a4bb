"""The `dsnet` Typer application, its command groups and shared options.

Command modules (`dsnet.cli.<area>`) attach their commands to these objects. They only
parse arguments and call one library function each; heavy imports (torch, mlflow, kfp)
happen inside the command functions so that ``dsnet --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dsnet.core.config import DEFAULT_PARAMS, apply_override, load_params

app = typer.Typer(
    name="dsnet",
    help="DSNet-Ops: opportunistic osteoporosis screening on lumbar CT (DSNet detector + MLOps).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
registry_app = typer.Typer(
    help="Review the model registry: list, compare, promote, rollback.", no_args_is_help=True
)
pipeline_app = typer.Typer(
    help="Kubeflow pipeline: run on a cluster, schedule retraining, or run locally.",
    no_args_is_help=True,
)
bench_app = typer.Typer(help="Benchmarks (speed and memory targets).", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(bench_app, name="bench")

ParamsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--params",
        "-p",
        help="Parameter file(s), merged in order (default: params.yaml). "
        "Add a profile such as params/paper.yaml after the base.",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a parameter, e.g. -S train.epochs=3."),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option("--key-file", help="File holding the secret de-identification key."),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", help="The key itself (tests; prefer --key-file or env)."),
]


def resolve_params(files: list[Path] | None, overrides: list[str] | None) -> dict[str, Any]:
    """Merge the `--params` files and `--set` overrides of a command."""
    return load_params(files or None, overrides or ())


def params_if_present(files: list[Path] | None, overrides: list[str] | None) -> dict:
    """Like `resolve_params`, but without -p and without ./params.yaml give only the -S values."""
    if files or DEFAULT_PARAMS.is_file():
        return resolve_params(files, overrides)
    params: dict = {}
    for override in overrides or ():
        apply_override(params, override)
    return params
