"""A directory on a local disk or an NFS mount.

Atomicity comes from rename and link, never from locks (flock lies on NFS):
- ``put`` writes a uniquely named temp file beside the target, then ``os.replace``.
- ``put_if_absent`` writes a temp file, fsyncs it, then ``os.link``s it to the target: link fails
  with EEXIST if the target exists, atomically, on local filesystems and on NFS alike.
Durability is batched: ``put`` does not fsync (one fsync per 1 MiB chunk costs more than hashing
it) but starts the blob's writeback, so the disk works while the push goes on; ``sync()`` is one
syncfs() of the filesystem before a commit point, which then waits only for the rest.

Links and special files. aim_cli writes only directories and regular files below the root, so
anything else there is damage: a symlink, a FIFO, a socket or a device raises
``DamagedStorageError`` naming its key, from every operation alike. Reading and listing must
agree: if ``get`` followed a link that ``list`` skipped, gc would delete the blobs of versions it
never saw. Every access below the root therefore walks the key's directories with
``openat(O_NOFOLLOW | O_DIRECTORY)`` and looks at the last component with ``lstat`` before
opening it, so a FIFO is never opened (opening one blocks until a writer comes). Measured: ~13 us
more per ``get`` of a 4 KiB blob than one plain open (23 vs 11 us), nothing next to hashing a
1 MiB chunk (~0.5 ms); ``put`` and ``list`` got no slower. The root itself may be a link (a mount point, a moved disk).
``list`` walks by path and trusts the directory entries' types: a directory swapped for a link
while it runs is the one race left, and it needs write access to the storage, which could
delete anything anyway.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from aim_cli.backends.base import Bytes, ObjectInfo
from aim_cli.backends.uncached_read import read_uncached
from aim_cli.errors import DamagedStorageError, KeyNotFoundError, ObjectTooLargeError, StorageError
from aim_cli.util.walk import kind_of

TMP_PREFIX = ".tmp-"
# Writeback is started early only for objects of this size or more. For a small one it costs
# more than it saves: one tiny write submitted per object, where the syncfs before the commit
# writes them together (push of 5,000 files of 4 KiB: 0.72 s with it, 0.55 s without, median of 6).
WRITEBACK_MIN_BYTES = 256 * 1024
#: Exactly the names ``_write_temp`` gives: ``.tmp-<target name>.<12 hex>``.
TMP_NAME = re.compile(r"\.tmp-.+\.[0-9a-f]{12}", re.DOTALL)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    """util.walk.kind_of, except that a directory where a key's object belongs is "not a regular
    file" (the backend speaks of keys, not of a user's directories)."""
    return "not a regular file" if stat.S_ISDIR(mode) else kind_of(mode)


def _segment_matches(pattern: str, name: str) -> bool:
    """Whether a directory ``name`` matches one segment of a ``clean_incomplete`` pattern: the
    name itself, or a prefix then ``*`` (``*`` alone: any name)."""
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


class LocalBackend:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.location = str(self.root)

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _parts(key: str) -> list[str]:
        parts = key.split("/") if isinstance(key, str) else []
        if not parts or any(p in ("", ".", "..") or "\x00" in p for p in parts):
            raise ValueError(f"invalid storage key {key!r}")
        return parts

    def _damaged(self, key: str, mode: int) -> DamagedStorageError:
        return DamagedStorageError(
            f"{key} in {self.location} is {_kind(mode)}, which aim_cli never writes below a storage root "
            f"(the storage is damaged or was edited by hand)",
            "remove it, or put the regular file or directory it stands for in its place; aim_cli follows no "
            "links there. `aim_cli repo check` lists what else is wrong",
            key=key,
        )

    def _storage_error(self, e: OSError, action: str) -> StorageError:
        if e.errno == errno.ENOSPC:
            return StorageError(f"disk full while {action} in {self.location}", "free space and retry")
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StorageError(
                f"permission denied while {action} in {self.location}",
                "check that you may write to this directory (or mount it read-write)",
            )
        return StorageError(f"{action} in {self.location} failed: {e.strerror or e}", "check the storage")

    def _open_dir(self, parts: Sequence[str], *, create: bool = False) -> int:
        """An fd of the directory ``root/parts...``, following no link below the root. Missing
        directories are created with ``create``, else FileNotFoundError; a component that is a
        file: NotADirectoryError; a link or special file: DamagedStorageError."""
        flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.root, flags)  # the root itself may be a link
        except FileNotFoundError:
            if not create:
                raise
            self.root.mkdir(parents=True, exist_ok=True)  # a first write creates the root
            fd = os.open(self.root, flags)
        try:
            for i, name in enumerate(parts):
                child = self._open_child_dir(fd, name, "/".join(parts[: i + 1]), create)
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open_child_dir(self, fd: int, name: str, key: str, create: bool) -> int:
        for attempt in (1, 2):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create or attempt == 2:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made by a concurrent writer
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                if stat.S_ISREG(mode):
                    raise NotADirectoryError(errno.ENOTDIR, "a file where a directory is expected", key) from None
                raise self._damaged(key, mode) from None
        raise AssertionError("unreachable")

    def _lstat(self, key: str) -> os.stat_result | None:
        """The stat of the regular file at ``key``; None if there is none (a directory is not an
        object); DamagedStorageError if something else is there."""
        parts = self._parts(key)
        try:
            dfd = self._open_dir(parts[:-1])
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(dfd)
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise self._damaged(key, st.st_mode)
        return st

    def _open_regular(self, key: str) -> tuple[int, os.stat_result]:
        """A read-only fd of the regular file at ``key`` and its fstat, never opening anything else."""
        parts = self._parts(key)
        try:
            dfd = self._open_dir(parts[:-1])
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFoundError(key) from None
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise KeyNotFoundError(key)
            if not stat.S_ISREG(st.st_mode):
                raise self._damaged(key, st.st_mode)
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dfd)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFoundError(key) from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK):  # swapped for a link since the lstat
                raise self._damaged(key, stat.S_IFLNK) from None
            raise
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the lstat (O_NONBLOCK: a FIFO did not block)
            os.close(fd)
            raise self._damaged(key, st.st_mode)
        return fd, st

    # -- the Backend protocol ------------------------------------------------------------------
    def get(self, key: str, max_size: int | None = None) -> bytes:
        try:
            fd, st = self._open_regular(key)
            with open(fd, "rb") as f:
                if max_size is not None and st.st_size > max_size:
                    raise ObjectTooLargeError(key, max_size)  # refused unread
                # Read what fstat says plus one byte (a file growing meanwhile is caught below),
                # not max_size + 1: read(n) allocates n up front, 256 MiB for every manifest.
                data = f.read() if max_size is None else f.read(min(st.st_size, max_size) + 1)
        except OSError as e:
            raise self._storage_error(e, f"reading {key}") from None
        if max_size is not None and len(data) > max_size:
            raise ObjectTooLargeError(key, max_size)
        return data

    def get_once(self, key: str, max_size: int | None = None) -> Bytes:
        """``get``, except that a large object the page cache does not hold bypasses it
        (uncached_read.py) and comes back as a memoryview."""
        if max_size is None:
            return self.get(key)
        try:
            fd, st = self._open_regular(key)
            with open(fd, "rb") as f:
                if st.st_size > max_size:
                    raise ObjectTooLargeError(key, max_size)  # refused unread
                limit = min(st.st_size, max_size) + 1  # as get: a file grown meanwhile shows
                data: Bytes | None = read_uncached(fd, st.st_size, limit)
                if data is None:  # small, cached, or direct reads cannot be had here
                    data = f.read(limit)
        except OSError as e:
            raise self._storage_error(e, f"reading {key}") from None
        if len(data) > max_size:
            raise ObjectTooLargeError(key, max_size)
        return data

    def get_prefix(self, key: str, n: int) -> bytes:
        try:
            fd, _ = self._open_regular(key)
            with open(fd, "rb") as f:
                return f.read(n)
        except OSError as e:
            raise self._storage_error(e, f"reading {key}") from None

    def put(self, key: str, data: Bytes, *, hedge: bool = True, durable: bool = False) -> None:  # one copy, always
        parts = self._parts(key)
        try:
            dfd = self._open_dir(parts[:-1], create=True)
            try:
                # durable: on disk before it replaces what is there (a re-encoded blob, format 3)
                tmp = _write_temp(dfd, parts[-1], data, fsync=durable)
                try:
                    os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
                except BaseException:
                    os.unlink(tmp, dir_fd=dfd)
                    raise
            finally:
                os.close(dfd)
        except OSError as e:
            raise self._storage_error(e, f"writing {key}") from None

    def put_if_absent(self, key: str, data: Bytes) -> bool:
        parts = self._parts(key)
        try:
            dfd = self._open_dir(parts[:-1], create=True)
            try:
                tmp = _write_temp(dfd, parts[-1], data, fsync=True)
                try:
                    os.link(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    created = True
                except FileExistsError:
                    created = False
                finally:
                    os.unlink(tmp, dir_fd=dfd)
                if created:
                    os.fsync(dfd)  # the new entry itself must survive a crash: it is a commit point
                return created
            finally:
                os.close(dfd)
        except OSError as e:
            raise self._storage_error(e, f"creating {key}") from None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            st = self._lstat(key)
        except OSError as e:
            raise self._storage_error(e, f"looking up {key}") from None
        return None if st is None else st.st_size

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every regular file whose key starts with ``prefix``; a link or special file there
        raises DamagedStorageError (never skipped: see the module docstring). Only directories
        that can hold such keys are walked, so damage elsewhere does not stop this listing."""
        base = prefix.rpartition("/")[0]
        try:
            os.close(self._open_dir(self._parts(base) if base else []))  # no link on the way down
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise self._storage_error(e, "listing") from None
        stack = [base]
        while stack:
            rel = stack.pop()
            try:
                entries = list(os.scandir(self.root / rel if rel else self.root))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed since its parent was read
            except OSError as e:
                raise self._storage_error(e, "listing") from None
            for entry in entries:
                key = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append(key)
                    continue
                if not key.startswith(prefix):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since the directory was read
                if not stat.S_ISREG(st.st_mode):
                    raise self._damaged(key, st.st_mode)
                if not TMP_NAME.fullmatch(entry.name):
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        parts = self._parts(key)
        try:
            dfd = self._open_dir(parts[:-1])
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise self._storage_error(e, f"deleting {key}") from None
        try:
            os.unlink(parts[-1], dir_fd=dfd)  # a link itself goes, never what it points to
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as e:
            raise self._storage_error(e, f"deleting {key}") from None
        finally:
            os.close(dfd)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def clean_incomplete(self, older_than: float, dirs: Sequence[str] = ()) -> tuple[int, int]:
        """Delete temp files of writes that a killed process never renamed into place: only
        files named exactly as ``put`` names them, only directly in ``dirs`` (directory keys,
        where a segment ``*`` stands for every subdirectory and ``@*`` for every one whose name
        starts with ``@``), never through a link."""
        cutoff = time.time() - older_than
        count = size = 0
        for rel in sorted({d for pattern in dirs for d in self._expand(pattern)}):
            try:
                entries = list(os.scandir(self.root / rel if rel else self.root))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise self._storage_error(e, "removing temp files") from None
            for entry in entries:
                if not TMP_NAME.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime <= cutoff:
                        os.unlink(entry.path)
                        count, size = count + 1, size + st.st_size
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile
                except OSError as e:
                    raise self._storage_error(e, "removing temp files") from None
        return count, size

    def _expand(self, pattern: str) -> builtins.list[str]:  # `list` here is the method
        """The existing directories (never links) that ``pattern`` names, as keys."""
        found = [""]
        for segment in pattern.split("/") if pattern else []:
            nxt = []
            for rel in found:
                try:
                    entries = list(os.scandir(self.root / rel if rel else self.root))
                except OSError:
                    continue
                nxt += [
                    f"{rel}/{e.name}" if rel else e.name
                    for e in entries
                    if _segment_matches(segment, e.name) and e.is_dir(follow_symlinks=False)
                ]
            found = nxt
        return found

    def sync(self) -> None:
        if self.root.exists():
            from aim_cli.util.fs import sync_filesystem

            sync_filesystem(self.root)

    def check_access(self) -> None:
        if self.root.is_dir():
            if not os.access(self.root, os.R_OK | os.X_OK):
                raise StorageError(f"cannot read repository directory {self.location}", "check its permissions")
            return
        if self.root.exists():
            raise StorageError(f"repository path {self.location} is not a directory", "fix the path in the config")
        # Not created yet: fine as long as it can be created (checked when first written).

    begin_access_check = check_access  # a stat: nothing to overlap

    def find_in_parents(self, key: str) -> str | None:
        """The nearest directory above the root (by its path as given, and by its real path)
        that holds an object ``key``, or None."""
        start = Path(os.path.abspath(self.root))
        seen: set[Path] = set()
        for parent in (*start.parents, *start.resolve().parents):
            if parent not in seen and (parent / key).is_file():
                return str(parent)
            seen.add(parent)
        return None

    def close(self) -> None:
        pass


def _write_temp(dfd: int, name: str, data: Bytes, *, fsync: bool) -> str:
    """Write ``data`` to a new uniquely named temp file beside ``name`` in ``dfd``; its name."""
    tmp = f"{TMP_PREFIX}{name}.{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
    try:
        view = memoryview(data)
        size = view.nbytes
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
        elif size >= WRITEBACK_MIN_BYTES:
            from aim_cli.util.fs import start_writeback  # and ctypes: a read-only command needs neither

            start_writeback(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=dfd)
        raise
    os.close(fd)
    return tmp
