"""Decoding a format 3 delta blob (codec 4, format/delta_codec.py) by following its chain of bases
(docs/design.md §3.4): the blob's header names its base; the base is a plain blob (a keyframe)
or a delta itself, whose base is named in turn, down to a whole chunk.

    decode_chain(name, blob, size, ...)   the raw bytes of the delta blob ``blob`` named ``name``

Each base is first asked of ``base_source(digest, size)`` (pull's local chunk sources: DEST's
files, --reference directories, the cache), whose answer is used only if it is ``size`` bytes
whose BLAKE3 is the base's digest; else the base is read from the repository (``read``). The
walk stops at the first base that is whole, then decodes back up, verifying each decoded base by
BLAKE3 before it is used (the caller verifies the blob asked for, as for any blob).

Bounds, whatever the storage holds: at most ``max_depth`` deltas (the repository's DeltaParams),
so at most ``max_depth`` bases read; each read bounded by the largest blob a chunk of ``size``
bytes can take; memory: the chain's delta blobs plus one base's raw bytes (and the delta being
decoded's output) at a time. Anything wrong raises ``BrokenChain`` saying what, and which base;
the store reports it as the asked blob being corrupt (exit 5): a delta whose base is missing is
unreadable, whatever its base's own state.
"""

from __future__ import annotations

from collections.abc import Callable

import blake3

from aim_cli.backends.base import Bytes
from aim_cli.errors import KeyNotFoundError, ObjectTooLargeError
from aim_cli.format.blob_codec import MAGIC, CorruptBlob
from aim_cli.format.delta_codec import DELTA_CODEC, DELTA_HEADER_SIZE, base_of, decode_delta

#: ``base_source(digest, size)``: a chunk's raw bytes from a local source, or None.
BaseSource = Callable[[str, int], "Bytes | None"]


class BrokenChain(Exception):
    """A delta chain that cannot be decoded: ``reason`` says why (worded for the asked blob:
    "its delta base X is missing"); ``missing`` is the base not stored, if that is why."""

    def __init__(self, reason: str, missing: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def is_delta(stored: Bytes) -> bool:
    """Whether a stored object is a delta blob (codec 4) by its header; ``base_of`` checks the rest."""
    return len(stored) > 4 and stored[:4] == MAGIC and stored[4] == DELTA_CODEC


def _delta(holder: str, name: str) -> str:
    return "its delta" if holder == name else f"its chain's delta {holder}"


def _base(base: str, holder: str, name: str) -> str:
    return f"its delta base {base}" if holder == name else f"the delta base {base} of its chain's delta {holder}"


def decode_chain(
    name: str,
    blob: Bytes,
    size: int,
    *,
    max_depth: int,
    read: Callable[[str], Bytes],
    raw_size_of: Callable[[Bytes], int],
    decode_plain: Callable[[Bytes, int], Bytes],
    base_source: BaseSource | None = None,
) -> tuple[Bytes, int]:
    """(the raw bytes of the delta blob ``blob`` named ``name``, of ``size`` bytes; the stored
    bytes read for its bases). ``read(digest)``: a base's stored object, bounded by the largest a
    chunk of ``size`` can take (KeyNotFoundError, ObjectTooLargeError as a backend's get);
    ``raw_size_of``/``decode_plain``: the repository format's. The raw bytes of ``name`` itself
    are not verified here (the caller does it, as for every blob). BrokenChain for anything wrong."""
    chain = [(name, blob)]  # the deltas met so far, asked blob first
    fetched = 0
    while True:
        holder, delta = chain[-1]
        base = _base_named(delta, holder, name, [d for d, _ in chain])
        raw = _local_base(base_source, base, size)
        if raw is not None:
            break
        stored = _read_base(read, base, holder, name, size)
        fetched += len(stored)
        _check_size(raw_size_of, stored, base, holder, name, size)
        if not is_delta(stored):
            raw = _whole_base(decode_plain, stored, base, holder, name, size)
            break
        if len(chain) >= max_depth:
            raise BrokenChain(f"its delta chain is longer than the repository's max_depth of {max_depth}")
        chain.append((base, stored))
    while chain:  # decode back up: each delta's base is verified before it is used
        holder, delta = chain.pop()
        try:
            raw = decode_delta(delta, size, raw, holder)
        except CorruptBlob as e:
            raise BrokenChain(str(e) if holder == name else f"its chain's delta {holder} is corrupt: {e}") from None
        if holder != name and blake3.blake3(raw).hexdigest() != holder:
            raise BrokenChain(f"its chain's delta {holder} decodes to bytes that do not match its hash")
    return raw, fetched


def _base_named(delta: Bytes, holder: str, name: str, chain: list[str]) -> str:
    try:
        base = base_of(delta[:DELTA_HEADER_SIZE])
    except CorruptBlob as e:
        raise BrokenChain(str(e) if holder == name else f"its chain's delta {holder} is corrupt: {e}") from None
    assert base is not None  # only delta blobs enter the chain
    if base == holder:
        raise BrokenChain(f"{_delta(holder, name)} names itself as its base")
    if base in chain:
        raise BrokenChain(f"its delta chain loops back to {base}")
    return base


def _local_base(base_source: BaseSource | None, base: str, size: int) -> Bytes | None:
    """The base from a local source, if it gives ``size`` bytes of the right hash (a local copy
    that does not match is not used: the repository's is read instead)."""
    if base_source is None:
        return None
    raw = base_source(base, size)
    if raw is None or len(memoryview(raw).cast("B")) != size or blake3.blake3(raw).hexdigest() != base:
        return None
    return raw


def _read_base(read: Callable[[str], Bytes], base: str, holder: str, name: str, size: int) -> Bytes:
    try:
        return read(base)
    except KeyNotFoundError:
        raise BrokenChain(f"{_base(base, holder, name)} is missing", missing=base) from None
    except ObjectTooLargeError:
        raise BrokenChain(f"{_base(base, holder, name)} is larger than any blob of a {size}-byte chunk") from None


def _check_size(raw_size_of, stored: Bytes, base: str, holder: str, name: str, size: int) -> None:
    try:
        base_size = raw_size_of(stored)
    except CorruptBlob as e:
        raise BrokenChain(f"{_base(base, holder, name)} is corrupt: {e}") from None
    if base_size != size:
        raise BrokenChain(f"{_base(base, holder, name)} holds {base_size} bytes, not {size}")


def _whole_base(decode_plain, stored: Bytes, base: str, holder: str, name: str, size: int) -> Bytes:
    try:
        raw = decode_plain(stored, size)
    except CorruptBlob as e:
        raise BrokenChain(f"{_base(base, holder, name)} is corrupt: {e}") from None
    if blake3.blake3(raw).hexdigest() != base:
        raise BrokenChain(f"{_base(base, holder, name)} does not match its hash")
    return raw
