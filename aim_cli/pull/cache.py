"""The optional shared chunk cache used by pull (``--cache-dir`` / ``$AIM_CACHE_DIR``).

For machines that pull many versions into many places: a chunk fetched once is taken from here
the next time, whatever the destination. Content-addressed like a repository's ``blobs/``:

    <root>/aim-cache.json          the marker: this directory is a chunk cache (written by the first put)
    <root>/<h[0:2]>/<h>            one chunk, raw bytes; h = 64 hex chars of its BLAKE3 digest
    <root>/<h[0:2]>/.<h>.<id>.aim-tmp  a put in progress (or left by a killed process)

The contract:

- ``get(digest, size)`` hands out bytes only after re-hashing them, and reads at most ``size + 1``
  bytes (the chunk size the manifest names): a planted huge file costs no memory. An entry that
  does not match (a torn disk, a stray edit) is deleted and ``get`` returns None: the caller
  fetches the chunk again.
- ``put`` is atomic (``util.fs.write_beside_at``: a random ``O_EXCL|O_NOFOLLOW`` temp file, then
  ``rename``, both relative to the shard directory opened without following a link; a reader sees
  the whole entry or none) and never raises: a cache is best effort. The first failure (disk
  full, read-only, permission denied) prints one warning and turns further puts off for this
  cache object. No fsync: a torn entry after a crash is caught by the hash check on read.
- The first ``put`` writes the marker (the same writer, committed by ``link``: never over
  another), unless the directory already holds something that is not a cache, or lies inside a
  repository: then puts are off (one warning), so a mistyped ``--cache-dir`` never turns
  someone's directory into a cache.
- ``prune`` touches only entries and temp files of this exact layout, and refuses a directory
  without the marker (NotFoundError, exit 3: "no chunk cache there") or inside a repository
  (UsageError, exit 2). A path that does not exist holds nothing to prune.
- ``get`` sets the entry's access time, so ``prune`` removes the least recently used entries
  first even on ``noatime``/``relatime`` mounts.
- Safe from many threads and processes at once: every step is one file operation, and an entry
  removed by a concurrent ``prune`` is just a miss.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import blake3

from aim_cli.backends.local import TMP_NAME, WRITEBACK_MIN_BYTES, LocalBackend
from aim_cli.errors import AimError, IntegrityError, KeyNotFoundError, NotFoundError, StorageError, UsageError
from aim_cli.format.layout import REPO_META_KEY, SHARDS, digest_of_shard_key, shard_key
from aim_cli.format.manifest import HEX64
from aim_cli.repository.meta import is_empty
from aim_cli.util.fs import TEMP_NAME, write_beside_at

#: A temp file older than this is left by a killed process; ``prune`` removes it.
STALE_TMP_SECONDS = 3600
MARKER = "aim-cache.json"

log = logging.getLogger(__name__)


class CacheInfo(NamedTuple):
    entries: int
    bytes: int


class PruneResult(NamedTuple):
    removed: int  # entries deleted
    freed: int  # their bytes
    entries: int  # entries left
    bytes: int  # bytes left


_SHARD_SET = frozenset(SHARDS)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def _why(e: OSError) -> str:
    """A failed write, in the words of the one warning."""
    if e.errno == errno.ENOSPC:
        return "disk full"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied"
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return "a link or a file where a directory is expected"
    return e.strerror or str(e)


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    size: int
    atime: float


class ChunkCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        # Entries are laid out like blobs, without the "blobs/", and read through the local
        # backend (no link followed, bounded reads); written by util.fs.write_beside_at.
        self._store = LocalBackend(self.root)
        self._lock = threading.Lock()
        self._put_disabled = False
        self._marked = False

    def path_of(self, digest: str) -> Path:
        return self.root / shard_key(digest)

    # -- reads and writes (called from pull's worker threads) --------------------------------------
    def get(self, digest: str, size: int) -> bytes | None:
        """The chunk's bytes if the cache holds them intact and ``size`` long, else None."""
        if not HEX64.fullmatch(digest) or size < 0:
            return None
        key = shard_key(digest)
        try:
            data = self._store.get(key, max_size=size)
        except (KeyNotFoundError, StorageError):
            return None  # absent (the usual miss), pruned meanwhile, unreadable
        except IntegrityError:  # larger than the chunk, or a link or FIFO where the entry should be
            data = None
        if data is None or len(data) != size or blake3.blake3(data).hexdigest() != digest:
            try:
                self._store.delete(key)  # a link itself goes, never what it points to
            except (StorageError, IntegrityError):
                pass
            return None
        try:
            os.utime(self.path_of(digest), follow_symlinks=False)  # access time for prune's LRU order
        except (OSError, NotImplementedError):
            pass
        return data

    def put(self, digest: str, data) -> None:
        """Store ``data`` (already verified by the caller) under ``digest``. Never raises."""
        if self._put_disabled or not HEX64.fullmatch(digest):
            return
        try:
            if not self._marked:
                self._mark()
            if not self._put_disabled and not self._store.exists(shard_key(digest)):
                self._write_entry(digest, data)
        except AimError as e:
            self._disable(e.message)
        except OSError as e:
            self._disable(_why(e))

    def _open_root(self) -> int:
        """The root, created if missing (a link there is followed: the user named it)."""
        try:
            return os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.root, _DIR_FLAGS)

    def _write_entry(self, digest: str, data) -> None:
        root_fd = self._open_root()
        try:
            shard = digest[:2]
            try:
                os.mkdir(shard, 0o755, dir_fd=root_fd)
            except FileExistsError:
                pass  # the usual case, or a link refused below
            shard_fd = os.open(shard, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        try:
            # No fsync (see the module docstring); a large entry's writeback starts at once.
            nbytes = memoryview(data).nbytes
            write_beside_at(shard_fd, digest, data, mode=0o644, fsync=False, writeback=nbytes >= WRITEBACK_MIN_BYTES)
        finally:
            os.close(shard_fd)

    def _disable(self, why: str) -> None:
        with self._lock:
            first = not self._put_disabled
            self._put_disabled = True
        if first:
            log.warning("warning: not writing to the chunk cache %s (%s); the pull goes on without it", self.root, why)

    def _mark(self) -> None:
        """Make sure the root is a cache: write the marker into an empty directory; refuse (turn
        puts off) a directory holding other things, or one inside a repository."""
        with self._lock:
            if self._marked or self._put_disabled:
                return
            if not self._store.exists(MARKER):
                why = self._not_a_cache_root()
                if why:
                    raise UsageError(why)
                marker = json.dumps({"aim_cli": "chunk cache", "layout": "<h[0:2]>/<h>"}).encode() + b"\n"
                root_fd = self._open_root()
                try:
                    write_beside_at(root_fd, MARKER, marker, mode=0o644, replace=False)
                finally:
                    os.close(root_fd)
            self._marked = True

    def _not_a_cache_root(self) -> str | None:
        """Why the root cannot become a cache, or None."""
        if self._store.exists(REPO_META_KEY) or self._store.find_in_parents(REPO_META_KEY):
            return "it is, or lies inside, a repository"
        if not is_empty(self._store):
            return f"it holds files but no {MARKER}, so it is not a chunk cache"
        return None

    def _require_cache(self) -> bool:
        """False when the root does not exist (nothing to prune); refuse a root that is not a
        cache (see the module docstring)."""
        if not self.root.exists():
            return False
        if self._store.exists(REPO_META_KEY) or self._store.find_in_parents(REPO_META_KEY):
            raise UsageError(
                f"{self.root} is, or lies inside, a repository, not a chunk cache",
                "pass the directory given to `model pull --cache-dir`; `repo gc` frees a repository's space",
            )
        if not self._store.exists(MARKER):
            raise NotFoundError(
                f"no chunk cache at {self.root} (no {MARKER})",
                "pass the directory given to `model pull --cache-dir`; a cache gets its marker with its first chunk",
            )
        return True

    # -- maintenance ---------------------------------------------------------------------------------
    def _scan(self) -> list[_Entry]:
        """Every entry, with its size and access time."""
        entries: list[_Entry] = []
        try:
            shards = [d for d in os.scandir(self.root) if d.name in _SHARD_SET and d.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return entries
        for shard in shards:
            try:
                files = list(os.scandir(shard.path))
            except OSError:
                continue
            for f in files:
                if digest_of_shard_key(f"{shard.name}/{f.name}") and f.is_file(follow_symlinks=False):
                    try:
                        st = f.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    entries.append(_Entry(f.path, st.st_size, st.st_atime))
        return entries

    def _clean_stale_temps(self) -> None:
        """Remove the temp files of puts that a killed process never renamed into place: only
        regular files named as ``write_beside_at`` names an entry's temp file (or as the local
        backend named them before it), older than STALE_TMP_SECONDS, directly in a shard."""
        cutoff = time.time() - STALE_TMP_SECONDS
        for shard in SHARDS:
            try:
                fd = os.open(self.root / shard, _DIR_FLAGS | os.O_NOFOLLOW)  # a link there is not cleaned
            except OSError:
                continue
            try:
                for name in os.listdir(fd):
                    ours = TEMP_NAME.fullmatch(name) and HEX64.fullmatch(name[1:65])
                    if not (ours or TMP_NAME.fullmatch(name)):
                        continue
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode) and st.st_mtime <= cutoff:
                            os.unlink(name, dir_fd=fd)
                    except OSError:
                        continue  # renamed or removed meanwhile, or not ours to remove
            except OSError:
                pass
            finally:
                os.close(fd)

    def info(self) -> CacheInfo:
        entries = self._scan()
        return CacheInfo(len(entries), sum(e.size for e in entries))

    def prune(self, max_size: int = 0, *, dry_run: bool = False) -> PruneResult:
        """Delete the least recently used entries until the cache holds at most ``max_size``
        bytes (0 empties it). Plan first (sorted by access time), then delete; ``dry_run`` only
        plans. Stale temp files of killed processes go too. Refuses a directory that is not a
        cache (see the module docstring)."""
        if not self._require_cache():
            return PruneResult(0, 0, 0, 0)
        entries = self._scan()
        total = sum(e.size for e in entries)
        entries.sort(key=lambda e: (e.atime, e.path))
        doomed: list[_Entry] = []
        left = total
        for e in entries:
            if left <= max_size:
                break
            doomed.append(e)
            left -= e.size
        if not dry_run:
            for e in doomed:
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass
            self._clean_stale_temps()
        freed = total - left
        return PruneResult(len(doomed), freed, len(entries) - len(doomed), left)
