"""Pairing the tensor chunks of two versions (format 3, docs/design.md §3.5): no I/O.

A delta pairs chunk i of a tensor with chunk i of the tensor of the same name, dtype and shape in
another version. Format 3 cuts a large tensor every ``tensor_chunk_bytes`` from its own start
(chunking/tensors.py, ``fixed_cuts``), so a manifest plus the file's safetensors header is enough
to say which of its chunks is chunk i of which tensor: no blob body is read but the header's.

The caller fetches the header from the file's first chunks: ``header_end`` says how many leading
bytes it needs (from the first 8), ``head_chunks`` which chunks hold them, ``parse_layout`` parses
them. ``tensor_chunks`` then checks that the manifest's chunks line up with format 3's cuts: a file
whose chunks do not (pushed by another rule, another ``tensor_chunk_bytes``, a header that lies) is
left out of pairing, never an error; pairing is an optimisation, and every chunk stays named by the
BLAKE3 of its bytes whatever is paired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.chunking.safetensors import LENGTH_BYTES, Layout, header_end_of, parse_header
from aim_cli.chunking.tensors import TensorChunkingParams, cuts_by_layout, fixed_cuts, is_large
from aim_cli.format.manifest import FileEntry, Manifest

ChunkRef = tuple[str, int]  # [digest, size], as a manifest names a chunk


@dataclass(frozen=True, slots=True, order=True)
class TensorKey:
    """What pairs a tensor across versions: its name, dtype and shape (not its file)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TensorChunks:
    """One large tensor of a version: the file holding it and its chunks, chunk i at index i."""

    path: str
    key: TensorKey
    element_size: int
    chunks: tuple[ChunkRef, ...]


@dataclass(frozen=True, slots=True)
class Pair:
    """Chunk ``index`` of tensor ``key`` in an older and a newer version: same size, other bytes."""

    older: str
    newer: str
    size: int
    element_size: int
    key: TensorKey
    index: int


def header_end(prefix: bytes, file_size: int, params: ChunkingParams, tensors: TensorChunkingParams) -> int | None:
    """How many leading bytes of a file of ``file_size`` bytes starting with ``prefix`` (at least
    its first 8 bytes; fewer: None) ``parse_layout`` needs; None when format 3 cuts the file as
    plain bytes whatever its header says (too small, a header too long or past its end)."""
    if not cuts_by_layout(file_size, params):
        return None
    return header_end_of(prefix, file_size, tensors.max_header_bytes)


def head_chunks(entry: FileEntry, nbytes: int) -> list[ChunkRef]:
    """The first chunks of ``entry`` that hold its first ``nbytes`` bytes (all of them if the file
    is shorter)."""
    out: list[ChunkRef] = []
    got = 0
    for digest, size in entry.chunks:
        if got >= nbytes:
            break
        out.append((digest, size))
        got += size
    return out


def parse_layout(head: bytes, file_size: int, params: ChunkingParams, tensors: TensorChunkingParams) -> Layout | None:
    """The layout, tensors named, of a file of ``file_size`` bytes whose first bytes are ``head``
    (at least ``header_end`` of them; more are ignored); None when it is not cut by its layout."""
    end = header_end(head, file_size, params, tensors)
    if end is None or len(head) < end:
        return None
    return parse_header(head[LENGTH_BYTES:end], file_size, named=True)


def tensor_chunks(entry: FileEntry, layout: Layout, tensors: TensorChunkingParams) -> list[TensorChunks] | None:
    """The large tensors of ``entry`` with their chunks, by format 3's cuts of ``layout``; None
    when the manifest's chunks do not line up with those cuts (the file is not paired)."""
    step = tensors.tensor_chunk_bytes
    if step is None:
        raise ValueError("pairing needs format 3's tensor chunking (tensor_chunk_bytes)")
    end = layout.tensors[-1].end if layout.tensors else layout.header_end
    if end != entry.size:
        return None
    at: dict[int, ChunkRef] = {}
    offset = 0
    for digest, size in entry.chunks:
        at[offset] = (digest, size)
        offset += size
    if offset != entry.size or (layout.header_end not in at and layout.header_end != entry.size):
        return None
    out = []
    for t in layout.tensors:
        if not is_large(t, tensors):
            continue
        refs = []
        for start, stop in fixed_cuts(t, step):
            ref = at.get(start)
            if ref is None or ref[1] != stop - start:
                return None
            refs.append(ref)
        out.append(TensorChunks(entry.path, TensorKey(t.name, t.dtype, t.shape), t.element_size, tuple(refs)))
    return out


def version_tensors(
    manifest: Manifest, layouts: Mapping[str, Layout], tensors: TensorChunkingParams
) -> list[TensorChunks]:
    """Every large tensor of ``manifest``'s files that have a layout in ``layouts`` (by path) and
    whose chunks line up with it."""
    out: list[TensorChunks] = []
    for entry in manifest.files:
        layout = layouts.get(entry.path)
        if layout is not None:
            out.extend(tensor_chunks(entry, layout, tensors) or ())
    return out


def pair_versions(older: Iterable[TensorChunks], newer: Iterable[TensorChunks]) -> list[Pair]:
    """The pairs of chunks of two versions: same tensor name, dtype, shape and chunk index, equal
    size, other digest. A tensor is matched wherever it lives (a sharded checkpoint moves tensors
    between files, files get renamed); a key held by several files of a version (two models in one
    directory) is matched by path among them. Each (older, newer) pair once, in tensor order."""
    old_by_key, new_by_key = _by_key(older), _by_key(newer)
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for key in sorted(old_by_key.keys() & new_by_key.keys()):
        for a, b in _match(old_by_key[key], new_by_key[key]):
            for i, ((da, sa), (db, sb)) in enumerate(zip(a.chunks, b.chunks, strict=False)):
                if sa == sb and da != db and (da, db) not in seen:
                    seen.add((da, db))
                    pairs.append(Pair(da, db, sa, a.element_size, key, i))
    return pairs


def chunk_info(tensors: Iterable[TensorChunks]) -> dict[str, tuple[int, int]]:
    """digest -> (size, element size) of every tensor chunk: what a re-encoder needs to fetch a
    chunk and store it again."""
    return {digest: (size, t.element_size) for t in tensors for digest, size in t.chunks}


def _by_key(tensors: Iterable[TensorChunks]) -> dict[TensorKey, list[TensorChunks]]:
    out: dict[TensorKey, list[TensorChunks]] = {}
    for t in tensors:
        out.setdefault(t.key, []).append(t)
    return out


def _match(a: list[TensorChunks], b: list[TensorChunks]) -> list[tuple[TensorChunks, TensorChunks]]:
    if len(a) == 1 and len(b) == 1:
        return [(a[0], b[0])]
    by_path = {t.path: t for t in b}
    return [(t, by_path[t.path]) for t in a if t.path in by_path]
