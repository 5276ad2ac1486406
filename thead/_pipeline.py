"""The animation pipeline's hand-over between threads: ``Background`` runs a producer in a
daemon thread, ``Sink`` a consumer; both through small bounded queues (memory does not grow with
the driver's length), errors re-raised on the caller's side, and clean stops on Ctrl-C."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_DONE = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


class Background:
    """Iterate ``items`` in a daemon thread, handing them over through a bounded queue.

    Exceptions in the thread are re-raised in the consumer; ``close()`` stops the thread
    (used when the consumer stops early, e.g. on Ctrl-C or a render error).
    """

    def __init__(self, items: Iterable, maxsize: int, name: str):
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._items)
        try:
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_DONE)
        except BaseException as e:  # handed to the consumer, which decides
            self._put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=5)


class Sink:
    """Call ``consume(item)`` in a daemon thread for items ``put`` through a bounded queue;
    ``finish()`` waits for the rest and re-raises the thread's error, ``abort()`` drops it."""

    def __init__(self, consume: Callable, maxsize: int, name: str):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain after a failure
            try:
                self._consume(item)
            except BaseException as e:
                self._error = e

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item) -> None:
        self._check()
        self._queue.put(item)

    def finish(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop without consuming the rest (the caller is failing); waits for the item in hand."""
        if self._thread.is_alive():
            self._error = self._error or RuntimeError("aborted")
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._queue.put(_DONE)  # the caller is the only producer, so there is room now
            self._thread.join()
