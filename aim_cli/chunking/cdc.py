"""Content-defined chunking (FastCDC 2020 through pyfastcdc) and BLAKE3 hashing.

Files are cut with ``cut_stream``: memory stays bounded by the read buffer, where ``cut_file``
would mmap the whole file (a 10 GB shard would show as 10 GB of RSS). Both pyfastcdc and blake3
release the GIL, so callers spread files over threads; each chunk is hashed single-threaded.

The parameters of a repository are pinned in its ``aim-repo.json``, so every client cuts the same
boundaries and dedup works across a team. tests/chunking/test_chunking.py pins boundaries and digests of
fixed input: a library upgrade that moved a boundary fails CI instead of silently breaking dedup.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import blake3 as _blake3

from aim_cli.util.walk import open_binary

KiB = 1024
MiB = 1024 * KiB
MAX_CHUNK_SIZE = 16 * MiB  # pyfastcdc's cap on max_size: no repository cuts bigger chunks
READ_SIZE = 8 * MiB


@dataclass(frozen=True)
class ChunkingParams:
    min_size: int = 256 * KiB
    avg_size: int = 1 * MiB
    max_size: int = 4 * MiB

    @classmethod
    def for_average(cls, avg_size: int) -> ChunkingParams:
        """Parameters for ``repo create --chunk-size``: min = avg/4, max = avg*4 (pyfastcdc's caps)."""
        return cls(min(avg_size // 4, MiB), avg_size, min(avg_size * 4, MAX_CHUNK_SIZE))

    def as_dict(self) -> dict:
        return {
            "algorithm": "fastcdc2020",
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "normalization": 1,
            "seed": 0,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChunkingParams:
        if d.get("algorithm") != "fastcdc2020" or d.get("normalization", 1) != 1 or d.get("seed", 0) != 0:
            raise ValueError(f"unsupported chunking {d!r}")
        return cls(int(d["min_size"]), int(d["avg_size"]), int(d["max_size"]))

    def validate(self) -> ChunkingParams:
        if not (
            64 <= self.min_size <= MiB
            and 256 <= self.avg_size <= 4 * MiB
            and 1024 <= self.max_size <= MAX_CHUNK_SIZE
            and self.min_size <= self.avg_size <= self.max_size
        ):
            raise ValueError(f"chunk sizes out of range: {self}")
        return self


def fastcdc(params: ChunkingParams):
    from pyfastcdc import FastCDC  # imported here: `aim_cli --help` must not load it

    return FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size)


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    size: int
    digest: str
    #: What the bytes are, for the codec (blob_codec.encode): 2 for bf16/f16 tensor data, 4 for
    #: f32, 1 for anything else. Only format 2's tensor-aware chunker sets it.
    element_size: int = 1


def hash_bytes(data) -> str:
    return _blake3.blake3(data).hexdigest()


def is_one_chunk(size: int, params: ChunkingParams) -> bool:
    """Whether a file of ``size`` bytes is a single chunk (none when empty) whatever its bytes:
    FastCDC never cuts before ``min_size``. Such a file's chunk digest is its whole-file digest,
    so push reads and hashes it once, without the chunker (tests/push/test_small_files.py checks
    that both ways agree, on both sides of the threshold)."""
    return size < params.min_size


# Small files travel in batches, one task per batch: a thread hand-off, a future and a progress
# update per 4 KiB file cost more than reading, hashing and storing it (5,000 files of 4 KiB took
# 6.5 s, ~780k futex calls). A batch is bounded in files (so that several batches keep the
# workers busy) and in bytes (so that a batch of near-minimum files is not one long task).
BATCH_FILES = 256
BATCH_BYTES = 16 * MiB

T = TypeVar("T")


def batches(
    items: Sequence[T],
    size_of: Callable[[T], int],
    *,
    workers: int = 1,
    max_files: int = BATCH_FILES,
    max_bytes: int = BATCH_BYTES,
) -> Iterator[list[T]]:
    """``items`` in order, in consecutive lists of at most ``max_files`` items and ``max_bytes``
    bytes (an item larger than ``max_bytes`` makes a list of its own), and in at least
    ``workers`` lists when there are that many items: to S3, each batch has one request in
    flight at a time, so 300 files in two batches would use two connections of eight."""
    max_files = max(1, min(max_files, -(-len(items) // max(1, workers))))
    batch: list[T] = []
    size = 0
    for item in items:
        n = size_of(item)
        if batch and (len(batch) >= max_files or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


def iter_chunks(
    path: str | os.PathLike,
    params: ChunkingParams,
    on_chunk: Callable[[Chunk, memoryview], None] | None = None,
    whole: _blake3.blake3 | None = None,
) -> Iterator[Chunk]:
    """Cut the file at ``path`` and yield its chunks with their BLAKE3 digests.

    ``on_chunk(chunk, data)`` sees each chunk's bytes; they are only valid during the call (the
    stream buffer is reused). ``whole``, if given, is updated with every byte (the file digest).
    A file smaller than the minimum is one chunk; an empty file has none.
    """
    cdc = fastcdc(params)
    with open_binary(path) as f:  # a regular file only, no link, no FIFO
        reader = _Reader(f)
        for c in cdc.cut_stream(reader):
            data = c.data
            if whole is not None:
                whole.update(data)
            chunk = Chunk(c.offset, c.length, _blake3.blake3(data).hexdigest())
            if on_chunk is not None:
                on_chunk(chunk, data)
            yield chunk


class _Reader:
    """readinto() with large reads: fewer syscalls than pyfastcdc's default small reads."""

    __slots__ = ("_f",)

    def __init__(self, f):
        self._f = f

    def readinto(self, buf) -> int:
        return self._f.readinto(buf)


def file_digest(path: str | os.PathLike) -> str:
    """Whole-file BLAKE3 (the digest `b3sum` prints), streamed."""
    h = _blake3.blake3()
    with open_binary(path) as f:  # a regular file only, no link, no FIFO
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()
