"""Where pull takes a chunk from: one ordered list of sources with the same small interface.

    source.name                              what the chunk counts as: "dest", "reference", "cache", "repository"
    source.read(digest, size, path)          the chunk's ``size`` bytes, verified, or None (not here)

The order is the cost order of docs/design.md §6: files already in DEST (an earlier version at
the final path, partial files of another version's pull, files that ``--delete`` will remove),
then ``--reference`` directories, then the chunk cache, and only then the repository, which
never answers None: a blob it lacks or that does not match is an IntegrityError naming it.
Chunks already right at their offset in the file's own partial are not read at all: the plan
keeps them in place (pull_plan.FilePlan.have).

A local source hands out bytes only after re-hashing them: a file changed since it was indexed
just means "ask the next source". ``SourceChain.read`` counts each chunk against the source that
gave it, and hands a chunk fetched from the repository to the cache (``keep``), so the next pull
finds it there. No per-chunk work beyond one dict lookup per local source and one lock.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import blake3


class ChunkSource(Protocol):
    name: str

    def read(self, digest: str, size: int, path: str) -> bytes | None:
        """The chunk's ``size`` bytes, verified against ``digest``, or None. ``path``: a file of
        the version holding the chunk, for messages."""


def _regular_file(path: str | Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_verified(path: str, offset: int, size: int, digest: str) -> bytes | None:
    """``size`` bytes of the regular file at ``path`` from ``offset``, if they hash to ``digest``.
    Never through a symlink, never blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    except OSError:
        return None
    if len(data) != size or blake3.blake3(data).hexdigest() != digest:
        return None  # changed since it was indexed: ask the next source
    return data


class LocalFiles:
    """Chunks found in local files, indexed by digest (first found wins). Files are re-chunked
    as the repository cuts them (its RepoFormat: content-defined, tensor-aligned in format 2, so
    unchanged data cuts the same chunks even when it moved); chunks already verified in place
    are added as they are. Filled by the planner's threads, read by the assembler's."""

    def __init__(self, name: str, fmt):
        self.name = name
        self.fmt = fmt
        self.index: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, path: str | Path, chunks: Iterable[tuple[str, int]]) -> None:
        """Index ``(digest, offset)`` pairs of the file at ``path``."""
        path = str(path)
        with self._lock:
            for digest, offset in chunks:
                self.index.setdefault(digest, (path, offset))

    def add_file(self, path: str | Path) -> None:
        """Index every chunk of the regular file at ``path`` (nothing for anything else)."""
        if not _regular_file(path):
            return
        try:
            self.add(path, [(c.digest, c.offset) for c in self.fmt.chunk_file(path)])
        except OSError:
            pass

    def __contains__(self, digest: str) -> bool:
        return digest in self.index

    def read(self, digest: str, size: int, path: str) -> bytes | None:
        where = self.index.get(digest)
        return None if where is None else read_verified(where[0], where[1], size, digest)

    def locate(self, digest: str) -> tuple[str, int] | None:
        """(file, offset) where the chunk was found, unverified since: for a copy that the
        whole-file digest checks (pipeline._Assembler)."""
        return self.index.get(digest)


class CacheSource:
    """The shared chunk cache (aim_cli/cache.py): verified on read; ``keep`` stores a chunk
    fetched from a later source."""

    name = "cache"

    def __init__(self, cache):
        self.cache = cache

    def read(self, digest: str, size: int, path: str) -> bytes | None:
        return self.cache.get(digest, size)

    def keep(self, digest: str, data: bytes) -> None:
        self.cache.put(digest, data)


class RepositorySource:
    """The repository: the last source, never None. Counts the bytes stored (on the wire; a
    format 2 blob may be compressed) beside the raw bytes the chain counts.

    Format 3 (pull/deltas.py): ``local`` (DEST's files, --reference directories, the cache) are
    asked for a delta's base before the repository is, and a chunk of ``delta_bases`` is taken
    as the delta stored against it by a chunk a local source holds; if that is no longer so
    (re-encoded meanwhile), the chunk is fetched as itself."""

    name = "repository"

    def __init__(self, repo, context: str, *, local: Sequence[ChunkSource] = (), delta_bases=None):
        self.repo = repo
        self.context = context  # "model:tag", for messages naming the file a bad blob belongs to
        self.local = list(local)
        self.delta_bases: dict[str, tuple[str, str]] = delta_bases or {}
        self.stored_bytes = 0
        self.delta_chunks = 0  # chunks taken as deltas against a local chunk
        self._lock = threading.Lock()

    def _local_chunk(self, digest: str, size: int, path: str) -> bytes | None:
        for source in self.local:
            data = source.read(digest, size, path)
            if data is not None:
                return data
        return None

    def read(self, digest: str, size: int, path: str) -> bytes:
        context = f"{self.context}/{path}"
        pair = self.delta_bases.get(digest)
        if pair is not None:
            dependent = self._local_chunk(pair[0], size, path)
            got = (
                None
                if dependent is None
                else self.repo.fetch_blob_via(digest, size, pair[0], dependent, context=context)
            )
            if got is not None:
                with self._lock:
                    self.stored_bytes += got[1]
                    self.delta_chunks += 1
                return got[0]

        def base_source(base: str, base_size: int) -> bytes | None:
            return self._local_chunk(base, base_size, path)

        data, stored = self.repo.fetch_blob(digest, size, context=context, base_source=base_source)
        with self._lock:
            self.stored_bytes += stored
        return data


class SourceChain:
    """The sources in order; ``read`` asks each until one answers, and counts chunks and raw
    bytes per source name."""

    def __init__(self, sources: Sequence[ChunkSource]):
        self.sources = list(sources)
        self.chunks = {s.name: 0 for s in self.sources}
        self.bytes = {s.name: 0 for s in self.sources}
        self._lock = threading.Lock()

    def locate(self, digest: str) -> tuple[str, str, int] | None:
        """(source name, file, offset) of the chunk in the first local file source that lists
        it, which ``read`` would ask first too; None if none does."""
        for source in self.sources:
            locate = getattr(source, "locate", None)
            where = locate(digest) if locate is not None else None
            if where is not None:
                return source.name, where[0], where[1]
        return None

    def count(self, name: str, size: int) -> None:
        """Count a chunk taken from source ``name`` without ``read`` (a copy)."""
        with self._lock:
            self.chunks[name] += 1
            self.bytes[name] += size

    def read(self, digest: str, size: int, path: str) -> bytes:
        for i, source in enumerate(self.sources):  # noqa: B007 (i: the sources before the repository)
            data = source.read(digest, size, path)
            if data is not None:
                break
        else:  # the repository is last and raises rather than answering None
            raise AssertionError("no source answered; the repository must be the last one")
        if source.name == "repository":
            for earlier in self.sources[:i]:
                keep = getattr(earlier, "keep", None)
                if keep is not None:
                    keep(digest, data)
        with self._lock:
            self.chunks[source.name] += 1
            self.bytes[source.name] += size
        return data
