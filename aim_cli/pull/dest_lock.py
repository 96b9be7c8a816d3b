"""The pull lock: one pull at a time into a destination directory (docs/design.md §6).

    DEST/.aim/pull.lock              {"pid", "host", "nonce"}: the pull that holds DEST
    DEST/.aim/pull.lock.takeover     {"pid", "host", "nonce"}: a pull removing a stale pull.lock
    DEST/.aim/.<name>.<hex>.aim-tmp  a lock being written, linked into place, then removed

No flock (it lies on NFS). A lock is written whole to a unique file, then link(2)ed to its name
(util.fs.write_beside_at with replace=False): link fails if the name exists, atomically, on NFS
too, so a reader never sees a lock half written.
Every name is reached through DEST/.aim's descriptor, opened without following a symlink. A lock
that is not a regular file (a symlink, a FIFO, a directory) is refused (exit 2) without being
opened or followed, and reads are bounded (READ_LIMIT).

A lock is **stale** when it names this host and a pid that no longer runs (a lock of another host
is never judged: its owner cannot be asked), or when it is not a lock at all (not JSON, numbers
out of range, too large): locks are written whole, so such a file is no live pull's.

Taking over a stale lock. "Read, unlink, create" lets two pulls hold one DEST: both judge the dead
owner's lock stale, A unlinks it and creates its own, then B unlinks A's fresh lock and creates
its own. So a pull.lock is removed by anyone but its owner only while holding the takeover lock
(created like the lock, exclusively), and only once judged stale again under it: nobody else can
remove pull.lock meanwhile, so the lock judged is the lock removed. A pull that finds the takeover
lock held refuses (that other pull is about to hold DEST). A takeover lock left by a pull that
died in that instant is not removed automatically (that would race the same way): the message
names it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from aim_cli.errors import AimError, LockHeldError, StorageError, UsageError
from aim_cli.pull.layout import WORK_DIR
from aim_cli.repository.leases import decode_json, owner_is_gone, parse_owner
from aim_cli.util.fs import read_at_most, write_beside_at

LOCK_NAME = "pull.lock"
TAKEOVER_NAME = "pull.lock.takeover"
READ_LIMIT = 64 * 1024  # a lock is ~90 bytes


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int


def parse_lock(raw: bytes) -> LockOwner | None:
    """The owner a lock file's bytes name, or None when they are not a lock. Never raises."""
    try:
        d = decode_json(raw)
        if not isinstance(d, dict):
            raise TypeError("not an object")
        return LockOwner(*parse_owner(d))
    except (ValueError, KeyError, TypeError):
        return None


def is_stale(owner: LockOwner | None) -> bool:
    return owner is None or owner_is_gone(owner.host, owner.pid)


class DestLock:
    """An exclusive lock on DEST, held from ``acquire()`` to ``release()`` (see the module docstring)."""

    def __init__(self, dest: Path):
        self.dest = Path(dest)
        self.dir = self.dest / WORK_DIR
        self.path = self.dir / LOCK_NAME
        self.held = False
        # The nonce tells our lock from any other, even one of this process or on a reused inode.
        self._me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "nonce": uuid.uuid4().hex}).encode()
        self._dir_fd: int | None = None

    def _step(self, point: str) -> None:
        """Where another process may act in between: "judged" (pull.lock judged stale) and
        "takeover" (the takeover lock held, pull.lock not yet judged again). Tests interleave here."""

    def acquire(self) -> None:
        self._dir_fd = _open_work_dir(self.dir)
        try:
            for _ in range(3):
                if self._create(LOCK_NAME):
                    self.held = True
                    return
                raw = self._read(LOCK_NAME)
                if raw is None:
                    continue  # released meanwhile
                owner = parse_lock(raw)
                if owner is not None and not is_stale(owner):
                    raise LockHeldError(
                        f"another pull into {self.dest} is running (pid {owner.pid} on {owner.host})",
                        f"wait for it to finish; if it is gone, delete {self.path}",
                    )
                self._step("judged")
                self._take_over()
            raise LockHeldError(f"could not take the lock {self.path}: other pulls keep taking it", "retry")
        except AimError:
            self._close()
            raise
        except OSError as e:
            self._close()
            raise StorageError(
                f"cannot take the lock {self.path}: {e.strerror or e}",
                "check the destination's permissions and free space",
            ) from None
        except BaseException:
            self._close()
            raise

    def release(self) -> None:
        """Remove our lock: only ours (someone may have deleted it by hand and another pull taken DEST)."""
        if self.held:
            self.held = False
            try:
                if self._read(LOCK_NAME) == self._me:
                    os.unlink(LOCK_NAME, dir_fd=self._dir_fd)
            except (AimError, OSError):
                pass  # not ours any more, or unreadable: leave it
        self._close()

    def _close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _create(self, name: str) -> bool:
        """Create ``name`` holding our {"pid", "host", "nonce"}, whole, unless it exists: written
        beside it and linked into place (util.fs.write_beside_at, replace=False). No fsync: a
        lock lost in a crash belonged to a pull that the crash ended too."""
        assert self._dir_fd is not None
        return write_beside_at(self._dir_fd, name, self._me, mode=0o644, replace=False, fsync=False)

    def _read(self, name: str) -> bytes | None:
        """The bytes of ``name`` (at most READ_LIMIT + 1), or None if it does not exist. A name that
        is not a regular file is refused before it is opened: a FIFO would block, a symlink lead
        anywhere."""
        try:
            if stat.S_ISREG(os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False).st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._dir_fd)
            else:
                fd = None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink swapped in
                raise
            fd = None
        try:
            if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UsageError(
                    f"{self.dir / name} is not a regular file (a symlink, FIFO or directory); pull never opens it",
                    f"remove it if no pull into {self.dest} is running, then rerun",
                )
            data = read_at_most(fd, READ_LIMIT)
            return b"" if len(data) > READ_LIMIT else data  # larger: not a lock
        finally:
            if fd is not None:
                os.close(fd)

    def _take_over(self) -> None:
        """Remove the stale pull.lock under the takeover lock, or raise LockHeldError."""
        if not self._create(TAKEOVER_NAME):
            raw = self._read(TAKEOVER_NAME)
            if raw is None:
                return  # that takeover just finished: look again
            owner = parse_lock(raw)
            if owner is not None and not is_stale(owner):
                raise LockHeldError(
                    f"another pull (pid {owner.pid} on {owner.host}) is taking over the stale lock of {self.dest}",
                    "wait for it to finish",
                )
            takeover = self.dir / TAKEOVER_NAME
            raise LockHeldError(
                f"{takeover} was left by a pull that died while taking over a stale lock",
                f"delete {takeover} if no pull into {self.dest} is running, then rerun",
            )
        try:
            self._step("takeover")
            raw = self._read(LOCK_NAME)
            if raw is not None and is_stale(parse_lock(raw)):
                os.unlink(LOCK_NAME, dir_fd=self._dir_fd)
        finally:
            os.unlink(TAKEOVER_NAME, dir_fd=self._dir_fd)


def _open_work_dir(path: Path) -> int:
    """DEST/.aim, created if missing, opened without following a symlink in its place."""
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror}", "check the destination's permissions") from None
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UsageError(
                f"{path} is not a directory (a symlink or a file)",
                "pull never writes through a symlink in its destination: remove it and rerun",
            ) from None
        raise StorageError(f"cannot open {path}: {e.strerror}", "check the destination's permissions") from None
