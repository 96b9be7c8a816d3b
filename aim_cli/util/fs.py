"""Durability helpers for local directories (a local repository, a pull's DEST)."""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

from aim_cli.errors import UsageError


@cache
def _syncfs():
    """libc's syncfs(2), or None where there is none. The process's own symbols are searched
    (CDLL(None)): ctypes.util.find_library would spawn ldconfig at every start."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def sync_filesystem(path: str | os.PathLike) -> None:
    """Make everything written to the filesystem holding ``path`` durable: one syncfs(2), which
    costs far less than an fsync per file when there are many; os.sync() where there is no syncfs."""
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of a directory (a rename, a new link) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting for them.

    With gigabytes of RAM, nothing is written back until the final syncfs, which then waits for
    all of it; started early, the disk works while the transfer goes on (push v1 of 1 GiB:
    about 15% less wall time, benchmarks/run.py). POSIX_FADV_DONTNEED starts writeback of dirty
    pages and drops only pages already clean. A no-op where posix_fadvise does not exist."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # advice only


def directory_argument(value: str | os.PathLike, what: str) -> Path:
    """A directory named on the command line. The empty string is refused: Path("") means the
    current directory, which the user did not name."""
    if os.fspath(value) in ("", b""):
        raise UsageError(f"{what} is the empty string", "name a directory (use . for the current one)")
    return Path(value)


def display_path(path: str | os.PathLike) -> str:
    """A path as it can be shown in a one-line message: bytes that are not UTF-8 (a file name
    from another system) as ``\\xNN``, as ``ls -b`` shows them, and control characters escaped,
    so a name holding a newline cannot forge a second line."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
