"""Durability helpers for local directories (a local repository, a pull's DEST)."""

from __future__ import annotations

import ctypes
import os
from functools import cache


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
