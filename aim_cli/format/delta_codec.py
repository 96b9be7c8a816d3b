"""How a format 3 repository stores a chunk as a delta against another chunk: codec 4
(docs/design.md §3.4). Pure: no I/O; the caller fetches the base and verifies it by BLAKE3.

A chunk of a training checkpoint differs from the same chunk of the previous checkpoint in most
of its weights, but each weight moves by little: XORed with its old value, a bf16 weight's sign
and exponent byte is almost always zero and its mantissa byte keeps only low bits. So the delta is
``X = raw XOR base_raw``, stored as a format 2 blob (``blob_codec``: byte-grouped by the chunk's
element size, entropy-coded by zstd), behind a header naming the base.

Stored format (all integers unsigned little-endian)::

    offset 0   4 bytes  magic b"AIMB"
    offset 4   1 byte   codec 4 (delta)
    offset 5   3 bytes  zero (reserved: a blob with anything else there is not one we wrote)
    offset 8   8 bytes  raw size R
    offset 16 32 bytes  the base's digest: BLAKE3 of the base's raw bytes, which are R bytes too
    offset 48           a complete codec 0-3 blob (blob_codec: 16-byte header + payload) of the
                        R bytes X = raw XOR base_raw, encoded with the chunk's element size
                        (2 for bf16/f16, 4 for f32, 1 otherwise, fp8 included) and the
                        repository's codec parameters

So a delta blob is at most ``48 + 16 + R`` bytes (``max_delta_size``). The blob is still named by
the BLAKE3 of the chunk's raw bytes (never of X), and the store verifies that digest after every
decode. The first 16 bytes are laid out as every blob's, so ``base_of`` tells a delta from a plain
blob by its first 48 bytes, without decoding anything.

API:
  ``xor(a, b)``                  the XOR of two equal-length buffers, as a bytearray
  ``encode_delta(raw, base_raw, base_digest, element_size, params)``  the codec 4 blob
  ``worth_storing(delta_len, plain_len, min_saving)``  whether push keeps the delta: it must be
                                 smaller than the chunk's plain blob and at most
                                 ``(1 - min_saving)`` of it (aim-repo.json's ``deltas``); otherwise
                                 the chunk is stored plain, as a keyframe
  ``base_of(blob_prefix)``       the base digest of a delta blob (64 lowercase hex) from its first
                                 48 bytes, None for a plain blob (codec 0-3); CorruptBlob if neither
  ``decode_delta(blob, raw_size, base_raw, name)``  the raw bytes; CorruptBlob for anything
                                 malformed: a stored size outside [64, 64 + R], a header not as
                                 above, a raw size other than the manifest's, a base naming the
                                 blob itself (``name``, the blob's own digest), a base of another
                                 size, a delta inside the delta, or an inner blob blob_codec refuses
  ``max_delta_size(raw_size)``   ``64 + R``

Bounded memory: ``decode_delta`` holds the blob, the base, the inner blob's decoded X (at most R
bytes: blob_codec.decode is bounded by R whatever the frames claim) and the output, which is X
XORed in place when blob_codec hands back a writable buffer (byte-grouped codecs), else one new
R-byte buffer: at most about ``len(blob) + 3R`` bytes in all.

Why numpy for the XOR (imported lazily, as in blob_codec): measured on this project's 2-core
test machine (loaded by other jobs, best of 5; ``uv run python benchmarks/delta_codec_bench.py``
prints the codec's figures), XOR of two buffers:

  =====================================  =============  =============
  method                                 1 MiB          4 MiB
  =====================================  =============  =============
  int.from_bytes ^ int.from_bytes,        ~140 MiB/s     ~135 MiB/s
  .to_bytes (from/to_bytes ~400 each)
  numpy bitwise_xor into a new bytearray  ~4,300 MiB/s   ~6,300 MiB/s
  numpy bitwise_xor in place              ~8,200 MiB/s   ~5,300 MiB/s
  =====================================  =============  =============

The standard library has no faster XOR of byte strings and zstd none at all, so Python ints would
cost a 4 MiB chunk ~30 ms holding the GIL, several times zstd's decoding of it: numpy is 30-45x
faster. Its ufunc loop releases the GIL (numpy does so for every non-object dtype); on this
memory-bound, loaded machine two threads XORing together reached 0.7-2.3x one thread's speed
(16 MiB and 1 MiB buffers; the int method fell to 0.5-0.9x, serialised by the GIL). Either way
the XOR is under a tenth of a delta's encode or decode time (zstd dominates). Byte grouping runs
in numpy too (blob_codec), so the whole delta path but zstd's own calls, which release the GIL as
well, is out of the GIL.
"""

from __future__ import annotations

import re
import struct

from aim_cli.format import blob_codec
from aim_cli.format.blob_codec import CodecParams, CorruptBlob

DELTA_CODEC = 4
DELTA_HEADER_SIZE = 48
_HEADER = struct.Struct("<4sB3sQ32s")  # magic, codec, reserved, raw size, base digest
_DIGEST = re.compile(r"[0-9a-f]{64}")


def max_delta_size(raw_size: int) -> int:
    return DELTA_HEADER_SIZE + blob_codec.max_stored_size(raw_size)


def xor(a, b) -> bytearray:
    """``a XOR b`` byte by byte, for two bytes-like objects of the same length (ValueError
    otherwise). Runs in numpy's ufunc loop, which releases the GIL."""
    out = bytearray(len(memoryview(a).cast("B")))
    _xor_into(out, a, b)
    return out


def _xor_into(out, a, b) -> None:
    """``out[:] = a XOR b``; ``out`` may be ``a`` (in place)."""
    import numpy as np  # lazily: only delta coding needs it, and it costs ~60 ms to import

    xa, xb = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    if len(xa) != len(xb) or len(xa) != len(out):
        raise ValueError(f"XOR of {len(xa)} and {len(xb)} bytes")
    if len(xa):  # frombuffer of an empty writable buffer is fine, but skip the call
        np.bitwise_xor(xa, xb, out=np.frombuffer(out, np.uint8))


def encode_delta(raw, base_raw, base_digest: str, element_size: int, params: CodecParams) -> bytes:
    """The codec 4 blob of the chunk ``raw`` against ``base_raw`` (bytes-like, the same length),
    whose BLAKE3 is ``base_digest`` (64 lowercase hex; the caller computed or verified it). Always
    a delta: ``worth_storing`` says whether to keep it. ValueError for arguments that break that
    contract (a programming error, not hostile input)."""
    if not _DIGEST.fullmatch(base_digest):
        raise ValueError(f"not a digest: {base_digest!r}")
    x = xor(raw, base_raw)
    inner, _ = blob_codec.encode(x, element_size, params)
    return _HEADER.pack(blob_codec.MAGIC, DELTA_CODEC, b"\0\0\0", len(x), bytes.fromhex(base_digest)) + inner


def worth_storing(delta_len: int, plain_len: int, min_saving: float) -> bool:
    """Whether a delta blob of ``delta_len`` bytes is kept instead of the chunk's plain blob of
    ``plain_len``: it saves at least ``min_saving`` of it, and at least one byte (a delta also
    costs a base to fetch, so a tie goes to the plain blob, even at min_saving 0)."""
    return delta_len < plain_len and delta_len <= plain_len * (1 - min_saving)


def base_of(blob_prefix: bytes | bytearray | memoryview) -> str | None:
    """The base digest named by a delta blob, from its first 48 bytes at least (more is ignored);
    None for a plain blob (codec 0-3: their first 16 bytes suffice; decode checks the rest).
    CorruptBlob for a prefix with no blob header, non-zero reserved bytes, an unknown codec, or a
    delta header cut short."""
    if len(blob_prefix) < blob_codec.HEADER_SIZE or blob_prefix[:4] != blob_codec.MAGIC:
        raise CorruptBlob("no blob header")
    if blob_prefix[5:8] != b"\0\0\0":
        raise CorruptBlob("no blob header")
    codec = blob_prefix[4]
    if codec < DELTA_CODEC:
        return None
    if codec != DELTA_CODEC:
        raise CorruptBlob(f"unknown codec {codec}")
    if len(blob_prefix) < DELTA_HEADER_SIZE:
        raise CorruptBlob("its delta header is cut short")
    return bytes(blob_prefix[16:DELTA_HEADER_SIZE]).hex()


def decode_delta(blob: bytes | bytearray | memoryview, raw_size: int, base_raw, name: str) -> bytearray | memoryview:
    """The raw bytes of the delta blob ``blob`` named ``name`` (the BLAKE3 the manifest gives it),
    which must decode to exactly ``raw_size`` bytes, given its base's raw bytes ``base_raw`` (the
    caller fetched them by ``base_of(blob)`` and verified their BLAKE3). The store still verifies
    the result's BLAKE3 against ``name``. Bounded by ``raw_size`` whatever the blob claims;
    CorruptBlob for anything malformed (the module docstring lists the checks)."""
    if not DELTA_HEADER_SIZE + blob_codec.HEADER_SIZE <= len(blob) <= max_delta_size(raw_size):
        raise CorruptBlob(f"{len(blob)} bytes stored for a delta chunk of {raw_size} bytes")
    magic, codec, reserved, size, digest = _HEADER.unpack_from(blob)
    if magic != blob_codec.MAGIC or codec != DELTA_CODEC or reserved != b"\0\0\0":
        raise CorruptBlob("no delta blob header")
    if size != raw_size:
        raise CorruptBlob(f"its header says {size} bytes, not {raw_size}")
    if digest.hex() == name:
        raise CorruptBlob("it names itself as its base")
    base = memoryview(base_raw).cast("B")
    if len(base) != raw_size:
        raise CorruptBlob(f"its base is {len(base)} bytes, not {raw_size}")
    inner = memoryview(blob)[DELTA_HEADER_SIZE:]
    if inner[4] == DELTA_CODEC:
        raise CorruptBlob("a delta inside a delta")
    out = blob_codec.decode_writable(inner, raw_size)
    _xor_into(out, out, base)
    return out
