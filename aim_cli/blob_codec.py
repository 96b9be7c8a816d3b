"""How a format 2 repository stores one chunk: ``header || payload`` (DESIGN.md section 9).

The blob is named by the BLAKE3 of the chunk's raw bytes, whatever its codec, so dedup never
depends on how a chunk was compressed. The header says how to get the raw bytes back:

    offset 0  4 bytes  magic b"AIMB"
    offset 4  1 byte   codec (Codec)
    offset 5  3 bytes  zero (reserved: a blob with anything else there is not one we wrote)
    offset 8  8 bytes  raw size, unsigned little-endian

``encode`` never makes a blob larger than ``HEADER_SIZE + len(raw)`` (a chunk that compression
does not shrink by ``min_saving`` is stored RAW), so a reader bounds every stored object by
``max_stored_size(raw_size)``. ``decode`` is bounded by the raw size the manifest names (output
and zstd window): anything else is ``CorruptBlob``, which the store reports as a corrupt blob.

STUB in the foundation commit: the helper that owns this module replaces the implementation,
keeping the API below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"AIMB"
HEADER_SIZE = 16
_HEADER = struct.Struct("<4sB3sQ")


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    BG2_ZSTD = 2  # 2-byte elements (bf16, f16): byte-grouped into 2 streams, each zstd or raw
    BG4_ZSTD = 3  # 4-byte elements (f32): 4 streams


class CorruptBlob(ValueError):
    """The stored bytes are not a blob of the expected raw size; the message says why."""


@dataclass(frozen=True)
class CodecParams:
    """Pinned in aim-repo.json (``"codecs"``), so every client encodes alike."""

    zstd_level: int = 1
    min_saving: float = 0.03  # store RAW unless compression saves at least this fraction

    def as_dict(self) -> dict:
        return {"zstd_level": self.zstd_level, "min_saving": self.min_saving}

    @classmethod
    def from_dict(cls, d: dict) -> "CodecParams":
        """ValueError/TypeError/KeyError for anything that is not what as_dict writes."""
        if set(d) != {"zstd_level", "min_saving"}:
            raise ValueError(f"unknown codec parameters {sorted(d)!r}")
        level, saving = d["zstd_level"], d["min_saving"]
        if type(level) is not int or type(saving) not in (int, float) or not (1 <= level <= 19 and 0 <= saving < 1):
            raise ValueError("codec parameters out of range")
        return cls(level, float(saving))


def max_stored_size(raw_size: int) -> int:
    return HEADER_SIZE + raw_size


def encode(data, element_size: int = 1, params: CodecParams = CodecParams()) -> tuple[bytes, Codec]:
    """The stored form of the chunk ``data`` (bytes-like) and the codec chosen. ``element_size``
    is what the chunker knows: 2 for bf16/f16 tensor data, 4 for f32, 1 for anything else."""
    raw = bytes(data)
    return _HEADER.pack(MAGIC, Codec.RAW, b"\0\0\0", len(raw)) + raw, Codec.RAW


def raw_size_of(blob: bytes) -> int:
    """The raw size in ``blob``'s header (for a blob no manifest names): CorruptBlob if it has
    no header. ``decode`` checks the rest."""
    if len(blob) < HEADER_SIZE:
        raise CorruptBlob(f"{len(blob)} bytes is shorter than a blob header")
    return _HEADER.unpack_from(blob)[3]


def decode(blob: bytes, raw_size: int) -> bytes:
    """The raw bytes of ``blob``, which must decode to exactly ``raw_size`` bytes. Never holds
    more than about ``raw_size`` bytes of output, whatever the blob claims. CorruptBlob otherwise."""
    if len(blob) < HEADER_SIZE or len(blob) > max_stored_size(raw_size):
        raise CorruptBlob(f"{len(blob)} bytes stored for a chunk of {raw_size} bytes")
    magic, codec, reserved, size = _HEADER.unpack_from(blob)
    if magic != MAGIC or reserved != b"\0\0\0":
        raise CorruptBlob("no blob header")
    if size != raw_size:
        raise CorruptBlob(f"its header says {size} bytes, not {raw_size}")
    if codec != Codec.RAW:
        raise CorruptBlob(f"unknown codec {codec}")
    raw = blob[HEADER_SIZE:]
    if len(raw) != raw_size:
        raise CorruptBlob(f"its payload is {len(raw)} bytes, not {raw_size}")
    return raw
