"""The paths push leaves out of a model directory by default, and that pull --delete and
`model verify --local` then leave alone in DEST: what `hf upload` ignores (huggingface_hub's
DEFAULT_IGNORE_PATTERNS: ``.git`` and ``.cache/huggingface``, at any depth) and the two kinds of
litter a Python tool or macOS Finder leaves beside a model (``__pycache__``, ``.DS_Store``).

    is_ignored(path)     whether ``path`` (relative, ``/``-separated) is one of them or lies
                         under one: a name of the set as any component, or ``.cache/huggingface``
                         as two consecutive ones. A file, a directory and a symlink named
                         ``.git`` are all ignored (a git worktree's ``.git`` is a file).
    Ignored              what a walk left out: the top-most ignored paths, and how many files
                         and bytes lie under them (a tally, never a reason to fail).

Top-level ``.aim*`` names are another matter: they are aim_cli's own whatever the options
(util.walk.OWN_PREFIX).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

IGNORED_NAMES = frozenset({".git", "__pycache__", ".DS_Store"})
IGNORED_PAIR = (".cache", "huggingface")  # .cache/huggingface: `hf download --local-dir`'s metadata
#: As the README and messages show them.
SHOWN = (".git/", ".cache/huggingface/", "__pycache__/", ".DS_Store")


def is_ignored(path: str) -> bool:
    parts = path.split("/")
    if IGNORED_NAMES.intersection(parts):
        return True
    return any(pair == IGNORED_PAIR for pair in zip(parts, parts[1:], strict=False))


def any_ignored(paths) -> bool:
    """Whether some of ``paths`` is ignored: a version pushed with --no-default-ignores holds such
    files, and a walk that compares a directory with it must then see them."""
    return any(is_ignored(p) for p in paths)


@dataclass
class Ignored:
    """The paths a walk left out as ignored, with their files and bytes. ``add`` is the walk's
    prune callback (util.walk.iter_tree) with the walk's root bound: it records an ignored path
    and tallies what lies under an ignored directory, which the walk then does not enter."""

    paths: list[str] = field(default_factory=list)  # top-most ignored paths, a directory with a trailing '/'
    files: int = 0
    bytes: int = 0

    def add(self, root: Path, path: str, is_dir: bool) -> bool:
        """Whether ``path`` (under ``root``) is ignored; if so it is recorded and tallied."""
        if not is_ignored(path):
            return False
        self.paths.append(path + "/" if is_dir else path)
        if is_dir:
            files, size = tally(root / path)
            self.files += files
            self.bytes += size
        else:
            self.files += 1
            self.bytes += _size_of(root / path)
        return True

    def summary(self) -> str:
        return summary(self.paths)


def summary(paths) -> str:
    """'.git/, a/__pycache__/, b/.DS_Store and 2 more': the first few of ``paths``, sorted."""
    shown = sorted(paths)
    head = ", ".join(shown[:3])
    return head + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


def _size_of(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def tally(directory: Path) -> tuple[int, int]:
    """(files, bytes) of every non-directory entry under ``directory``, by lstat: links are not
    followed. A report, not a check: what cannot be read is not counted."""
    files = size = 0
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(Path(entry.path))
                    else:
                        files += 1
                        size += st.st_size
        except OSError:
            continue
    return files, size
