"""``dsnet intake``: turn the inbox's new batches into versions of the curated data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dsnet.cli.app import KeyFileOption, KeyOption, ParamsOption, SetOption, app, resolve_params


@app.command("intake")
def intake_command(
    inbox: Annotated[
        str, typer.Option("--inbox", help="Inbox: a folder or s3://bucket/prefix of batches.")
    ],
    data_repo: Annotated[
        Path, typer.Option("--data-repo", help="Data repository (git work tree with DVC).")
    ],
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Curated data dir inside the data repository.")
    ] = "data/curated",
    remote: Annotated[
        str | None, typer.Option("--remote", help="DVC remote to push to (default: the default).")
    ] = None,
    git_remote: Annotated[
        str | None,
        typer.Option("--git-remote", help="Git remote to push each version's commit and tag to."),
    ] = None,
    key_file: KeyFileOption = None,
    key: KeyOption = None,
    summary: Annotated[
        Path | None, typer.Option("--summary", help="Also write the outcome as JSON here.")
    ] = None,
    params: ParamsOption = None,
    overrides: SetOption = None,
) -> None:
    """Ingest each new batch, merge it without duplicates, and version it (DVC + git tag).

    The key comes from --key, --key-file or env DSNET_DEID_KEY (in that order); the patient
    split is carried forward with params split.test_fraction and split.seed.
    """
    from dsnet.core.config import section  # lazy: fast `dsnet --help`
    from dsnet.core.fsutil import atomic_write_json  # lazy: fast `dsnet --help`
    from dsnet.ingest.intake import intake  # lazy: fast `dsnet --help`
    from dsnet.ingest.sources import resolve_key  # lazy: fast `dsnet --help`

    split = section(resolve_params(params, overrides), "split")
    result = intake(
        inbox,
        data_repo,
        data_dir,
        remote=remote,
        key=resolve_key(key, key_file),
        git_remote=git_remote,
        test_fraction=split.get("test_fraction", 0.2),
        seed=split.get("seed", 0),
    )
    for batch in result.batches:
        version = f" -> {batch.tag} {batch.data_version}" if batch.tag else ""
        typer.echo(
            f"{batch.batch}: {batch.outcome}, {batch.accepted} accepted, "
            f"{batch.duplicates} duplicates, {batch.rejected} rejected{version} "
            f"(report: {batch.location})"
        )
    if summary is not None:
        atomic_write_json(summary, result.to_dict())
    changed = "new" if result.data_version != result.previous_version else "unchanged"
    typer.echo(
        f"data_version {result.data_version or '(none)'} {result.tag or ''} ({changed}; "
        f"{len(result.batches)} batches)"
    )
