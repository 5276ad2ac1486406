"""What the page needs besides widgets, without Gradio: one heavy job at a time, cancelling,
progress with time left, the weights line and errors as one sentence.

The page's handlers run in Gradio's worker threads. ``Jobs`` lets one enroll, animate or
fine-tune run at a time in the process (Gradio's queue shows the others their place; the
lock also holds a job that Gradio stopped waiting for until its thread has really stopped),
and lets a page cancel its own job. A ``Job`` is the page's ``thead.progress.Progress``: passed
as an API's ``progress``, its updates become the page's progress line (count, time left), its
notes are kept for the result, and an update raises ``Cancelled`` at the next frame or step
when the page asked to stop, so the API's atomic writes remove their temporary files.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from thead.errors import TheadError

log = logging.getLogger("thead.ui")


class Cancelled(Exception):
    """Raised inside a job's progress callback when its page asked to cancel it."""


@dataclass
class Job:
    """One running job (a ``thead.progress.Progress``): its cancel flag, its progress line
    (``unit``: what is counted, "frames" or "steps"; time left) and the notes it received."""

    cancel: threading.Event
    report: Callable[[float | None, str], None]
    started: float
    unit: str = "steps"
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def update(self, done: int, total: int | None = None, *, stage: str = "", info: str = "") -> None:
        """``done`` of ``total`` frames/steps: report the count and the time left, then raise
        ``Cancelled`` when asked to stop (called by the API after each frame or step)."""
        elapsed = time.perf_counter() - self.started
        if total:
            left = elapsed / max(done, 1) * (total - done)
            self.report(done / total, f"{done}/{total} {self.unit} · {format_seconds(left)} left")
        else:
            self.report(None, f"{done} {self.unit} · {format_seconds(elapsed)} so far")
        self.check()

    def note(self, text: str) -> None:
        self.notes.append(text)


def format_seconds(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


class Jobs:
    """One heavy job at a time in this process; each page (session) may cancel its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    @contextlib.contextmanager
    def run(self, session: str, report: Callable[[float | None, str], None] = lambda f, s: None, *, unit: str = "steps") -> Iterator[Job]:
        cancel = threading.Event()
        with self._guard:
            self._running[session] = cancel
        try:
            if not self._lock.acquire(blocking=False):  # a job Gradio stopped waiting for is still stopping
                report(None, "waiting for the job before this one to stop")
                self._lock.acquire()
            try:
                job = Job(cancel, report, time.perf_counter(), unit)
                job.check()
                yield job
            finally:
                self._lock.release()
        finally:
            with self._guard:
                if self._running.get(session) is cancel:
                    del self._running[session]

    def cancel(self, session: str) -> bool:
        """Ask ``session``'s job to stop; False when it has none running."""
        with self._guard:
            event = self._running.get(session)
        if event is None:
            return False
        event.set()
        return True


def one_sentence(error: BaseException) -> str:
    """What the page shows for a failure: thead's own one-line message, or for anything else
    (a bug) its type and first line; the traceback goes to the server's log only."""
    if isinstance(error, Cancelled):
        return "Cancelled; nothing was saved."
    if isinstance(error, TheadError):
        text = str(error)
    else:
        log.error("unexpected error in the page", exc_info=error)
        first = (str(error).strip().splitlines() or [""])[0]
        text = f"unexpected {type(error).__name__}: {first}" if first else f"unexpected {type(error).__name__}"
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def weights_line(spec: str | None) -> str:
    """Which weights the page uses and where they came from, by the CLI's own resolution
    (``thead.hub.resolve_weights``: a folder as is, else a Hub repo id downloaded or cached)."""
    import os

    from thead.hub import DEFAULT_REPO_ID, WEIGHTS_ENV, file_sha256, resolve_weights

    if spec:
        given, how = spec, "--weights"
    elif os.environ.get(WEIGHTS_ENV):
        given, how = os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}"
    else:
        given, how = DEFAULT_REPO_ID, "the default"
    folder = resolve_weights(spec)
    sha = file_sha256(folder / "model.safetensors")[:12]
    where = "a local folder" if os.path.isdir(given) else f"the Hugging Face Hub, cached in {folder}"
    return f"Weights: {given} ({how}; from {where}), sha256 {sha}."
