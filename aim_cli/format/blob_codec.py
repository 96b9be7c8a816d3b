"""How a format 2 repository stores one chunk: ``header || payload`` (docs/design.md §3.4).

The blob is named by the BLAKE3 of the chunk's raw bytes, whatever its codec, so dedup never
depends on how a chunk was compressed. The header says how to get the raw bytes back.

Stored format (all integers unsigned little-endian)::

    header, 16 bytes:
      offset 0  4 bytes  magic b"AIMB"
      offset 4  1 byte   codec: 0 raw, 1 zstd, 2 bg2-zstd, 3 bg4-zstd
      offset 5  3 bytes  zero (reserved: a blob with anything else there is not one we wrote)
      offset 8  8 bytes  raw size R
    payload, by codec:
      raw       the R raw bytes
      zstd      one zstd frame holding the R raw bytes: its header names content size R,
                nothing follows it
      bgN-zstd  N = 2 or 4, R a multiple of N. Stream i (i = 0 .. N-1) is byte i of every
                N-byte little-endian element: raw[i::N], R/N bytes (for bf16, stream 0 holds
                the exponent's lowest bit and the 7 mantissa bits, stream 1 the sign and the
                exponent's top 7 bits). The
                payload is a table of N stream headers, then the N stored streams in order:
                  stream header, 9 bytes: 1 byte mode (0 raw, 1 zstd), 8 bytes stored length
                  stored stream: mode 0, the R/N bytes; mode 1, one zstd frame holding them
                  (content size R/N in its header, stored length < R/N)
                The stored lengths add up to the payload's size minus the table (9*N bytes).
    every zstd frame: content size written, window at most min(8 MiB, the content size rounded
    up to a power of two, at least 1 KiB), no dictionary; written without a checksum (the store
    verifies BLAKE3), one is accepted. Codec raw is used whenever another would not save
    min_saving, so len(blob) <= 16 + R always.

Why byte grouping: a bf16 weight's high byte (sign, exponent) is skewed enough that zstd stores
it in ~0.34 of its size (entropy-coded: ``_compressor``), while its low byte (mantissa) does not
compress at all; zstd on the interleaved bytes gets only ~0.78, grouped ~0.67. The sign bit is
not rotated into the mantissa byte as ZipNN does: measured at zstd level 1, it gains 0.359 vs
0.369 on the high stream.

How the bytes are grouped (``_split``, ``_interleave``): in numpy, whose copy and cast loops
release the GIL, so that the upload threads of a push and the fetch threads of a pull group and
un-group on every core at once. ``raw[i::N]`` on bytes is as fast in one thread but holds the GIL
for the whole slice (docs/design.md §3.4 has the figures of benchmarks/grouping_bench.py).

Choosing a codec (``encode``): element size 2 or 4 (bf16/f16, f32 tensor data from the chunker)
picks bg2/bg4 when the chunk is a multiple of it, anything else plain zstd (one stream). Each
stream is first probed: four element-aligned 4 KiB slices of each stream, taken across the chunk,
are compressed at the same level, and a stream whose sample saves less than half of
``min_saving`` is stored raw without a full compression (a chunk none of whose streams is worth it
is not even split), so incompressible data (random bytes, mantissa streams) costs a ~1.6% sample,
not a zstd pass. Streams of up to 64 KiB are compressed without a probe. A stream whose frame
saves less than ``min_saving`` is stored raw, and a chunk whose encoding saves less than
``min_saving`` of the raw size is stored with codec raw, so no blob is larger than
``HEADER_SIZE + R`` (``max_stored_size``).

``decode`` is bounded by the raw size the manifest names: the stored size, every frame's declared
content size and window, and every stream's output; a zstd frame without a content size, with
another one, with trailing bytes, or that decodes to another length is refused before or while
decompressing, never by allocating what it claims. Anything malformed is ``CorruptBlob``, which
the store reports as a corrupt blob; the store still checks the BLAKE3 of what decodes, so decode
need not catch every flipped bit.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a blob is encoded or decoded: listing a repository needs no zstd
    import zstandard

MAGIC = b"AIMB"
HEADER_SIZE = 16
_HEADER = struct.Struct("<4sB3sQ")
_STREAM_HEADER = struct.Struct("<BQ")  # mode, stored length
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Zstd levels 1-19 use windows of at most 8 MiB (level 19: window log 23), and a frame whose
# content size is known never needs a window larger than that size rounded up to a power of two
# (1 KiB at least, zstd's smallest): decode refuses any larger window.
_MAX_WINDOW = 8 * 1024 * 1024
_MIN_WINDOW = 1024

# The probe: a stream of up to _PROBE_MIN bytes is simply compressed (cheap in absolute terms); a
# larger one is sampled by _PROBE_SLICES slices of _PROBE_SLICE bytes spread over it (16 KiB,
# ~1.6% of a 1 MiB chunk; measured ~6% of the CPU of a zstd attempt on 1 MiB of random bytes).
# Slices of 4 KiB still show a bf16 exponent stream's skew (sample 0.40 vs 0.37 whole) and random
# bytes' lack of it (sample 1.0006).
_PROBE_MIN = 64 * 1024
_PROBE_SLICES = 4
_PROBE_SLICE = 4 * 1024


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    BG2_ZSTD = 2  # 2-byte elements (bf16, f16): byte-grouped into 2 streams, each zstd or raw
    BG4_ZSTD = 3  # 4-byte elements (f32): 4 streams


class _Mode(IntEnum):
    """How one stream of a byte-grouped blob is stored."""

    RAW = 0
    ZSTD = 1


_GROUPS = {Codec.BG2_ZSTD: 2, Codec.BG4_ZSTD: 4}
_GROUPED = {n: codec for codec, n in _GROUPS.items()}


class CorruptBlob(ValueError):
    """The stored bytes are not a blob of the expected raw size; the message says why."""


@dataclass(frozen=True)
class CodecParams:
    """Pinned in aim-repo.json (``"codecs"``), so every client encodes alike."""

    # Measured on the bf16 exponent stream (8 MiB of N(0, 0.02) weights): level 1 stores 0.369
    # at ~430 MB/s, level 2 0.405 at ~260 MB/s, level 3 0.423 at ~210 MB/s (their match finders
    # spend bits on short matches that Huffman-coded literals beat).
    zstd_level: int = 1
    min_saving: float = 0.03  # store RAW unless compression saves at least this fraction

    def as_dict(self) -> dict:
        return {"zstd_level": self.zstd_level, "min_saving": self.min_saving}

    @classmethod
    def from_dict(cls, d: dict) -> CodecParams:
        """ValueError/TypeError/KeyError for anything that is not what as_dict writes."""
        if set(d) != {"zstd_level", "min_saving"}:
            raise ValueError(f"unknown codec parameters {sorted(d)!r}")
        level, saving = d["zstd_level"], d["min_saving"]
        if type(level) is not int or type(saving) not in (int, float) or not (1 <= level <= 19 and 0 <= saving < 1):
            raise ValueError("codec parameters out of range")
        return cls(level, float(saving))


def max_stored_size(raw_size: int) -> int:
    return HEADER_SIZE + raw_size


class _PerThread(threading.local):
    """Zstd contexts are not thread-safe and encode/decode run in many threads at once; one
    context per thread is reused (a fresh one per call costs ~10 us and its allocations)."""

    def __init__(self) -> None:
        self.compressors: dict[tuple[int, bool], zstandard.ZstdCompressor] = {}
        self.decompressor: zstandard.ZstdDecompressor | None = None  # made on the thread's first decode


_per_thread = _PerThread()


def _compressor(level: int, *, entropy_only: bool = False) -> zstandard.ZstdCompressor:
    """The thread's zstd compressor at ``level``. ``entropy_only`` (for byte-grouped streams):
    a 64-entry hash table and 7-byte minimum matches, so zstd finds almost no matches and
    Huffman-codes the literals. A stream of bf16 exponent bytes has no long repeats, only a
    skewed histogram; measured on N(0, 0.02) weights (4 MiB chunks): level 1 as is stores it in
    0.369 of its size at ~420 MB/s, these parameters in 0.340 at ~1,200 MB/s."""
    key = (level, entropy_only)
    compressors = _per_thread.compressors
    if key not in compressors:
        import zstandard

        # Content size in every frame: decode checks it before allocating anything. No checksum:
        # the store hashes the decoded bytes with BLAKE3 anyway.
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            **({"hash_log": 6, "min_match": 7} if entropy_only else {}),
            write_content_size=True,
            write_checksum=False,
            write_dict_id=False,
        )
        compressors[key] = zstandard.ZstdCompressor(compression_params=params)
    return compressors[key]


# --- encode ---------------------------------------------------------------------------------


def encode(data, element_size: int = 1, params: CodecParams = CodecParams()) -> tuple[bytes, Codec]:
    """The stored form of the chunk ``data`` (bytes-like) and the codec chosen. ``element_size``
    is what the chunker knows: 2 for bf16/f16 tensor data, 4 for f32, 1 for anything else."""
    view = memoryview(data).cast("B")
    size = len(view)
    groups = element_size if element_size in _GROUPED and size % element_size == 0 else 1
    payload = _grouped_payload(view, groups, params)
    codec = Codec.ZSTD if groups == 1 else _GROUPED[groups]
    if payload is None or not _saves_enough(sum(map(len, payload)), size, params.min_saving):
        payload, codec = [view], Codec.RAW
    return b"".join([_HEADER.pack(MAGIC, codec, b"\0\0\0", size), *payload]), codec


def _saves_enough(stored: int, size: int, min_saving: float) -> bool:
    """Whether ``stored`` bytes in place of ``size`` save ``min_saving`` of them (and at least
    one byte, so that an encoding is never larger than the raw bytes, even at min_saving 0)."""
    return stored < size and stored <= size * (1 - min_saving)


def _grouped_payload(view: memoryview, groups: int, params: CodecParams) -> list | None:
    """The payload of ``view`` as ``groups`` streams: for 1, ``[zstd frame]``; for 2 and 4, the
    stream table and the streams, each stored zstd when that saves ``min_saving`` of it, else
    raw. None when no stream is worth compressing: then the chunk is not even split."""
    worth = _probe(view, groups, params)
    if not any(worth):
        return None
    if groups == 1:
        frame = _compress(view, params)
        return None if frame is None else [frame]
    table, streams = [], []
    for i, stream in enumerate(_split(view, groups)):
        frame = _compress(stream, params, entropy_only=True) if worth[i] else None
        mode, stored = (_Mode.RAW, stream) if frame is None else (_Mode.ZSTD, frame)
        table.append(_STREAM_HEADER.pack(mode, len(stored)))
        streams.append(stored)
    return table + streams


def _split(view: memoryview, groups: int) -> list:
    """The ``groups`` byte streams of ``view`` (stream i: byte i of every element), as numpy
    arrays, split outside the GIL (docs/design.md §3.4, benchmarks/grouping_bench.py): for 2, a
    cast of the little-endian 16-bit elements to their low byte and of the elements shifted right
    by 8 (~4.7 GB/s per CPU-second); for 4, one strided copy of the chunk seen as a table of
    4-byte rows, transposed (~2.7 GB/s). ``raw[i::N]`` on bytes is as fast single-threaded but
    holds the GIL."""
    import numpy as np  # lazily, as zstandard: listing a repository needs neither

    if groups == 2:
        elements = np.frombuffer(view, "<u2")
        return [elements.astype(np.uint8), (elements >> 8).astype(np.uint8)]
    return list(np.frombuffer(view, np.uint8).reshape(-1, groups).T.copy())


def _interleave(out: bytearray | memoryview, stream: Callable[[int], Any], groups: int) -> None:
    """``out[i::groups] = stream(i)`` for every stream, outside the GIL, asking for each stream
    only when it is written (so that one decoded stream at a time is held beside ``out``): for
    2, each element built as ``high << 8 | low`` (~5.4 GB/s per CPU-second), for 4, one strided
    copy per column of ``out`` seen as a table of 4-byte rows (~2.4 GB/s)."""
    import numpy as np

    if groups == 2:
        elements = np.frombuffer(out, "<u2")
        np.left_shift(np.frombuffer(stream(1), np.uint8), 8, out=elements, dtype=elements.dtype, casting="unsafe")
        np.bitwise_or(elements, np.frombuffer(stream(0), np.uint8), out=elements)
        return
    table = np.frombuffer(out, np.uint8).reshape(-1, groups)
    for i in range(groups):
        table[:, i] = np.frombuffer(stream(i), np.uint8)


def _compress(data, params: CodecParams, *, entropy_only: bool = False) -> bytes | None:
    """A zstd frame of ``data`` if it saves ``min_saving`` of it, else None."""
    frame = _compressor(params.zstd_level, entropy_only=entropy_only).compress(data)
    return frame if _saves_enough(len(frame), len(data), params.min_saving) else None


def _probe(view: memoryview, groups: int, params: CodecParams) -> list[bool]:
    """For each of the ``groups`` streams, whether it is worth a full compression: its part of a
    sample saves half of min_saving. The sample is a few element-aligned slices of the chunk, so
    the probe costs a fraction of one compression and never splits the whole chunk."""
    slice_size = _PROBE_SLICE * groups
    size = len(view)
    if size <= _PROBE_MIN * groups:  # small enough to just compress
        return [size > 0] * groups
    step = (size - slice_size) // (_PROBE_SLICES - 1) // groups * groups
    sample = b"".join(view[i * step : i * step + slice_size] for i in range(_PROBE_SLICES))
    compressor = _compressor(params.zstd_level, entropy_only=groups > 1)
    return [
        len(compressor.compress(part)) < len(part) * (1 - params.min_saving / 2)
        for part in (sample[i::groups] for i in range(groups))
    ]


# --- decode ---------------------------------------------------------------------------------


def raw_size_of(blob: bytes | bytearray | memoryview) -> int:
    """The raw size in ``blob``'s header (for a blob no manifest names: `repo check --read-data`);
    CorruptBlob if it has no header. ``decode`` checks the rest."""
    if len(blob) < HEADER_SIZE or blob[:4] != MAGIC:
        raise CorruptBlob("no blob header")
    return _HEADER.unpack_from(blob)[3]


def decode(blob: bytes | bytearray | memoryview, raw_size: int) -> bytes | bytearray | memoryview:
    """The raw bytes of ``blob``, which must decode to exactly ``raw_size`` bytes, as a
    bytes-like object (a view into ``blob`` for codec raw: no copy). Never holds more than about
    ``raw_size`` bytes of output, whatever the blob claims. CorruptBlob otherwise."""
    if len(blob) < HEADER_SIZE or len(blob) > max_stored_size(raw_size):
        raise CorruptBlob(f"{len(blob)} bytes stored for a chunk of {raw_size} bytes")
    magic, codec_id, reserved, size = _HEADER.unpack_from(blob)
    if magic != MAGIC or reserved != b"\0\0\0":
        raise CorruptBlob("no blob header")
    if size != raw_size:
        raise CorruptBlob(f"its header says {size} bytes, not {raw_size}")
    try:
        codec = Codec(codec_id)
    except ValueError:
        raise CorruptBlob(f"unknown codec {codec_id}") from None
    payload = memoryview(blob)[HEADER_SIZE:]
    if codec == Codec.RAW:
        if len(payload) != raw_size:
            raise CorruptBlob(f"its payload is {len(payload)} bytes, not {raw_size}")
        return payload  # no copy: pull writes and hashes it where it lies
    if codec == Codec.ZSTD:
        return _unzstd(payload, raw_size)
    return _ungroup(payload, raw_size, _GROUPS[codec])


def decode_writable(blob: bytes | bytearray | memoryview, raw_size: int) -> bytearray | memoryview:
    """``decode``, into a buffer the caller owns and may write into: an un-grouped chunk as it
    was decoded (a fresh buffer), any other copied (raw: a view of ``blob``; zstd: bytes)."""
    out = decode(blob, raw_size)
    if len(blob) >= HEADER_SIZE and blob[4] in _GROUPS and isinstance(out, memoryview):
        return out
    return bytearray(out)


def _ungroup(payload: memoryview, raw_size: int, groups: int) -> memoryview:
    if raw_size % groups:
        raise CorruptBlob(f"a byte-grouped chunk of {raw_size} bytes, not a multiple of {groups}")
    stream_size = raw_size // groups
    streams = _stream_table(payload, groups, stream_size)

    def stream(i: int):
        mode, stored = streams[i]
        return stored if mode == _Mode.RAW else _unzstd(stored, stream_size)

    import numpy as np

    # Not zeroed first (bytearray(n) is: 2% of a pull's CPU in memset), every byte is written
    # below; not copied into bytes: a 4 MiB copy per chunk, for callers that only write and hash it.
    out = np.empty(raw_size, np.uint8).data
    _interleave(out, stream, groups)
    return out


def _stream_table(payload: memoryview, groups: int, stream_size: int) -> list[tuple[int, memoryview]]:
    """The (mode, stored bytes) of each stream, checked against the table and the payload."""
    table_size = groups * _STREAM_HEADER.size
    if len(payload) < table_size:
        raise CorruptBlob("its stream table is cut short")
    streams, offset = [], table_size
    for i in range(groups):
        mode, length = _STREAM_HEADER.unpack_from(payload, i * _STREAM_HEADER.size)
        if mode not in (_Mode.RAW, _Mode.ZSTD):
            raise CorruptBlob(f"stream {i} has unknown mode {mode}")
        if mode == _Mode.RAW and length != stream_size:
            raise CorruptBlob(f"raw stream {i} is {length} bytes, not {stream_size}")
        if mode == _Mode.ZSTD and length >= stream_size:
            raise CorruptBlob(f"zstd stream {i} is {length} bytes, not less than {stream_size}")
        if offset + length > len(payload):
            raise CorruptBlob(f"stream {i} runs past the end of the blob")
        streams.append((mode, payload[offset : offset + length]))
        offset += length
    if offset != len(payload):
        raise CorruptBlob(f"{len(payload) - offset} bytes follow the last stream")
    return streams


def _unzstd(frame: memoryview, expected: int) -> bytes:
    """The ``expected`` bytes held in the zstd frame ``frame``; the frame's header is checked
    first, so a frame claiming gigabytes is refused before anything is allocated."""
    if frame[:4] != _ZSTD_MAGIC:
        raise CorruptBlob("not a zstd frame")
    import zstandard

    try:
        declared = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as e:
        raise CorruptBlob(f"bad zstd frame header ({e})") from None
    if declared.content_size != expected:
        raise CorruptBlob(f"zstd frame declares {_content_size(declared.content_size)}, not {expected} bytes")
    if declared.window_size > _window_limit(expected):
        raise CorruptBlob(f"zstd window of {declared.window_size} bytes for {expected} bytes")
    decompressor = _per_thread.decompressor
    if decompressor is None:
        decompressor = _per_thread.decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
    try:
        out = decompressor.decompress(frame, max_output_size=expected, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise CorruptBlob(f"bad zstd frame ({e})") from None
    if len(out) != expected:  # the library checks it too; this states the contract
        raise CorruptBlob(f"zstd frame holds {len(out)} bytes, not {expected}")
    return out


def _content_size(declared: int) -> str:
    import zstandard

    return "no content size" if declared == zstandard.CONTENTSIZE_UNKNOWN else f"{declared} bytes"


def _window_limit(expected: int) -> int:
    return min(_MAX_WINDOW, max(_MIN_WINDOW, 1 << max(expected - 1, 0).bit_length()))
