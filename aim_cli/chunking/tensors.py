"""Tensor-aligned chunking of safetensors files (format 2, docs/design.md §4).

A file that parses as safetensors (safetensors_header.read_layout) is cut

- at the header's end: the header region is cut by FastCDC on its own (one chunk when small),
  so that a renamed or shifted tensor, which rewrites the header, costs only the header's chunks;
- at every tensor's start and end, so that a changed tensor costs its own chunks, and a tensor
  inserted before others shifts their offsets but not their chunks;
- inside each large tensor (``large_tensor_bytes`` or more) where FastCDC, run over the tensor's
  bytes alone with the repository's ChunkingParams, cuts; each cut is moved down to an element
  boundary counted from the tensor's start (the few bytes between go to the next chunk), so a
  bf16 chunk starts on a whole element: byte grouping in the codec needs that phase. In format 3
  (``tensor_chunk_bytes`` set, algorithm "safetensors-fixed-v1") a large tensor is instead cut
  every ``tensor_chunk_bytes`` bytes from its own start, whatever its values, the last chunk
  being the remainder: chunk i of a tensor lines up byte for byte with chunk i of the same tensor
  in another version (the pairing a delta needs), and the cuts fall on elements (the step is a
  multiple of 8);
- between groups of consecutive small tensors. A group ends after a tensor whose bytes' BLAKE3,
  read as a number in [0, 1), is below ``size / group_avg_bytes`` (so groups average about
  ``group_avg_bytes`` whatever the tensor sizes), before a tensor that would take it past
  ``group_max_bytes``, and at a large tensor. The rule looks at each tensor's content alone, not
  at a running byte count: an inserted tensor changes its own group only (unless the cap moves).
  Zero-size tensors add no bytes and never end a group.

Any other file, a file smaller than ``ChunkingParams.min_size`` (one chunk either way, as
chunking.is_one_chunk promises) and a file that only looks like safetensors are cut by the same
FastCDC over the whole file: exactly chunking.iter_chunks' chunks (tests/chunking/test_tensor_chunking.py
checks it on hostile input). Bytes found past the size the header accounts for (the file grew
while it was read) are cut the same way; a file that shrank ends where its bytes end: push
compares sizes before and after and refuses both.

Memory is one window of the file (chunking.READ_SIZE plus the largest chunk), whatever its size;
each chunk is hashed straight from the window, copied nowhere. FastCDC and BLAKE3 release the
GIL, so files still chunk in parallel threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import blake3 as _blake3

from aim_cli.chunking.cdc import MAX_CHUNK_SIZE, READ_SIZE, Chunk, ChunkingParams, KiB, MiB, fastcdc
from aim_cli.chunking.safetensors import Layout, Tensor, read_layout
from aim_cli.util.walk import open_binary

ALGORITHM = "safetensors-v1"  # format 2: FastCDC inside a large tensor
FIXED_ALGORITHM = "safetensors-fixed-v1"  # format 3: fixed cuts from the tensor's start
#: The range of ``tensor_chunk_bytes``: at least the smallest average chunk size `repo create`
#: takes, at most the largest; a multiple of 8, so every element size divides it.
MIN_TENSOR_CHUNK_BYTES, MAX_TENSOR_CHUNK_BYTES = 1 * KiB, 4 * MiB


@dataclass(frozen=True)
class TensorChunkingParams:
    """Pinned in aim-repo.json (``"tensor_chunking"``), so every client cuts the same boundaries.
    The defaults suit the default ChunkingParams (min 256 KiB, avg 1 MiB, max 4 MiB): they are
    ``for_chunking(ChunkingParams())``. Invalid values raise ValueError on construction."""

    #: A header longer than this is not read: the file is cut as plain bytes.
    max_header_bytes: int = 16 * MiB
    #: Tensors of this size or more are cut on their own (FastCDC inside); smaller ones are grouped.
    large_tensor_bytes: int = 256 * KiB
    #: Format 3 ("safetensors-fixed-v1"): a large tensor is cut every this many bytes from its
    #: own start instead of where FastCDC cuts. None: format 2 ("safetensors-v1").
    tensor_chunk_bytes: int | None = None
    #: The average size of a group of small tensors (the content-defined rule's scale).
    group_avg_bytes: int = 1 * MiB
    #: No group is larger (one chunk each).
    group_max_bytes: int = 4 * MiB

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int and not (f.name == "tensor_chunk_bytes" and value is None):
                raise ValueError(f"tensor chunking {f.name} is not an integer")
        if not 1 * KiB <= self.max_header_bytes <= 100 * MiB:
            raise ValueError("max_header_bytes out of range")
        if not (
            64 <= self.large_tensor_bytes <= self.group_max_bytes <= MAX_CHUNK_SIZE
            and 256 <= self.group_avg_bytes <= self.group_max_bytes
        ):
            raise ValueError(f"tensor chunking sizes out of range: {self}")
        fixed = self.tensor_chunk_bytes
        if fixed is not None and not (MIN_TENSOR_CHUNK_BYTES <= fixed <= MAX_TENSOR_CHUNK_BYTES and fixed % 8 == 0):
            raise ValueError(f"tensor_chunk_bytes out of range: {fixed}")

    @classmethod
    def for_chunking(cls, params: ChunkingParams, *, fixed: bool = False) -> TensorChunkingParams:
        """Thresholds matching ``params``: tensors too small for FastCDC to cut are grouped, into
        groups of FastCDC's average and maximum chunk size. ``fixed`` (format 3): large tensors
        are cut every ``avg_size`` bytes (rounded down to a multiple of 8, kept in range)."""
        step = None
        if fixed:
            step = min(max(params.avg_size // 8 * 8, MIN_TENSOR_CHUNK_BYTES), MAX_TENSOR_CHUNK_BYTES)
        return cls(
            large_tensor_bytes=params.min_size,
            tensor_chunk_bytes=step,
            group_avg_bytes=params.avg_size,
            group_max_bytes=params.max_size,
        )

    @property
    def algorithm(self) -> str:
        return ALGORITHM if self.tensor_chunk_bytes is None else FIXED_ALGORITHM

    def as_dict(self) -> dict:
        return {"algorithm": self.algorithm, **{name: getattr(self, name) for name in self._names(self.algorithm)}}

    @classmethod
    def _names(cls, algorithm: str) -> list[str]:
        """The keys (besides "algorithm") of each algorithm: format 2's have no tensor_chunk_bytes."""
        return [f.name for f in fields(cls) if algorithm == FIXED_ALGORITHM or f.name != "tensor_chunk_bytes"]

    @classmethod
    def from_dict(cls, d: dict) -> TensorChunkingParams:
        """ValueError for anything that is not what as_dict writes: other keys, missing keys,
        another algorithm, a non-integer or out-of-range value."""
        algorithm = d.get("algorithm") if type(d) is dict else None
        if algorithm not in (ALGORITHM, FIXED_ALGORITHM):
            raise ValueError(f"unsupported tensor chunking {d!r}")
        names = cls._names(algorithm)
        if set(d) != {"algorithm", *names}:
            raise ValueError(f"unsupported tensor chunking {d!r}")
        params = cls(**{name: d[name] for name in names})
        if params.tensor_chunk_bytes is None and algorithm == FIXED_ALGORITHM:  # an explicit null
            raise ValueError("tensor_chunk_bytes is not an integer")
        return params


def cuts_by_layout(file_size: int, params: ChunkingParams) -> bool:
    """Whether a file of ``file_size`` bytes is cut along its safetensors layout (when it has
    one): a file smaller than ``min_size`` is one chunk whatever it holds."""
    return file_size >= params.min_size


def is_large(t: Tensor, tensors: TensorChunkingParams) -> bool:
    """Whether ``t`` is cut on its own (else it joins a group of small tensors)."""
    return t.size >= tensors.large_tensor_bytes


def fixed_cuts(t: Tensor, step: int) -> Iterator[tuple[int, int]]:
    """Format 3's chunks of the large tensor ``t``, as (start, end) file offsets: every ``step``
    bytes from its own start, the last one the remainder. Chunk i of a tensor is the i-th."""
    for start in range(t.begin, t.end, step):
        yield start, min(start + step, t.end)


def iter_file_chunks(
    path: str | os.PathLike,
    params: ChunkingParams,
    tensors: TensorChunkingParams,
    on_chunk: Callable[[Chunk, memoryview], None] | None = None,
    whole: _blake3.blake3 | None = None,
) -> Iterator[Chunk]:
    """Like chunking.iter_chunks (same callback and ``whole`` contract: chunks in file order,
    tiling the file, ``on_chunk(chunk, data)`` with bytes valid only during the call, ``whole``
    updated with every byte), with tensor-aligned boundaries when the file parses as
    safetensors; each Chunk's ``element_size`` says what its bytes are (2: bf16/f16 data, 4:
    f32, 1: anything else), and a chunk of element size 2 or 4 starts on a whole element."""
    with open_binary(path) as f:  # a regular file only, no link, no FIFO
        size = os.fstat(f.fileno()).st_size
        layout = None
        if cuts_by_layout(size, params):
            layout = read_layout(f.fileno(), size, tensors.max_header_bytes)
        cutter = _Cutter(f, params, tensors, on_chunk, whole)
        yield from cutter.cut(layout, size)


class _Window:
    """The bytes of the file from ``base`` to ``base + n``, read sequentially in large blocks.
    ``fill`` keeps what is still needed and reads on: the only copy of a byte is the move of
    a chunk's unfinished start to the front of the buffer."""

    __slots__ = ("_f", "_view", "base", "eof", "n")

    def __init__(self, f, capacity: int):
        self._f = f
        self._view = memoryview(bytearray(capacity))
        self.base = 0
        self.n = 0
        self.eof = False

    def fill(self, keep_from: int, end: int) -> int:
        """Make ``[keep_from, end)`` readable (``end - keep_from`` at most the capacity) and
        return ``end``, or where the file ended if that came first."""
        if end <= self.base + self.n or self.eof:
            return min(end, self.base + self.n)
        drop = keep_from - self.base
        if drop:
            self._view[: self.n - drop] = self._view[drop : self.n]  # memmove: overlap is fine
            self.base, self.n = keep_from, self.n - drop
        while self.base + self.n < end:
            got = self._f.readinto(self._view[self.n :])
            if not got:
                self.eof = True
                break
            self.n += got
        return min(end, self.base + self.n)

    def view(self, start: int, end: int) -> memoryview:
        return self._view[start - self.base : end - self.base]


class _Cutter:
    """Cuts one open file along a plan of spans; yields chunks in file order."""

    def __init__(self, f, params: ChunkingParams, tensors: TensorChunkingParams, on_chunk, whole):
        self._cdc = fastcdc(params)
        self._max = params.max_size
        self._tensors = tensors
        self._on_chunk = on_chunk
        self._whole = whole
        # A FastCDC look-ahead from a cut up to an element before it, the largest group, or a
        # fixed-size piece of a tensor (format 3).
        largest = max(params.max_size + 8, tensors.group_max_bytes, tensors.tensor_chunk_bytes or 0)
        self._window = _Window(f, READ_SIZE + largest)
        self._truncated = False  # the file ended before the layout did

    def cut(self, layout: Layout | None, size: int) -> Iterator[Chunk]:
        if layout is None:
            yield from self._cdc_span(0, None)
            return
        yield from self._cdc_span(0, layout.header_end)
        yield from self._tensor_spans(layout.tensors)
        if not self._truncated:
            yield from self._cdc_span(size, None)  # bytes appended since the fstat, if any

    def _emit(self, start: int, end: int, element_size: int = 1) -> Chunk:
        data = self._window.view(start, end)
        if self._whole is not None:
            self._whole.update(data)
        chunk = Chunk(start, end - start, _blake3.blake3(data).hexdigest(), element_size)
        if self._on_chunk is not None:
            self._on_chunk(chunk, data)
        return chunk

    def _cdc_span(self, start: int, end: int | None, itemsize: int = 1, element_size: int = 1) -> Iterator[Chunk]:
        """FastCDC over ``[start, end)`` (to the end of the file when ``end`` is None), each cut
        moved down to a multiple of ``itemsize`` from ``start``."""
        pos = chunk_start = start  # FastCDC's position; the chunk being built starts before it by < itemsize
        while end is None or pos < end:
            ahead = pos + self._max if end is None else min(end, pos + self._max)
            avail = self._window.fill(chunk_start, ahead)
            if avail < ahead:  # the end of the file
                if end is not None:
                    self._truncated = True
                end = avail
                if pos >= end:
                    break
            # FastCDC looks at most max_size bytes ahead: the first cut of this look-ahead is the
            # cut of a stream over the whole span (chunking.iter_chunks's cut_stream).
            pos += next(self._cdc.cut_buf(self._window.view(pos, avail))).length
            cut = pos if end is not None and pos >= end else pos - (pos - start) % itemsize
            yield self._emit(chunk_start, cut, element_size)
            chunk_start = cut
        if chunk_start < pos:  # the file ended inside the carried bytes
            yield self._emit(chunk_start, pos, element_size)

    def _fixed_span(self, t: Tensor, step: int) -> Iterator[Chunk]:
        """The large tensor ``t`` cut every ``step`` bytes from its start (format 3); a file that
        ends inside it ends its last chunk there."""
        for start, stop in fixed_cuts(t, step):
            avail = self._window.fill(start, stop)
            if avail < stop:
                self._truncated = True
                if avail > start:
                    yield self._emit(start, avail, t.element_size)
                return
            yield self._emit(start, stop, t.element_size)

    def _tensor_spans(self, tensors: tuple[Tensor, ...]) -> Iterator[Chunk]:
        group = _Group()
        for t in tensors:
            if self._truncated:
                return
            if is_large(t, self._tensors):
                yield from self._flush(group)
                if self._tensors.tensor_chunk_bytes is None:
                    yield from self._cdc_span(t.begin, t.end, t.itemsize, t.element_size)
                else:
                    yield from self._fixed_span(t, self._tensors.tensor_chunk_bytes)
            elif t.size:
                if group.size + t.size > self._tensors.group_max_bytes:
                    yield from self._flush(group)
                yield from self._add_small(group, t)
        yield from self._flush(group)

    def _add_small(self, group: _Group, t: Tensor) -> Iterator[Chunk]:
        start = t.begin if group.start is None else group.start
        avail = self._window.fill(start, t.end)
        if avail < t.end:
            self._truncated = True
            if avail > start:
                yield self._emit(start, avail)
            group.clear()
            return
        group.add(t)
        if _ends_group(self._window.view(t.begin, t.end), self._tensors.group_avg_bytes):
            yield from self._flush(group)

    def _flush(self, group: _Group) -> Iterator[Chunk]:
        if group.start is not None:
            yield self._emit(group.start, group.end, group.element_size)
            group.clear()


class _Group:
    """Consecutive small tensors on their way to one chunk."""

    __slots__ = ("element_size", "end", "start")

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.start: int | None = None
        self.end = 0
        self.element_size = 1

    @property
    def size(self) -> int:
        return 0 if self.start is None else self.end - self.start

    def add(self, t: Tensor) -> None:
        """Grouped tensors of one float width keep their phase (each size is a multiple of it)."""
        if self.start is None:
            self.start, self.element_size = t.begin, t.element_size
        elif self.element_size != t.element_size:
            self.element_size = 1
        self.end = t.end


def _ends_group(data: memoryview, avg: int) -> bool:
    """The content-defined rule: true with probability ``len(data) / avg`` over random content
    (the BLAKE3's first 8 bytes as a fraction of 2**64 below it), so that groups average ``avg``
    bytes whatever the sizes of their tensors."""
    h = int.from_bytes(_blake3.blake3(data).digest()[:8], "little")
    return h * avg < len(data) << 64
