"""Progress display of a training run: a rich bar with loss and ETA, one line per epoch.

Only rank 0 draws (see `dsnet.training.distributed`); on other ranks every method is a
no-op. Output goes to stderr so that stdout stays free for machine-readable output.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """A progress bar over all optimizer steps of the run, with the running loss.

    Args:
        enabled: Draw (rank 0) or stay silent (other ranks).
        total_steps: Optimizer steps still to run (for the ETA).
        first_epoch: Epoch number shown first.
        epochs: Total epochs of the run.

    """

    def __init__(self, enabled: bool, total_steps: int, first_epoch: int, epochs: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self._task = self._progress.add_task(
            self._describe(first_epoch), total=total_steps, loss=float("nan")
        )

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start_epoch(self, epoch: int) -> None:
        """Show `epoch` as the current one."""
        self._progress.update(self._task, description=self._describe(epoch))

    def step(self, loss: float) -> None:
        """Advance by one optimizer step and show its total loss."""
        self._progress.update(self._task, advance=1, loss=loss)

    def log(self, message: str) -> None:
        """Print one line above the bar (rank 0 only)."""
        if self.enabled:
            self._progress.console.print(message, highlight=False)

    def _describe(self, epoch: int) -> str:
        return f"epoch {epoch}/{self.epochs}"
