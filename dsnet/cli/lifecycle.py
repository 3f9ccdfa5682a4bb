"""Lifecycle commands: ``dsnet register``, ``dsnet registry list|compare|review|promote|...``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dsnet.cli.app import ParamsOption, SetOption, app, registry_app, resolve_params
from dsnet.core.errors import InputError

NameOption = Annotated[
    str | None,
    typer.Option("--name", help="Registered model (default: params register.model_name)."),
]


@app.command()
def register(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint (models/model.pt).")],
    metrics: Annotated[Path, typer.Option("--metrics", help="metrics.json of the model.")],
    out: Annotated[Path, typer.Option("--out", help="Receipt to write (register.json).")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 2 when the gate fails (for CI).")
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="Hold-out data dir (default: data.dir).")
    ] = None,
    split: Annotated[Path, typer.Option("--split", help="Split file.")] = Path("data/split.json"),
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Gate a trained model and register it as the new challenger if it passes."""
    from rich.console import Console  # lazy: fast `dsnet --help`

    from dsnet.lifecycle.registry.register import register as register_model  # lazy: fast --help

    resolved = resolve_params(params, overrides)
    data_dir = data or resolved.get("data", {}).get("dir")
    if not data_dir:
        raise InputError("--data", "no hold-out data dir: pass --data or set data.dir")
    receipt = register_model(
        model, metrics, resolved, out, strict, data_dir=data_dir, split_path=split
    )
    version = f" as version {receipt['version']}" if receipt["version"] else ""
    Console().print(f"gate {receipt['gate']}{version}: {receipt['reason']} ({out})")


@registry_app.command("list")
def list_command(name: NameOption = None, params: ParamsOption = None) -> None:
    """Table of versions: metrics, data version, aliases, gate result, created."""
    from rich.console import Console  # lazy: fast `dsnet --help`
    from rich.table import Table  # lazy: fast `dsnet --help`

    from dsnet.lifecycle.registry.queries import list_versions  # lazy: fast `dsnet --help`

    name = name or _default_name(params)
    table = Table(title=f"registered model {name}")
    for column in (
        "version",
        "map50",
        "recall",
        "acc",
        "data version",
        "model",
        "aliases",
        "gate",
        "created",
    ):
        table.add_column(column)
    for row in list_versions(name):
        table.add_row(
            str(row["version"]),
            *(_number(row.get(k)) for k in ("map50", "recall", "acc")),
            row["data_version"][:12],
            f"{row['backbone']}/{row['attention']}",
            ", ".join(row["aliases"]),
            row["gate"],
            row["created"],
        )
    Console().print(table)


@registry_app.command()
def compare(
    a: Annotated[int, typer.Argument(help="First version.")],
    b: Annotated[int, typer.Argument(help="Second version.")],
    name: NameOption = None,
    params: ParamsOption = None,
) -> None:
    """Side-by-side metrics and confusion matrices of two versions."""
    from rich.console import Console  # lazy: fast `dsnet --help`
    from rich.table import Table  # lazy: fast `dsnet --help`

    from dsnet.lifecycle.registry.queries import compare as compare_versions  # lazy: fast --help

    result = compare_versions(name or _default_name(params), a, b)
    console = Console()
    table = Table(title=f"v{a} vs v{b}")
    for column in ("", f"v{a}", f"v{b}", "delta"):
        table.add_column(column)
    for row in result["metrics"]:
        table.add_row(row["name"], _number(row["a"]), _number(row["b"]), _number(row["delta"]))
    for key in ("backbone", "attention", "data_version", "gate", "aliases"):
        table.add_row(key, _text(result["a"][key]), _text(result["b"][key]), "")
    console.print(table)
    if not result["same_holdout"]:
        console.print("note: the versions were evaluated on different hold-outs")
    for key in ("a", "b"):
        console.print(_matrix_table(result[key]))


@registry_app.command()
def review(
    version: Annotated[int, typer.Argument(help="Version to review.")],
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="'champion' or a version number to compare with (default: the comparison "
            "of the report attached at registration; otherwise the version is re-evaluated "
            "on the current hold-out).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default review-vN.html).")
    ] = None,
    split: Annotated[Path, typer.Option("--split", help="Split file.")] = Path("data/split.json"),
    name: NameOption = None,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Fetch (or rebuild) the review report of a version: read it before promote."""
    from rich.console import Console  # lazy: fast `dsnet --help`

    from dsnet.lifecycle.registry.review import review_version  # lazy: fast `dsnet --help`

    resolved = _params_or_empty(params, overrides)
    model = name or str((resolved.get("register") or {}).get("model_name") or "dsnet")
    target = out or Path(f"review-v{version}.html")
    result = review_version(model, version, target, resolved, against, split)
    compared = result["compared_with"]
    versus = f" vs v{compared}" if compared else " (no champion comparison)"
    Console().print(f"review of v{version}{versus} ({result['source']}): {result['out']}")


@registry_app.command()
def promote(
    version: Annotated[int, typer.Option("--version", help="Version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote despite a failed check (recorded).")
    ] = False,
    name: NameOption = None,
    params: ParamsOption = None,
) -> None:
    """Move the champion alias to a reviewed version."""
    from rich.console import Console  # lazy: fast `dsnet --help`

    from dsnet.lifecycle.registry.promotion import promote as promote_version  # lazy: fast --help

    margin = float(_register_settings(params).get("champion_margin", 0.02))
    event = promote_version(name or _default_name(params), version, reason, force, margin)
    previous = f" (was v{event['previous']})" if event["previous"] else ""
    forced = " [forced]" if event["forced"] else ""
    Console().print(f"champion -> v{event['version']}{previous}{forced}")


@registry_app.command()
def rollback(
    reason: Annotated[
        str, typer.Option("--reason", help="Why (recorded in the audit trail).")
    ] = "rollback",
    name: NameOption = None,
    params: ParamsOption = None,
) -> None:
    """Return the champion alias to the previous champion."""
    from rich.console import Console  # lazy: fast `dsnet --help`

    from dsnet.lifecycle.registry.promotion import (  # lazy: fast `dsnet --help`
        rollback as rollback_champion,
    )

    event = rollback_champion(name or _default_name(params), reason)
    Console().print(f"champion -> v{event['version']} (rolled back from v{event['previous']})")


def _register_settings(params: list[Path] | None) -> dict[str, Any]:
    """The ``register`` params; review commands also work where there is no params.yaml."""
    from dsnet.core.config import DEFAULT_PARAMS, section  # lazy: fast `dsnet --help`

    if params is None and not DEFAULT_PARAMS.is_file():
        return {}
    return section(resolve_params(params, None), "register")


def _params_or_empty(params: list[Path] | None, overrides: list[str] | None) -> dict[str, Any]:
    """The resolved params, or none where there is no params.yaml (attached reports)."""
    from dsnet.core.config import DEFAULT_PARAMS  # lazy: fast `dsnet --help`

    if params is None and not DEFAULT_PARAMS.is_file():
        return {}
    return resolve_params(params, overrides)


def _default_name(params: list[Path] | None) -> str:
    return str(_register_settings(params).get("model_name") or "dsnet")


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}"


def _text(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value or "")


def _matrix_table(row: dict[str, Any]) -> Any:
    """Render a ``{"rows", "columns", "matrix"}`` confusion matrix (as in metrics.json)."""
    from rich.table import Table  # lazy: fast `dsnet --help`

    matrix = row["confusion_matrix"] or {}
    title = f"v{row['version']} confusion matrix (rows: truth, columns: answer)"
    table = Table(title=title)
    if not matrix.get("matrix"):
        table.add_column("not recorded")
        return table
    table.add_column("")
    for column in matrix["columns"]:
        table.add_column(str(column))
    for label, cells in zip(matrix["rows"], matrix["matrix"], strict=True):
        table.add_row(str(label), *(str(c) for c in cells))
    return table
