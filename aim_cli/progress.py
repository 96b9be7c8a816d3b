"""Progress bars and summaries on stderr. rich is imported only when a bar is drawn."""

from __future__ import annotations

import sys
import threading
from typing import Any, Protocol


class Progress(Protocol):
    """What long operations report to: ``start`` once with a label and the total (bytes, or
    items), ``advance`` from any worker thread as work completes, ``close`` once at the end
    (also after a failure). API functions take any object of this shape as ``progress``."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """No bar: --quiet, or stderr is not a terminal."""

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A byte progress bar (bytes, rate, ETA); safe to advance from worker threads."""

    def __init__(self) -> None:
        self._progress: Any = None  # a rich Progress once started
        self._task: Any = None
        self._lock = threading.Lock()

    def start(self, label: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


def make_progress(quiet: bool) -> Progress:
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return BarProgress()
