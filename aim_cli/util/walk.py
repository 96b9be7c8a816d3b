"""The walk of a user's directory tree (a model directory, a pull's DEST).

    OWN_PREFIX          top-level names starting with it are aim_cli's own working files (a
                        pull's lock and partial files), never part of a model's files.
    iter_tree(root)     every entry under ``root`` that is not a directory, as (relative path,
                        lstat), descending without following symlinks.
    walk_tree(root)     the same, as a dict by relative path.

Relative paths are ``/``-separated, as manifests name files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

OWN_PREFIX = ".aim"


def is_own_name(name: str) -> bool:
    """Whether ``name``, at the top of a model directory, is one of aim_cli's own working files."""
    return name.startswith(OWN_PREFIX)


def iter_tree(root: Path, *, on_skip: Callable[[str], None] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every non-directory entry under ``root`` (symlinks not followed: a link is yielded as a
    link), with its relative path, depth first, in no set order. The top-level names aim_cli
    keeps for itself are left out; ``on_skip(name)`` hears of each. An OSError reading a
    directory (PermissionError, FileNotFoundError for a ``root`` that does not exist) propagates,
    with its ``filename``."""
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if not rel and is_own_name(entry.name):
                    if on_skip is not None:
                        on_skip(entry.name)
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(entry.path), f"{rel}{entry.name}/"))
                else:
                    yield f"{rel}{entry.name}", st


def walk_tree(root: Path) -> dict[str, os.stat_result]:
    """Every non-directory entry under ``root`` (symlinks not followed), by relative path;
    aim_cli's own top-level working files left out (``iter_tree``)."""
    return dict(iter_tree(root))
