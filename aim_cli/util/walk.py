"""The walk of a user's directory tree (a model directory, a pull's DEST).

    OWN_PREFIX          top-level names starting with it are aim_cli's own working files (a
                        pull's lock, partial files and index), never part of a model's files.
    iter_tree(root)     every entry under ``root`` that is not a directory, as (relative path,
                        lstat), descending without following symlinks.
    walk_tree(root)     the same, as a dict by relative path.
    open_regular(path)  a read-only descriptor of the regular file at ``path`` and its fstat:
                        never through a symlink (O_NOFOLLOW), never blocking on a FIFO
                        (O_NONBLOCK), never a FIFO, device or socket (fstat checked).
    open_binary(path)   the same as an unbuffered binary file object.

Every read of a user's directory (push's DIR, pull's DEST and --reference directories,
`model verify --local` with or without a signature) walks it with ``iter_tree`` and opens its
files with ``open_regular``. Push under --follow-symlinks opens the link's resolved target
(os.path.realpath), which holds no link either.

Relative paths are ``/``-separated, as manifests name files.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from io import FileIO
from pathlib import Path

OWN_PREFIX = ".aim"


def local_directory(value: str | os.PathLike, what: str, hint: str) -> Path:
    """A user's directory to read (push's DIR, `verify --local DIR`): UsageError (exit 2) for
    the empty string, a path that does not exist, or one that is not a directory."""
    from aim_cli.errors import UsageError
    from aim_cli.util.fs import directory_argument, display_path

    root = directory_argument(value, what)
    if not root.exists():
        raise UsageError(f"{what} {display_path(root)} does not exist", hint)
    if not root.is_dir():
        raise UsageError(f"{what} {display_path(root)} is not a directory", hint)
    return root


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a message: "a symbolic link", "a FIFO", ..."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def is_own_name(name: str) -> bool:
    """Whether ``name``, at the top of a model directory, is one of aim_cli's own working files."""
    return name.startswith(OWN_PREFIX)


#: What every finished pull leaves at the top of DEST: its work directory holding its index alone
#: (pull/layout.py). Skipped like any own name, but not worth a word: pushing a directory one
#: pulled into is the common case.
PULL_LEFTOVER = (".aim", ("index.json",))


def _only_pull_index(entry: os.DirEntry) -> bool:
    if entry.name != PULL_LEFTOVER[0] or not entry.is_dir(follow_symlinks=False):
        return False
    try:
        return tuple(os.listdir(entry.path)) == PULL_LEFTOVER[1]
    except OSError:
        return False


def iter_tree(
    root: Path,
    *,
    on_skip: Callable[[str], None] | None = None,
    prune: Callable[[str, bool], bool] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """Every non-directory entry under ``root`` (symlinks not followed: a link is yielded as a
    link), with its relative path, depth first, in no set order. The top-level names aim_cli
    keeps for itself are left out; ``on_skip(name)`` hears of each (but of a ``.aim`` holding a
    pull's index alone, PULL_LEFTOVER). ``prune(path, is_dir)``,
    asked of every other entry, leaves it out when true (a directory is then not entered: a
    signature's ignored ``.git``); it may also raise to refuse a name. An OSError reading a
    directory (PermissionError, FileNotFoundError for a ``root`` that does not exist) propagates,
    with its ``filename``."""
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if not rel and is_own_name(entry.name):
                    if on_skip is not None and not _only_pull_index(entry):
                        on_skip(entry.name)
                    continue
                st = entry.stat(follow_symlinks=False)
                path = f"{rel}{entry.name}"
                is_dir = stat.S_ISDIR(st.st_mode)
                if prune is not None and prune(path, is_dir):
                    continue
                if is_dir:
                    stack.append((Path(entry.path), f"{path}/"))
                else:
                    yield path, st


def walk_tree(root: Path, *, skip_ignored: bool = False) -> dict[str, os.stat_result]:
    """Every non-directory entry under ``root`` (symlinks not followed), by relative path;
    aim_cli's own top-level working files left out (``iter_tree``). ``skip_ignored``: push's
    default ignores too (util.ignores: .git/, __pycache__/ ...), whose directories are not entered."""
    if not skip_ignored:
        return dict(iter_tree(root))
    from aim_cli.util.ignores import is_ignored

    return dict(iter_tree(root, prune=lambda path, _is_dir: is_ignored(path)))


class NotRegularFileError(OSError):
    """``open_regular`` found something else than a regular file (a FIFO, a device, a socket)."""


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file at ``path`` and its fstat. A symlink in the
    last component fails (ELOOP: O_NOFOLLOW), a FIFO opens without blocking (O_NONBLOCK) and is
    then refused with anything else that is not a regular file: NotRegularFileError (an OSError,
    EINVAL), with the path as its ``filename``."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFileError(errno.EINVAL, f"not a regular file ({kind_of(st.st_mode)})", os.fspath(path))
    return fd, st


def open_binary(path: str | os.PathLike) -> FileIO:
    """``open_regular`` as an unbuffered binary file object (a context manager)."""
    fd, _ = open_regular(path)
    return os.fdopen(fd, "rb", buffering=0)
