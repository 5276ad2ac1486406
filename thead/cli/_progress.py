"""The command line's one ``thead.progress.Progress``: a rich bar on stderr.

Every command that runs a long API (animate, demo, enroll, motion extract, prep, eval, train,
finetune) passes a ``Bar`` as its ``progress``. The bar shows the stage, count, rate (where a
rate means something: frames per second) and time left; it is drawn only when stderr is a
terminal and removed when done, so logs and CI get the notes and the summary only. Notes
print as ``note: ...`` lines; with ``quiet`` nothing at all is shown.
"""

from __future__ import annotations

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from thead.cli._app import err_console

__all__ = ["Bar"]


class _RateColumn(ProgressColumn):
    """Units per second, e.g. ``24.3 fps`` (``-- fps`` until there are two updates)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}" if speed else f"-- {self.unit}", style="progress.data.speed")


class Bar:
    """``thead.progress.Progress`` on stderr; use as a context manager around the API call.

    ``label``: what the bar is called until an update names a ``stage``; ``rate``: the unit of
    the rate column (``"fps"``), None for no rate column; ``quiet``: show nothing, notes
    included.
    """

    def __init__(self, label: str, *, quiet: bool = False, rate: str | None = None):
        self.label, self.quiet = label, quiet
        rate_column = (_RateColumn(rate),) if rate else ()
        self._progress = None if quiet or not err_console.is_terminal else RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *rate_column,
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
            console=err_console, transient=True,
        )
        self._task, self._stage = None, ""

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn (not quiet, and stderr is a terminal)."""
        return self._progress is not None

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, done: int, total: int | None = None, *, stage: str = "", info: str = "") -> None:
        if self._progress is None:
            return
        if self._task is None or stage != self._stage:  # a new stage starts its own count
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(escape(stage or self.label), total=total, info=info)
            self._stage = stage
        self._progress.update(self._task, completed=done, total=total, info=escape(info))

    def note(self, text: str) -> None:
        if not self.quiet:
            err_console.print(f"note: {text}", highlight=False, markup=False, soft_wrap=True)
