"""The optional shared chunk cache used by pull (``--cache-dir`` / ``$AIM_CACHE_DIR``).

For machines that pull many versions into many places: a chunk fetched once is taken from here
the next time, whatever the destination. Content-addressed like a repository's ``blobs/``:

    <root>/<h[0:2]>/<h>            one chunk, raw bytes; h = 64 hex chars of its BLAKE3 digest
    <root>/<h[0:2]>/.tmp-<h>.<id>  a put in progress (or left by a killed process)

The contract:

- ``get`` hands out bytes only after re-hashing them. An entry that does not match (a torn disk, a
  stray edit) is deleted and ``get`` returns None: the caller fetches the chunk again.
- ``put`` is atomic (temp file + ``os.replace``: a reader sees the whole entry or none) and never
  raises: a cache is best effort. The first failure (disk full, read-only, permission denied)
  prints one warning and turns further puts off for this cache object. No fsync: a torn entry
  after a crash is caught by the hash check on read.
- ``get`` sets the entry's access time, so ``prune`` removes the least recently used entries
  first even on ``noatime``/``relatime`` mounts.
- Safe from many threads and processes at once: every step is one file operation, and an entry
  removed by a concurrent ``prune`` is just a miss.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import blake3

from aim_cli.backends.local import LocalBackend
from aim_cli.errors import KeyNotFoundError, ObjectTooLargeError, StorageError
from aim_cli.manifest import HEX64

#: A temp file older than this is left by a killed process; ``prune`` removes it.
STALE_TMP_SECONDS = 3600

log = logging.getLogger(__name__)


class CacheInfo(NamedTuple):
    entries: int
    bytes: int


class PruneResult(NamedTuple):
    removed: int  # entries deleted
    freed: int  # their bytes
    entries: int  # entries left
    bytes: int  # bytes left


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    size: int
    atime: float


class ChunkCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        # Entries are stored like blobs: the local backend's atomic writes, without the "blobs/".
        self._store = LocalBackend(self.root)
        self._lock = threading.Lock()
        self._put_disabled = False

    def path_of(self, digest: str) -> Path:
        return self.root / self._key(digest)

    @staticmethod
    def _key(digest: str) -> str:
        return f"{digest[:2]}/{digest}"

    # -- reads and writes (called from pull's worker threads) --------------------------------------
    def get(self, digest: str, size: int | None = None) -> bytes | None:
        """The chunk's bytes if the cache holds them intact, else None."""
        if not HEX64.fullmatch(digest):
            return None
        try:
            data = self._store.get(self._key(digest), max_size=size)
        except (KeyNotFoundError, StorageError, ObjectTooLargeError):
            return None  # absent (the usual miss), pruned meanwhile, unreadable
        if blake3.blake3(data).hexdigest() != digest:
            try:
                self._store.delete(self._key(digest))
            except StorageError:
                pass
            return None
        try:
            os.utime(self.path_of(digest))  # access time for prune's LRU order
        except OSError:
            pass
        return data

    def put(self, digest: str, data) -> None:
        """Store ``data`` (already verified by the caller) under ``digest``. Never raises."""
        if self._put_disabled or not HEX64.fullmatch(digest) or self._store.exists(self._key(digest)):
            return
        try:
            self._store.put(self._key(digest), data)
        except StorageError as e:
            with self._lock:
                first = not self._put_disabled
                self._put_disabled = True
            if first:
                log.warning("warning: not writing to the chunk cache %s (%s); the pull goes on without it",
                            self.root, e.message)

    # -- maintenance ---------------------------------------------------------------------------------
    def _scan(self) -> list[_Entry]:
        """Every entry, with its size and access time."""
        entries: list[_Entry] = []
        try:
            shards = [d for d in os.scandir(self.root) if len(d.name) == 2 and d.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return entries
        for shard in shards:
            try:
                files = list(os.scandir(shard.path))
            except OSError:
                continue
            for f in files:
                if HEX64.fullmatch(f.name) and f.name[:2] == shard.name and f.is_file(follow_symlinks=False):
                    try:
                        st = f.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    entries.append(_Entry(f.path, st.st_size, st.st_atime))
        return entries

    def info(self) -> CacheInfo:
        entries = self._scan()
        return CacheInfo(len(entries), sum(e.size for e in entries))

    def prune(self, max_size: int = 0, *, dry_run: bool = False) -> PruneResult:
        """Delete the least recently used entries until the cache holds at most ``max_size``
        bytes (0 empties it). Plan first (sorted by access time), then delete; ``dry_run`` only
        plans. Stale temp files of killed processes go too."""
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
            try:
                self._store.clean_incomplete(STALE_TMP_SECONDS)
            except StorageError:
                pass
        freed = total - left
        return PruneResult(len(doomed), freed, len(entries) - len(doomed), left)
