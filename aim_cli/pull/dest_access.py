"""Reaching into DEST without leaving it, and reading it without writing to it: what the planner
and the writer (dest_writer.py) both need.

    open_regular        a descriptor of a regular file of DEST, never through a symlink or a FIFO
    DestDirs            the directories files go into: never a symlink, a file or a repository
    check_work_dir      pull's own directories must be directories, not symlinks
    scan_partials       the partial files left in DEST/.aim/partial, refusing anything else there
    inspect_dest        a dry run's DestFacts (layout.py): DEST read, nothing written, no lock
    dest_error          the error to raise for an OSError met in DEST
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from aim_cli.errors import StorageError, UsageError
from aim_cli.format.layout import REPO_META_KEY
from aim_cli.pull.case import check_case_clashes
from aim_cli.pull.layout import PARTIAL_DIR, PARTIAL_MODE, WORK_DIR, DestFacts
from aim_cli.util.fs import display_path

# Opening a file of DEST: never through a symlink, never blocking on a FIFO planted there.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK


def check_work_dir(path: Path) -> None:
    """Refuse one of pull's own directories that is a symlink or not a directory (a dry run,
    which creates nothing, asks this of the ones that exist)."""
    if path.is_symlink() or not path.is_dir():
        raise UsageError(
            f"{path} is not a directory (a symlink or a file)",
            "pull never writes through a symlink in its destination: remove it and rerun",
        )


def is_repository(directory: Path) -> bool:
    return os.path.lexists(directory / REPO_META_KEY)


class DestDirs:
    """The directories of DEST that files go into, each checked once per instance: never a
    symlink (pull never writes through one), never a file in the way, never a repository's
    directory. Missing ones are created one level at a time when asked (no recursion)."""

    def __init__(self, dest: Path):
        self.dest = dest
        self._checked: set[Path] = set()
        self._absent: set[Path] = set()  # found missing when not asked to create (DEST is locked)

    def parent_of(self, rel: str, *, create: bool) -> Path:
        parts = rel.split("/")[:-1]
        parent = self.dest
        for part in parts:
            parent = parent / part
            if parent in self._checked:
                continue
            if (not create and parent in self._absent) or not self._check(parent, create):
                self._absent.add(parent)
                return self.dest.joinpath(*parts)  # absent: nothing below it exists either
            self._checked.add(parent)
        return parent

    @staticmethod
    def _check(directory: Path, create: bool) -> bool:
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass  # created meanwhile: checked below like any other
            except OSError as e:
                raise dest_error(e, directory) from None
            st = os.lstat(directory)
        except OSError as e:
            raise dest_error(e, directory) from None
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(
                f"{display_path(directory)} is a symlink; pull never writes through a symlink in its destination",
                "remove the link or pull into another directory",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(
                f"{display_path(directory)} exists and is not a directory", "move it away or pull elsewhere"
            )
        if is_repository(directory):
            raise UsageError(
                f"{display_path(directory)} is a repository's directory; pull never writes into one",
                "pull into a directory outside every repository",
            )
        return True


def open_regular(path: str | Path, flags: int) -> int:
    """An open descriptor of the regular file at ``path`` (created PARTIAL_MODE with O_CREAT):
    never through a symlink, never a FIFO or device (which could block or be endless)."""
    fd = os.open(path, flags | _OPEN_FLAGS, PARTIAL_MODE)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def dest_error(e: OSError, path: str | Path) -> Exception:
    if e.errno == errno.ELOOP:
        return UsageError(f"{display_path(path)} is a symlink; pull never writes through one", "remove it and rerun")
    if e.errno == errno.ENAMETOOLONG:
        return UsageError(f"{display_path(path)}: {e.strerror}", "pull into a directory with a shorter path")
    if e.errno == errno.ENOSPC:
        return StorageError(
            f"disk full while writing {display_path(path)}", "free some space and rerun: the pull resumes"
        )
    return StorageError(f"cannot write {display_path(path)}: {e.strerror}", "check the destination's permissions")


def scan_partials(partial_dir: Path, *, missing_ok: bool = False) -> list[tuple[Path, int]]:
    """(path, permission bits) of the partial files left in DEST/.aim/partial. Anything there that
    aim_cli does not write (a directory, a symlink, a FIFO, a second hard link to some file) is
    refused rather than followed or deleted. ``missing_ok``: no partial directory is no partial
    file (a dry run, where no pull has run)."""
    found: list[tuple[Path, int]] = []
    try:
        entries = list(os.scandir(partial_dir))
    except OSError as e:
        if missing_ok and isinstance(e, FileNotFoundError):
            return found  # no pull has run there
        raise dest_error(e, partial_dir) from None
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise UsageError(
                f"{display_path(path)} is not a partial file of aim_cli (a directory, a link or a special file)",
                "remove it and rerun the pull",
            )
        found.append((path, stat.S_IMODE(st.st_mode)))
    return found


def ignores_case_read_only(dest: Path) -> bool:
    """Whether DEST's filesystem ignores case, without writing: look a name of DEST (or of its
    nearest existing parent) up in another case. False when no name there can tell."""
    directory = dest
    while not directory.is_dir() and directory.parent != directory:
        directory = directory.parent
    try:
        names = set(os.listdir(directory))
    except OSError:
        return False
    for name in names:
        other = name.swapcase()
        if other != name and other not in names:
            return os.path.lexists(directory / other)
    return False


def inspect_dest(dest: Path, paths: Sequence[str]) -> DestFacts:
    """What a dry run learns of DEST (absolute) without writing to it or taking its lock: pull's
    own directories are checked where they exist (nothing is read through a symlink the pull
    itself would refuse), a version whose ``paths`` clash where case is ignored is refused
    (UsageError) if DEST's filesystem seems to ignore it, and the partial files are listed. A
    partial an older aim_cli left without its owner's read access then just holds no chunk: only
    a pull, under the lock, gives it PARTIAL_MODE again (dest_writer.prepare_dest)."""
    partial_dir = dest / WORK_DIR / PARTIAL_DIR
    for work_dir in (dest / WORK_DIR, partial_dir):
        if os.path.lexists(work_dir):
            check_work_dir(work_dir)
    check_case_clashes(paths, lambda: ignores_case_read_only(dest))
    partials = scan_partials(partial_dir, missing_ok=True)
    return DestFacts(tuple(path for path, _ in partials), locked=False)
