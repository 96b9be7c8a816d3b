"""Durability helpers for local directories (a local repository, a pull's DEST)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
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


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing a file's dirty pages now (those of ``length`` bytes from
    ``offset``; 0: to the end), without waiting for them.

    With gigabytes of RAM, nothing is written back until the final syncfs, which then waits for
    all of it; started early, the disk works while the transfer goes on (push v1 of 1 GiB:
    about 15% less wall time, benchmarks/run.py). POSIX_FADV_DONTNEED starts writeback of dirty
    pages and drops only pages already clean. A no-op where posix_fadvise does not exist."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # advice only


def drop_cached(fd: int, offset: int, length: int) -> None:
    """Drop the clean cached pages of a range of a file no one will read again. The same advice
    as ``start_writeback`` (POSIX_FADV_DONTNEED drops clean pages and starts the writeback of
    dirty ones), named for what a caller of clean pages wants of it."""
    start_writeback(fd, offset, length)


def directory_argument(value: str | os.PathLike, what: str) -> Path:
    """A directory named on the command line. The empty string is refused: Path("") means the
    current directory, which the user did not name."""
    if os.fspath(value) in ("", b""):
        raise UsageError(f"{what} is the empty string", "name a directory (use . for the current one)")
    return Path(value)


def read_at_most(fd: int, limit: int) -> bytes:
    """What ``fd`` holds from its offset, but at most ``limit`` + 1 bytes: a result longer than
    ``limit`` says the file is larger than a reader bounded by ``limit`` takes (a file that grew
    while it was read included)."""
    parts, size = [], 0
    while size <= limit:
        part = os.read(fd, limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


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
#: The names ``write_beside_at`` gives its temp files: ``.<target name>.<16 hex>.aim-tmp``. A
#: cleaner of files left by killed writers matches exactly these.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.aim-tmp", re.DOTALL)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _create_temp(dir_fd: int, name: str, mode: int) -> tuple[int, str]:
    """A new temp file beside ``name``, created ``O_CREAT | O_EXCL | O_NOFOLLOW`` (as mkstemp)
    at a random name, with ``mode`` less the umask: anything planted there (a link, a file) is
    never opened."""
    import secrets  # only a write needs it

    for attempt in range(_TEMP_TRIES):
        tmp = f".{name}.{secrets.token_hex(8)}.aim-tmp"
        try:
            return os.open(tmp, _CREATE_FLAGS, mode, dir_fd=dir_fd), tmp
        except FileExistsError:
            if attempt == _TEMP_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def write_beside_at(
    dir_fd: int,
    name: str,
    data: bytes | bytearray | memoryview,
    *,
    mode: int = 0o666,
    replace: bool = True,
    fsync: bool = True,
    writeback: bool = False,
) -> bool:
    """Put ``data`` at ``name`` in the directory open as ``dir_fd``, never half-written under
    ``name``: the one way aim_cli writes a file beside its target (exported signatures, the
    config file, chunk cache entries and its marker, the pull lock).

    The data goes to a temp file (``_create_temp``: random name, ``O_EXCL | O_NOFOLLOW``), written
    whole, fsynced with ``fsync`` (else with ``writeback`` its writeback is started), then
    committed under ``name``, always relative to ``dir_fd``:

    - ``replace=True``: ``rename`` over ``name``; a link at ``name`` is replaced, never followed.
      Returns True.
    - ``replace=False``: ``link`` to ``name``, which fails if ``name`` exists (anything, a
      dangling link too), atomically, on NFS as well: returns False and leaves ``name`` alone.
      A retransmitted link whose first reply was lost (NFS) says EEXIST for our own link: the
      temp file's link count tells. The temp name is removed either way.

    With ``fsync`` the directory is fsynced after a commit (a filesystem that cannot is let be).
    Permission bits: those of the regular file replaced, else ``mode`` less the umask. Any
    failure removes the temp file and propagates (an OSError)."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise OSError(errno.EINVAL, "not a file name", name)
    keep = None  # the bits of the file replaced, set exactly (the umask does not apply)
    if replace:
        with contextlib.suppress(FileNotFoundError):
            existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(existing.st_mode):
                keep = stat.S_IMODE(existing.st_mode)
    fd, tmp = _create_temp(dir_fd, name, 0o600 if keep is not None else mode)
    try:
        try:
            if keep is not None:
                os.fchmod(fd, keep)
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
            elif writeback:
                start_writeback(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            committed = True
        else:
            try:
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                committed = True
            except FileExistsError:
                committed = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False).st_nlink == 2
            os.unlink(tmp, dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if fsync and committed:
        with contextlib.suppress(OSError):  # a filesystem that cannot fsync a directory is let be
            os.fsync(dir_fd)
    return committed


def write_beside(target: str | os.PathLike, data: bytes, *, mode: int = 0o666, fsync: bool = True) -> None:
    """Replace (or create) ``target`` with ``data`` through ``write_beside_at`` (rename), in
    ``target``'s directory; links in that directory's path are followed, as the user named it."""
    directory, name = os.path.split(os.fspath(target))
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        write_beside_at(dir_fd, name, data, mode=mode, fsync=fsync)
    finally:
        os.close(dir_fd)
