"""Progress bars and summaries on stderr. rich is imported only when a bar is drawn."""

from __future__ import annotations

import sys
import threading
from typing import Any, Protocol

#: The unit of a byte count; any other unit is a noun counted ("versions", "blobs").
BYTES = "bytes"


class Progress(Protocol):
    """What long operations report to: ``start`` at the beginning of each phase with a label, the
    total and its unit (bytes, or a plural noun: "versions"), ``advance`` from any worker thread
    as work completes, ``close`` once a phase ends (also after a failure). API functions take any
    object of this shape as ``progress``."""

    def start(self, label: str, total: int, unit: str = BYTES) -> None: ...

    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """No bar: --quiet, --json, or stderr is not a terminal."""

    def start(self, label: str, total: int, unit: str = BYTES) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A progress bar on stderr, safe to advance from worker threads: bytes with their rate and
    ETA in IEC units (MiB, MiB/s), or a count of items ("3/40 versions")."""

    def __init__(self) -> None:
        self._progress: Any = None  # a rich Progress once started
        self._task: Any = None
        self._lock = threading.Lock()

    def start(self, label: str, total: int, unit: str = BYTES) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.close()  # a phase still drawn ends where the next begins
        self._progress = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            *_amount_columns(unit),
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


def _amount_columns(unit: str) -> tuple[Any, ...]:
    """The columns after the bar: "1.5/8.0 MiB 120.3 MiB/s", or "3/40 versions"."""
    from rich.progress import DownloadColumn, MofNCompleteColumn, ProgressColumn, TextColumn
    from rich.text import Text

    from aim_cli.util.sizes import human_size

    if unit != BYTES:
        return MofNCompleteColumn(), TextColumn(unit)

    class BinarySpeedColumn(ProgressColumn):
        """rich's TransferSpeedColumn in IEC units: its own counts in SI ones (MB/s beside MiB)."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_size(int(speed))}/s", style="progress.data.speed")

    return DownloadColumn(binary_units=True), BinarySpeedColumn()


def make_progress(quiet: bool) -> Progress:
    if quiet or not sys.stderr.isatty():
        return NullProgress()
    return BarProgress()
