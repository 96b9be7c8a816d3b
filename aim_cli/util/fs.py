"""Durability helpers for local directories (a local repository, a pull's DEST)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
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


#: Tries at a fresh random temp name before giving up (each collision is an O_EXCL failure).
_TEMP_TRIES = 16


def write_beside(target: str | os.PathLike, data: bytes, *, mode: int | None = None, fsync: bool = True) -> None:
    """Replace (or create) ``target`` with ``data``, never half-written under its name: the one
    way aim_cli writes a file beside its target (export-signature's output, the config file).

    The temp file gets a random name in ``target``'s directory and is created with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` (as mkstemp): a symlink or file planted at a name another
    user could predict is never written through. It is written whole, fsynced, then renamed over
    ``target`` (a link at ``target`` itself is replaced, never followed); the directory is fsynced.
    Permission bits: ``mode``; else those of the file replaced; else 0o666 less the umask.
    Any failure removes the temp file and propagates the OSError."""
    import secrets  # only a write needs it

    target = os.fspath(target)
    directory, name = os.path.split(target)
    directory = directory or "."
    if mode is None:
        try:
            existing = os.stat(target, follow_symlinks=False)
            if stat.S_ISREG(existing.st_mode):
                mode = stat.S_IMODE(existing.st_mode)
        except FileNotFoundError:
            pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for attempt in range(_TEMP_TRIES):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.aim-tmp")
        try:
            fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
            break
        except FileExistsError:
            if attempt == _TEMP_TRIES - 1:
                raise
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        with contextlib.suppress(OSError):  # a filesystem that cannot fsync a directory is let be
            fsync_dir(directory)
