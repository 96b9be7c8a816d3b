"""A directory on a local disk or an NFS mount.

Atomicity comes from rename and link, never from locks (flock lies on NFS):
- ``put`` writes a uniquely named temp file beside the target, then ``os.replace``.
- ``put_if_absent`` writes a temp file, fsyncs it, then ``os.link``s it to the target: link fails
  with EEXIST if the target exists, atomically, on local filesystems and on NFS alike.
Durability is batched: ``put`` does not fsync (one fsync per 1 MiB chunk costs more than hashing
it) but starts the blob's writeback, so the disk works while the push goes on; ``sync()`` is one
syncfs() of the filesystem before a commit point, which then waits only for the rest.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from aim_cli.backends.base import Bytes, ObjectInfo
from aim_cli.errors import KeyNotFoundError, ObjectTooLargeError, StorageError
from aim_cli.fsutil import fsync_dir, start_writeback, sync_filesystem

TMP_PREFIX = ".tmp-"
# Writeback is started early only for objects of this size or more. For a small one it costs
# more than it saves: one tiny write submitted per object, where the syncfs before the commit
# writes them together (push of 5,000 files of 4 KiB: 0.72 s with it, 0.55 s without, median of 6).
WRITEBACK_MIN_BYTES = 256 * 1024


class LocalBackend:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.location = str(self.root)

    # -- helpers -------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    def _storage_error(self, e: OSError, action: str) -> StorageError:
        if e.errno == errno.ENOSPC:
            return StorageError(f"disk full while {action} in {self.location}", "free space and retry")
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StorageError(
                f"permission denied while {action} in {self.location}",
                "check that you may write to this directory (or mount it read-write)",
            )
        return StorageError(f"{action} in {self.location} failed: {e.strerror or e}", "check the storage")

    def _write_temp(self, target: Path, data: Bytes, *, fsync: bool) -> Path:
        tmp = target.with_name(f"{TMP_PREFIX}{target.name}.{uuid.uuid4().hex[:12]}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            size = view.nbytes
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if fsync:
                os.fsync(fd)
            elif size >= WRITEBACK_MIN_BYTES:
                start_writeback(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp

    # -- the Backend protocol ------------------------------------------------------------------
    def get(self, key: str, max_size: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read() if max_size is None else f.read(max_size + 1)
            if max_size is not None and len(data) > max_size:
                raise ObjectTooLargeError(key, max_size)
            return data
        except (FileNotFoundError, NotADirectoryError):
            raise KeyNotFoundError(key) from None
        except OSError as e:
            raise self._storage_error(e, f"reading {key}") from None

    def put(self, key: str, data: Bytes) -> None:
        target = self._path(key)
        try:
            tmp = self._write_temp(target, data, fsync=False)
            try:
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as e:
            raise self._storage_error(e, f"writing {key}") from None

    def put_if_absent(self, key: str, data: Bytes) -> bool:
        target = self._path(key)
        try:
            tmp = self._write_temp(target, data, fsync=True)
            try:
                os.link(tmp, target)
                created = True
            except FileExistsError:
                created = False
            finally:
                tmp.unlink(missing_ok=True)
            if created:
                fsync_dir(target.parent)
            return created
        except OSError as e:
            raise self._storage_error(e, f"creating {key}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base_key = prefix.rpartition("/")[0]
        base = self.root / base_key if base_key else self.root
        stack = [base]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise self._storage_error(e, "listing") from None
            for entry in entries:
                if entry.name.startswith(TMP_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    key = Path(entry.path).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        try:
                            size = entry.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue  # deleted since the directory was read
                        yield ObjectInfo(key, size)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as e:
            raise self._storage_error(e, f"deleting {key}") from None

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def clean_incomplete(self, older_than: float) -> tuple[int, int]:
        """Delete temp files of writes that a killed process never renamed into place."""
        import time

        cutoff = time.time() - older_than
        count = size = 0
        for dirpath, _, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(TMP_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if st.st_mtime <= cutoff:
                        os.unlink(path)
                        count, size = count + 1, size + st.st_size
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile
                except OSError as e:
                    raise self._storage_error(e, "removing temp files") from None
        return count, size

    def sync(self) -> None:
        if self.root.exists():
            sync_filesystem(self.root)

    def check_access(self) -> None:
        if self.root.is_dir():
            if not os.access(self.root, os.R_OK | os.X_OK):
                raise StorageError(f"cannot read repository directory {self.location}", "check its permissions")
            return
        if self.root.exists():
            raise StorageError(f"repository path {self.location} is not a directory", "fix the path in the config")
        # Not created yet: fine as long as it can be created (checked when first written).

    def close(self) -> None:
        pass
