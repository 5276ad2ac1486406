"""The one progress protocol: what every long-running API reports while it runs.

``animate``, ``demo``, ``enroll``, ``extract_motion``, ``prepare``, ``evaluate``, ``finetune``
and ``train`` take ``progress: Progress | None``; None shows nothing (``SILENT``). The API
prints nothing itself: the command line draws a rich bar (``thead.cli._progress.Bar``), the
web page turns it into its progress line and cancel point (``thead.ui.jobs.Job``), a script
may pass any object with these two methods.

- ``update(done, total, *, stage, info)``: ``done`` of ``total`` units (frames, steps, clips,
  frames scored; ``total`` None when unknown), called as they complete, ``done`` never going
  down within a stage. ``stage`` names the loop when an API has several or the display needs a
  label (``"evaluating"``); ``info`` is a short live status replaced by the next update
  (``"0.51 img/s · G 1.234"``).
- ``note(text)``: a one-line remark for the person running it (a fallback taken, frames
  skipped), without a "note:" prefix or a final newline.

Either method may raise to stop the run (the web page's Cancel, Ctrl-C): the APIs clean up
their partial outputs as for any other exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["Progress", "SILENT", "Silent", "loss_info"]


@runtime_checkable
class Progress(Protocol):
    """Receives a long-running API's progress and notes (see the module docstring)."""

    def update(self, done: int, total: int | None = None, *, stage: str = "", info: str = "") -> None: ...

    def note(self, text: str) -> None: ...


class Silent:
    """Shows nothing: the default when an API is given no ``progress``."""

    def update(self, done: int, total: int | None = None, *, stage: str = "", info: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


SILENT = Silent()  # stateless, so one instance serves every call


def loss_info(losses: Mapping[str, float], n: int = 4) -> str:
    """The first ``n`` loss terms for ``info``: ``"G 1.234, D 0.567"`` (a term's last path part)."""
    return ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in list(losses.items())[:n])
