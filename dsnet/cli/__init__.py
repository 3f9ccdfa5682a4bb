"""The `dsnet` command line: ``dsnet synth | ingest | preview | split | train | ...``.

Exit status: 0 success, 2 bad input or usage (one line on stderr, no traceback),
1 unexpected failure (set ``DSNET_DEBUG=1`` to see the traceback).

Library warnings and log chatter (MLflow, alembic, torch, pydicom) stay off stderr in
normal runs, so an error is the only line there; ``DSNET_DEBUG=1`` shows them.

The top layer: command modules parse arguments and call one library function each,
importing it inside the command (``# lazy:`` fast ``dsnet --help``).

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models, dsnet.synth, dsnet.tracking,
dsnet.ingest, dsnet.inference, dsnet.training, dsnet.evaluation, dsnet.lifecycle,
dsnet.platform, dsnet.bench
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from dsnet.cli.app import app
from dsnet.core.errors import DataValidationError, InputError

COMMAND_MODULES = (
    "synth", "data", "train", "evaluate", "predict", "bench", "lifecycle", "pipeline", "intake",
)  # fmt: skip


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"dsnet.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"dsnet.cli.{name}":
                raise


QUIET_LOGGERS = ("mlflow", "alembic", "torch", "pydicom", "urllib3", "botocore", "dvc")
"""Library loggers kept to errors in normal runs."""


def quiet_libraries() -> None:
    """Route warnings to logging and keep library loggers to errors (unless DSNET_DEBUG)."""
    if os.environ.get("DSNET_DEBUG"):
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(logging.NullHandler())
    warnings_logger.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    """Console-script entry point with the package's exit-code contract."""
    quiet_libraries()
    _load_commands()
    try:
        app()
    except DataValidationError as exc:
        for problem in exc.problems or [str(exc)]:
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the contract is one line, no traceback
        if os.environ.get("DSNET_DEBUG"):
            raise
        detail = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: unexpected {type(exc).__name__}: {detail}", file=sys.stderr)
        sys.exit(1)


__all__ = ["app", "main"]
