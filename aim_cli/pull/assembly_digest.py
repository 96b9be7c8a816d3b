"""The whole-file BLAKE3 of a file being assembled, without reading it all a second time
(docs/design.md §6).

Chunks of a file are written by several threads, roughly in order. ``InOrderDigest`` hashes the
file's bytes in order as they are written: a chunk written when every chunk before it is hashed
is hashed from the very bytes just written (in memory, and verified against its own digest);
one written ahead of the others is hashed once the gap before it closes, read back from the
partial file (the page cache: it was just written). ``hexdigest`` hashes whatever was not
reached yet (chunks already in the partial from an interrupted pull, chunks copied in without
passing through memory) from the file itself, mapped in windows. One thread hashes: blake3's own
thread pool (``max_threads=AUTO``) spins its idle workers on sched_yield between updates of a
chunk's size, which cost a pull of 1 GiB about 80,000 system calls and 0.6 s of CPU on 2 cores
(`strace -c -f aim_cli model pull ... --jobs 1`), against 0.25 s to hash it on one. Every
byte hashed is a byte of the partial file: either read from it, or the buffer a completed
``pwrite`` put there, under DEST's lock, in pull's own work directory.
"""

from __future__ import annotations

import mmap
import os
import threading

import blake3

from aim_cli.pull.dest_access import open_regular

#: Bytes mapped at a time: few system calls, little resident memory (a mapped page
#: counts in the RSS while it is mapped).
WINDOW = 32 * 1024 * 1024


def new_hasher() -> blake3.blake3:
    return blake3.blake3()


def hash_file_from(hasher: blake3.blake3, fd: int, offset: int) -> None:
    """Feed ``hasher`` the bytes of the open file ``fd`` from ``offset`` to its end."""
    size = os.fstat(fd).st_size
    granularity = mmap.ALLOCATIONGRANULARITY
    while offset < size:
        start = offset - offset % granularity
        length = min(size - start, WINDOW)
        with (
            mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=start) as mapped,
            memoryview(mapped) as view,
            view[offset - start :] as part,
        ):
            hasher.update(part)
        offset = start + length


def file_hexdigest(path: str) -> str:
    """The BLAKE3 of a regular file of DEST (never through a symlink)."""
    hasher = new_hasher()
    fd = open_regular(path, os.O_RDONLY)
    try:
        hash_file_from(hasher, fd, 0)
    finally:
        os.close(fd)
    return hasher.hexdigest()


class InOrderDigest:
    """The digest of a partial file whose chunks (``offsets``, ``sizes``) are written in any
    order; see the module docstring. Thread-safe: ``written`` is called by the thread that wrote
    a chunk, ``hexdigest`` once, after the last chunk and the truncation."""

    def __init__(self, path: str, offsets: list[int], sizes: list[int], present=()):
        self.path = path
        self.offsets = offsets
        self.sizes = sizes
        self.hasher = new_hasher()
        self.next = 0  # chunks before it are hashed
        self.done: set[int] = set(present)  # chunks in the partial file, not hashed yet
        self._state = threading.Lock()
        self._hashing = threading.Lock()  # one thread hashes at a time; the others move on

    def written(self, index: int, data: bytes | None) -> None:
        """Chunk ``index`` is in the partial file; ``data``: its bytes, if in memory."""
        with self._state:
            self.done.add(index)
        while self._hashing.acquire(blocking=False):
            try:
                self._advance(index, data)
            finally:
                self._hashing.release()
            with self._state:
                if self.next not in self.done:
                    return  # a chunk written meanwhile by a thread that could not hash is taken above
        # Another thread is hashing: it takes this chunk when it reaches it.

    def _advance(self, index: int, data: bytes | None) -> None:
        fd = None
        try:
            while True:
                with self._state:
                    if self.next not in self.done:
                        return
                    self.done.discard(self.next)
                i = self.next
                if i == index and data is not None:
                    self.hasher.update(data)
                else:
                    if fd is None:
                        fd = open_regular(self.path, os.O_RDONLY)
                    chunk = os.pread(fd, self.sizes[i], self.offsets[i])
                    if len(chunk) != self.sizes[i]:
                        raise OSError("a chunk just written is not in the partial file")
                    self.hasher.update(chunk)
                self.next = i + 1
        finally:
            if fd is not None:
                os.close(fd)

    def hexdigest(self) -> str:
        """The digest of the whole partial file: what was hashed in order, then the rest read
        from the file."""
        with self._hashing:
            offset = self.offsets[self.next] if self.next < len(self.offsets) else sum(self.sizes)
            fd = open_regular(self.path, os.O_RDONLY)
            try:
                hash_file_from(self.hasher, fd, offset)
            finally:
                os.close(fd)
            return self.hasher.hexdigest()
