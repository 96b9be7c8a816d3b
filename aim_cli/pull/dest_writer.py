"""Everything pull writes into DEST, and the checks that keep those writes inside it.

Layout inside DEST while a pull runs (names starting with ``.aim`` never appear in a manifest):

    DEST/.aim/pull.lock                   one pull at a time (aim_cli/dest_lock.py says how)
    DEST/.aim/partial/<id>                a file being assembled; id = BLAKE3(path NUL file digest)[:32]
    DEST/.aim/case-probe                  for an instant: does DEST's filesystem ignore case?

The partial names are deterministic, so a rerun after a kill finds them and re-hashes their chunks
against the manifest: only what is still missing is fetched, and no second copy of the model is
made. A partial file is always the owner's, mode 0600: the manifest's mode is applied only after
the rename, so a read-only or write-only file can be re-read for verification and rewritten by a
rerun.

The writes: ``locked_dest`` (the lock, and the work directories removed when empty),
``write_at`` / ``truncate_partial`` (partial files), ``commit_files`` (one syncfs, then the
renames, then the modes), ``set_mode`` (a complete file whose mode alone is wrong) and
``delete_files`` (``--delete``: regular files only, reached through directory descriptors opened
without following a symlink, so a link swapped in for a directory never leads outside DEST).
Nothing here decides what to write: pull_plan.py does, reading DEST without writing to it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from aim_cli.pull.dest_lock import DestLock
from aim_cli.errors import StorageError, UsageError
from aim_cli.util.fs import display_path, fsync_dir, sync_filesystem
from aim_cli.format.layout import REPO_META_KEY

if TYPE_CHECKING:
    from aim_cli.pull.plan import FilePlan

WORK_DIR = ".aim"
PARTIAL_DIR = "partial"
CASE_PROBE = "case-probe"
PARTIAL_MODE = 0o600  # what a partial file always has: readable and writable by its owner only
# Opening a file of DEST: never through a symlink, never blocking on a FIFO planted there.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def locked_dest(dest: Path) -> Iterator[None]:
    """Hold DEST's pull lock; afterwards remove the work directories if they are empty (partial
    files of an interrupted pull stay for the rerun)."""
    lock = DestLock(dest)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
        for d in (dest / WORK_DIR / PARTIAL_DIR, dest / WORK_DIR):
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass


def make_work_dir(path: Path) -> None:
    """Create one of pull's own directories inside DEST, refusing a symlink in its place: the
    lock and partial files must not land outside DEST."""
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror}", "check the destination's permissions") from None
    check_work_dir(path)


def check_work_dir(path: Path) -> None:
    """Refuse one of pull's own directories that is a symlink or not a directory (a dry run,
    which creates nothing, asks this of the ones that exist)."""
    if path.is_symlink() or not path.is_dir():
        raise UsageError(f"{path} is not a directory (a symlink or a file)",
                         "pull never writes through a symlink in its destination: remove it and rerun")


def is_repository(directory: Path) -> bool:
    return os.path.lexists(directory / REPO_META_KEY)


def refuse_repository_dest(dest: Path, repo_roots: Iterable[str | os.PathLike] = ()) -> None:
    """Pull never writes into a repository (DESIGN.md section 4): DEST may not be a repository's
    directory, lie inside one or contain one (UsageError, exit 2).

    Inside: every parent of the resolved DEST is looked at (one stat each). Containing: walking
    DEST's whole tree could take minutes in a big directory, so the check is bounded to the places
    that matter: DEST's immediate subdirectories, the local repositories ``repo_roots`` (those of
    the config, wherever they lie), and every existing directory the version writes into (checked
    by ``DestDirs`` as the files are planned and placed). A repository deeper in DEST that the
    config does not name stays out of reach of this pull: it writes nowhere near it."""
    def refuse(relation: str, root: str | os.PathLike) -> UsageError:
        return UsageError(f"destination {display_path(dest)} {relation} the repository at {display_path(root)}",
                          "pull into a directory outside every repository")

    resolved = dest.resolve()
    for directory in (resolved, *resolved.parents):
        if is_repository(directory):
            raise refuse("is" if directory == resolved else "lies inside", directory)
    for root in (Path(r).resolve() for r in repo_roots):  # they need not hold an aim-repo.json yet
        if root == resolved or root in resolved.parents:
            raise refuse("is" if root == resolved else "lies inside", root)
        if resolved in root.parents:
            raise refuse("contains", root)
    try:
        children = [e.path for e in os.scandir(resolved) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise dest_error(e, resolved) from None
    for child in children:
        if is_repository(Path(child)):
            raise refuse("contains", child)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` one level at a time: Path.mkdir(parents=True) recurses once per missing level,
    and a deep DEST would end in RecursionError."""
    missing = []
    current = path.absolute()
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        except OSError as e:
            raise dest_error(e, directory) from None


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
            raise UsageError(f"{display_path(directory)} is a symlink; pull never writes through a symlink in its "
                             f"destination", "remove the link or pull into another directory")
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{display_path(directory)} exists and is not a directory", "move it away or pull elsewhere")
        if is_repository(directory):
            raise UsageError(f"{display_path(directory)} is a repository's directory; pull never writes into one",
                             "pull into a directory outside every repository")
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
        return StorageError(f"disk full while writing {display_path(path)}", "free some space and rerun: the pull resumes")
    return StorageError(f"cannot write {display_path(path)}: {e.strerror}", "check the destination's permissions")


def ignores_case(work_dir: Path) -> bool:
    """Whether the filesystem of ``work_dir`` ignores case: create a file, look for its upper-case
    name. (ext4 can fold case per directory; pull's own work directory stands for DEST.)"""
    probe = work_dir / CASE_PROBE
    try:
        probe.unlink(missing_ok=True)  # left by a killed pull: the lock says this DEST is ours
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PARTIAL_MODE))
        try:
            return os.path.lexists(work_dir / CASE_PROBE.upper())
        finally:
            probe.unlink()
    except OSError as e:
        raise dest_error(e, probe) from None


def set_mode(path: str | Path, mode: int) -> None:
    try:
        fd = open_regular(path, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except OSError as e:
        raise dest_error(e, path) from None


def commit_files(dest: Path, verified: list[FilePlan]) -> None:
    """Give verified files their final names, then their modes. Their bytes are made durable
    first, all at once (one syncfs, where an fsync per file costs seconds for a model of thousands
    of small files), so that after a power loss no final name holds a file whose data did not
    reach the disk. The mode comes after the rename: a partial file stays the owner's (readable
    and writable), so a read-only file verified before a kill does not wedge the rerun."""
    if not verified:
        return
    try:
        sync_filesystem(dest)
    except OSError as e:
        raise dest_error(e, dest) from None
    dirs = DestDirs(dest)
    parents = set()
    for plan in verified:
        parent = dirs.parent_of(plan.entry.path, create=True)
        try:
            fd = open_regular(plan.partial, os.O_RDONLY)
            try:
                os.replace(plan.partial, plan.final)
                os.fchmod(fd, plan.entry.mode)  # the file just renamed, whatever its name now points to
            finally:
                os.close(fd)
        except OSError as e:
            raise dest_error(e, plan.final) from None
        parents.add(parent)
    for parent in parents:
        fsync_dir(parent)


def truncate_partial(plan: FilePlan) -> None:
    """Give the assembled partial file its exact size (an empty file has had no write; a partial
    may hold more bytes than the file has)."""
    try:
        fd = open_regular(plan.partial, os.O_WRONLY | os.O_CREAT)
        try:
            os.ftruncate(fd, plan.entry.size)
        finally:
            os.close(fd)
    except OSError as e:
        raise dest_error(e, plan.partial) from None


def write_at(path: str | Path, offset: int, data: bytes, *, whole: bool = False) -> None:
    """Write a chunk at its offset, creating the partial file on its first write. Files are
    opened per write, not held open: a model of many files would exhaust the descriptor limit.
    ``whole``: ``data`` is the entire file; whatever the partial held before is cut off."""
    try:
        fd = open_regular(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if whole else 0))
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)
    except OSError as e:
        raise dest_error(e, path) from None


# -- --delete ----------------------------------------------------------------------------------------
class _DirWalker:
    """Descriptors of DEST's directories, opened one component at a time without following a
    symlink (O_NOFOLLOW): a path whose directory was swapped for a link, or is no longer a
    directory, is not reached at all. Holds only the descriptors of one chain of directories
    (paths come sorted), so a tree of thousands of directories never exhausts the limit."""

    def __init__(self, dest: Path):
        self.chain: list[tuple[str, int]] = [("", os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))]

    def open(self, directory: str) -> int | None:
        """The descriptor of DEST/``directory`` ("" for DEST), or None if it cannot be reached."""
        parts = directory.split("/") if directory else []
        depth = 0
        while depth + 1 < len(self.chain) and depth < len(parts) and self.chain[depth + 1][0] == parts[depth]:
            depth += 1
        for _, fd in self.chain[depth + 1:]:
            os.close(fd)
        del self.chain[depth + 1:]
        for part in parts[depth:]:
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=self.chain[-1][1])
            except OSError:
                return None  # gone, a symlink (ELOOP), or not a directory
            self.chain.append((part, fd))
        return self.chain[-1][1]

    def close(self) -> None:
        for _, fd in self.chain:
            os.close(fd)
        self.chain = []


def delete_files(dest: Path, paths: Iterable[str]) -> list[str]:
    """Remove the regular files DEST/``path`` (``/``-separated, relative; sorted), then the
    directories those removals left empty (never DEST itself, never a directory that still holds
    anything: rmdir refuses). Anything that is not a regular file by then (a symlink, a directory,
    a FIFO) is left alone. Returns the paths removed."""
    removed: list[str] = []
    walker = _DirWalker(dest)
    try:
        for path in sorted(paths):
            directory, _, name = path.rpartition("/")
            fd = walker.open(directory)
            if fd is None:
                continue
            try:
                if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    continue
                os.unlink(name, dir_fd=fd)  # unlink never follows a link in the last component
            except FileNotFoundError:
                continue
            except OSError as e:
                raise dest_error(e, dest / path) from None
            removed.append(path)
        emptied = {"/".join(p.split("/")[:i]) for p in removed for i in range(1, p.count("/") + 1)}
        for directory in sorted(emptied, key=lambda d: (-d.count("/"), d)):  # deepest first
            parent, _, name = directory.rpartition("/")
            fd = walker.open(parent)
            if fd is not None:
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError:
                    pass  # not empty (or not ours to judge): kept
    finally:
        walker.close()
    return removed
