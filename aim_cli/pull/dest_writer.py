"""Everything pull writes into DEST, and the checks that keep those writes inside it (dest_access.py).
DEST's own layout (the lock, partial files, their mode) is in layout.py.

The writes: ``locked_dest`` (the lock, and the work directories removed when empty),
``prepare_dest`` (under the lock, before planning: the work directories, the case probe, partial
files given their owner's mode again), ``write_at`` / ``truncate_partial`` (partial files),
``commit_files`` (one syncfs, then the renames, then the modes), ``set_mode`` (a complete file
whose mode alone is wrong) and ``delete_files`` (``--delete``: regular files only, reached through
directory descriptors opened without following a symlink, so a link swapped in for a directory
never leads outside DEST). Nothing here decides what to write: plan.py does, reading DEST without
writing to it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from aim_cli.backends.local import WRITEBACK_MIN_BYTES
from aim_cli.errors import StorageError, UsageError
from aim_cli.pull.case import check_case_clashes
from aim_cli.pull.dest_access import DestDirs, check_work_dir, dest_error, is_repository, open_regular, scan_partials
from aim_cli.pull.dest_lock import DestLock
from aim_cli.pull.layout import CASE_PROBE, PARTIAL_DIR, PARTIAL_MODE, WORK_DIR, DestFacts
from aim_cli.util.fs import display_path, drop_cached, fsync_dir, start_writeback, sync_filesystem

if TYPE_CHECKING:
    from aim_cli.pull.plan import FilePlan

# Opening a directory of DEST (--delete): never through a symlink.
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


def prepare_dest(dest: Path, paths: Sequence[str]) -> DestFacts:
    """Make DEST (absolute, locked) ready to be planned, and say what was found: pull's work
    directories are created (never through a symlink), a version whose ``paths`` clash where
    case is ignored is refused (UsageError) if DEST's filesystem ignores it (probed only when
    there is such a pair), and every partial file is listed and made the owner's again: a partial
    an older aim_cli left read-only (it applied the file's mode before the rename) can then be
    re-read and finished. Anything in the partial directory that is not a partial file is refused
    before any mode changes."""
    work_dir = dest / WORK_DIR
    partial_dir = work_dir / PARTIAL_DIR
    make_work_dir(partial_dir)
    check_case_clashes(paths, lambda: ignores_case(work_dir))
    partials = scan_partials(partial_dir)
    for path, mode in partials:
        if mode != PARTIAL_MODE:
            try:
                os.chmod(path, PARTIAL_MODE)  # a regular file, just checked, in the directory we hold the lock of
            except OSError as e:
                raise dest_error(e, path) from None
    return DestFacts(tuple(path for path, _ in partials), locked=True)


def refuse_repository_dest(dest: Path, repo_roots: Iterable[str | os.PathLike] = ()) -> None:
    """Pull never writes into a repository (docs/design.md §6): DEST may not be a repository's
    directory, lie inside one or contain one (UsageError, exit 2).

    Inside: every parent of the resolved DEST is looked at (one stat each). Containing: walking
    DEST's whole tree could take minutes in a big directory, so the check is bounded to the places
    that matter: DEST's immediate subdirectories, the local repositories ``repo_roots`` (those of
    the config, wherever they lie), and every existing directory the version writes into (checked
    by ``DestDirs`` as the files are planned and placed). A repository deeper in DEST that the
    config does not name stays out of reach of this pull: it writes nowhere near it."""

    def refuse(relation: str, root: str | os.PathLike) -> UsageError:
        return UsageError(
            f"destination {display_path(dest)} {relation} the repository at {display_path(root)}",
            "pull into a directory outside every repository",
        )

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


def commit_files(dest: Path, verified: list[FilePlan]) -> list[os.stat_result]:
    """Give verified files their final names, then their modes. Their bytes are made durable
    first, all at once (one syncfs, where an fsync per file costs seconds for a model of thousands
    of small files), so that after a power loss no final name holds a file whose data did not
    reach the disk. The mode comes after the rename: a partial file stays the owner's (readable
    and writable), so a read-only file verified before a kill does not wedge the rerun.
    Returns each file's fstat once in place, for DEST's index (no lookup by path more).

    The renames run on a few threads: a rename over an earlier file frees that file's blocks, and
    where the filesystem discards freed blocks (ext4 mounted ``discard``) it waits for the disk to
    discard them, ~30 ms per 256 MiB file (`perf record -e sched:sched_switch -g`:
    ``ext4_free_blocks`` -> ``blkdev_issue_discard``); such waits overlap."""
    if not verified:
        return []
    try:
        sync_filesystem(dest)
    except OSError as e:
        raise dest_error(e, dest) from None
    dirs = DestDirs(dest)
    parents, ready, refused = set(), [], None
    for plan in verified:  # on this thread: each directory is checked once
        try:
            parents.add(dirs.parent_of(plan.entry.path, create=True))
            ready.append(plan)
        except (UsageError, StorageError) as e:  # the others still get their names
            refused = refused or e
    slices = [ready[i::_RENAMERS] for i in range(min(_RENAMERS, len(ready)))]
    if len(slices) <= 1:
        placed = [_place_all(part) for part in slices]
    else:
        with ThreadPoolExecutor(len(slices), thread_name_prefix="aim-rename") as pool:
            futures = [pool.submit(_place_all, part) for part in slices]
        placed = [f.result() for f in futures]  # the first failure, once every thread is done
    for parent in parents:
        fsync_dir(parent)
    if refused is not None:
        raise refused
    return [placed[i % len(slices)][i // len(slices)] for i in range(len(ready))]


#: Threads renaming verified files into place.
_RENAMERS = 4


def _place_all(plans: list[FilePlan]) -> list[os.stat_result]:
    return [_place(plan) for plan in plans]


def _place(plan: FilePlan) -> os.stat_result:
    """Rename one verified file into place and give it its mode; its fstat."""
    try:
        fd = open_regular(plan.partial, os.O_RDONLY)
        try:
            os.replace(plan.partial, plan.final)
            os.fchmod(fd, plan.entry.mode)  # the file just renamed, whatever its name now points to
            return os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise dest_error(e, plan.final) from None


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
    ``whole``: ``data`` is the entire file; whatever the partial held before is cut off.

    The writeback of a large chunk starts as it is written. Started per file once the file was
    verified, it was a burst of a whole shard's writes, and the disk served the other threads'
    reads behind it: a cold pull of 1 GiB idled both cores at each of its four shards' ends
    (median of 6 alternating runs: 1.80 s, now 1.56 s, the same CPU)."""
    try:
        fd = open_regular(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if whole else 0))
        try:
            view = memoryview(data)
            start, size = offset, view.nbytes
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            if size >= WRITEBACK_MIN_BYTES:
                start_writeback(fd, start, size)
        finally:
            os.close(fd)
    except OSError as e:
        raise dest_error(e, path) from None


def copy_at(
    path: str | Path, offset: int, source: str, source_offset: int, size: int, *, drop_source: bool = False
) -> bool:
    """Copy ``size`` bytes of the regular file ``source`` (never through a symlink) from
    ``source_offset`` into the partial file ``path`` at ``offset``, in the kernel
    (copy_file_range: extents cloned where the filesystem can reflink, else copied without
    passing through user space). Unverified: the caller's whole-file digest covers the bytes.
    False when it cannot (no such call, another filesystem, the source gone, shorter, or not a
    regular file): the caller then reads the chunk and verifies it.

    ``drop_source``: the source is a file this pull replaces. The copy read its pages into the
    page cache, and the rename over it would free them all at once, on the commit path (a 256
    MiB file: ~40 ms per rename); they are dropped here instead, in the worker, as it goes."""
    if not hasattr(os, "copy_file_range"):
        return False
    try:
        src = open_regular(source, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            dst = open_regular(path, os.O_WRONLY | os.O_CREAT)
        except OSError as e:
            raise dest_error(e, path) from None
        try:
            done = 0
            while done < size:
                n = os.copy_file_range(src, dst, size - done, source_offset + done, offset + done)
                if n == 0:
                    return False  # the source is shorter than its index says
                done += n
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise dest_error(e, path) from None
            return False
        finally:
            os.close(dst)
        if drop_source:
            drop_cached(src, source_offset, size)
    finally:
        os.close(src)
    return True


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
        for _, fd in self.chain[depth + 1 :]:
            os.close(fd)
        del self.chain[depth + 1 :]
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
