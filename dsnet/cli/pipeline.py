"""Pipeline commands: ``dsnet pipeline run | schedule | local`` (compiled pipeline YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dsnet.cli.app import SetOption, pipeline_app

PackageOption = Annotated[
    Path,
    typer.Option("--package", help="Compiled pipeline (python pipeline/compile.py)."),
]
ArgOption = Annotated[
    list[str] | None,
    typer.Option("--arg", "-a", help="Pipeline parameter name=value, e.g. -a epochs=30."),
]
DataRepoOption = Annotated[
    str | None,
    typer.Option("--data-repo", help="Git URL of the DVC data repo (default: synthetic data)."),
]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Branch, tag or commit of the data repo.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Train even if the data did not change since the champion.")
]
HostOption = Annotated[
    str, typer.Option("--host", help="KFP API endpoint, e.g. http://localhost:8080.")
]
ExperimentOption = Annotated[str, typer.Option("--experiment", help="KFP experiment name.")]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", help="User namespace (multi-user Kubeflow).")
]
AccountOption = Annotated[
    str | None,
    typer.Option("--service-account", help="Service account of the run's pods."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Bearer token (default: $KF_PIPELINES_TOKEN).", show_default=False
    ),
]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Disable caching for every task of the run.")
]
ProfileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--params",
        "-p",
        help="Profile file(s), e.g. params/paper.yaml, merged over the params.yaml the steps "
        "read (with -S: the params_profile argument).",
    ),
]
DEFAULT_PACKAGE = Path("pipeline/dsnet_pipeline.yaml")


def _arguments(
    package: Path,
    args: list[str] | None,
    params: list[Path] | None,
    overrides: list[str] | None,
    data_repo: str | None,
    revision: str | None,
    force: bool,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from dsnet.platform.arguments import run_arguments  # lazy: fast `dsnet --help`

    return run_arguments(
        package,
        args or (),
        params or (),
        overrides or (),
        defaults,
        data_repo=data_repo,
        data_revision=revision,
        force=force or None,
    )


@pipeline_app.command("run")
def run_command(
    host: HostOption,
    package: PackageOption = DEFAULT_PACKAGE,
    experiment: ExperimentOption = "dsnet",
    run_name: Annotated[str | None, typer.Option("--run-name", help="Run name.")] = None,
    namespace: NamespaceOption = None,
    service_account: AccountOption = None,
    token: TokenOption = None,
    no_cache: NoCacheOption = False,
    data_repo: DataRepoOption = None,
    revision: RevisionOption = None,
    force: ForceOption = False,
    args: ArgOption = None,
    params: ProfileOption = None,
    overrides: SetOption = None,
) -> None:
    """Submit one run of the compiled pipeline to a Kubeflow Pipelines API server."""
    from dsnet.platform.submit import submit_run  # lazy: fast `dsnet --help`

    arguments = _arguments(package, args, params, overrides, data_repo, revision, force)
    submitted = submit_run(
        host,
        package,
        arguments,
        experiment=experiment,
        run_name=run_name,
        namespace=namespace,
        service_account=service_account,
        enable_caching=False if no_cache else None,
        token=token,
    )
    typer.echo(f"run {submitted['run_id']}: {submitted['url']}")


@pipeline_app.command("schedule")
def schedule_command(
    host: HostOption,
    cron: Annotated[
        str, typer.Option("--cron", help='Cron schedule, e.g. "0 3 * * 0" (Sundays 03:00).')
    ],
    name: Annotated[str, typer.Option("--name", help="Recurring run name.")] = "dsnet-retraining",
    package: PackageOption = DEFAULT_PACKAGE,
    experiment: ExperimentOption = "dsnet",
    namespace: NamespaceOption = None,
    service_account: AccountOption = None,
    token: TokenOption = None,
    no_cache: NoCacheOption = False,
    data_repo: DataRepoOption = None,
    revision: RevisionOption = None,
    force: ForceOption = False,
    args: ArgOption = None,
    params: ProfileOption = None,
    overrides: SetOption = None,
) -> None:
    """Schedule retraining: a recurring run (one at a time, no catch-up).

    Each run ends early when the data did not change since the champion was trained.
    """
    from dsnet.platform.submit import schedule_retraining  # lazy: fast `dsnet --help`

    arguments = _arguments(package, args, params, overrides, data_repo, revision, force)
    scheduled = schedule_retraining(
        host,
        package,
        cron,
        arguments,
        name=name,
        experiment=experiment,
        namespace=namespace,
        service_account=service_account,
        enable_caching=False if no_cache else None,
        token=token,
    )
    typer.echo(
        f"recurring run {scheduled['recurring_run_id']} ({scheduled['cron']}): {scheduled['url']}"
    )


@pipeline_app.command("local")
def local_command(
    package: PackageOption = DEFAULT_PACKAGE,
    out: Annotated[
        Path, typer.Option("--out", help="Local pipeline root (artifacts and logs).")
    ] = Path("kfp-local"),
    data_repo: DataRepoOption = None,
    revision: RevisionOption = None,
    force: ForceOption = False,
    args: ArgOption = None,
    params: ProfileOption = None,
    overrides: SetOption = None,
) -> None:
    """Run the compiled pipeline on this machine with kfp.local (no cluster needed).

    Steps run as subprocesses here, against MLFLOW_TRACKING_URI (default: the local SQLite
    store); GPU, node selector, secrets and volumes of the cluster spec are ignored.
    """
    from rich.console import Console  # lazy: fast `dsnet --help`

    from dsnet.platform.local import local_defaults, run_local  # lazy: fast `dsnet --help`

    defaults = local_defaults()
    arguments = _arguments(package, args, params, overrides, data_repo, revision, force, defaults)
    run = run_local(package, arguments, out)
    console = Console()
    console.print(f"local run: {run.root}")
    for step, artifact in (("check-data-changed", "decision"), ("gate", "criteria")):
        outputs = run.outputs(step)
        if outputs is not None:
            console.print(f"{step}: {outputs['artifacts'][artifact]['reason']}")
    registered = run.outputs("register")
    if registered is not None:
        receipt = registered["artifacts"]["receipt"]
        where = f" as {receipt['model_uri']}" if receipt["version"] else ""
        console.print(f"register: gate {receipt['gate']}{where}")
