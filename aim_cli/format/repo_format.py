"""A repository's storage format: what its aim-repo.json pins, and what differs between formats.

Format 1 (docs/design.md §3) stores each chunk's raw bytes and cuts every file as plain bytes.
Format 2 (§3.4, §4) cuts safetensors files at tensor boundaries (chunking/tensors.py) and stores
each chunk as ``header || payload`` (format/blob_codec.py). Format 3 (§3.1, §4) cuts a large
tensor at fixed offsets from its own start (``tensor_chunk_bytes``) and pins the parameters of
delta blobs (format/delta_params.py); its plain blobs are format 2's, and a delta blob (codec 4)
needs its base, so the store decodes it (repository/delta_chain.py); ``decode`` here refuses
one as corrupt. Every format names a blob by the BLAKE3 of the chunk's raw
bytes, and their manifests are the same, so a manifest is valid in a repository of any format.
Everything that differs between them is a method here; a repository asks its format.

    format 1: {"format": 1, "chunking": {...}, "hash": "blake3"}
    format 2: {"format": 2, "chunking": {...}, "hash": "blake3", "tensor_chunking": {...}, "codecs": {...}}
    format 3: {"format": 3, "chunking": {...}, "hash": "blake3", "tensor_chunking": {...}, "codecs": {...},
               "deltas": {...}}   (tensor_chunking's algorithm "safetensors-fixed-v1")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aim_cli.chunking.cdc import Chunk, ChunkingParams, iter_chunks
from aim_cli.chunking.tensors import TensorChunkingParams, iter_file_chunks
from aim_cli.errors import ConfigError, IntegrityError
from aim_cli.format import blob_codec
from aim_cli.format.delta_params import DeltaParams
from aim_cli.format.layout import REPO_META_KEY

#: The formats this aim_cli reads and writes.
KNOWN_FORMATS = (1, 2, 3)
#: What new repositories get: format 3, whose delta figures hold (issue 18); ``repo create --format 2``
#: still makes the old kind.
DEFAULT_FORMAT = 3
#: The codecs of a plain blob, alike in formats 2 and 3 (a delta blob is codec 4).
_PLAIN_CODECS = frozenset(
    {blob_codec.Codec.RAW, blob_codec.Codec.ZSTD, blob_codec.Codec.BG2_ZSTD, blob_codec.Codec.BG4_ZSTD}
)
#: A delta blob's own header before its inner blob (format3.md: magic, codec, size, base digest).
DELTA_HEADER_SIZE = 48


@dataclass(frozen=True)
class RepoFormat:
    version: int
    chunking: ChunkingParams
    tensors: TensorChunkingParams | None = None  # formats 2 and 3 (3: tensor_chunk_bytes set)
    codecs: blob_codec.CodecParams | None = None  # formats 2 and 3
    deltas: DeltaParams | None = None  # format 3

    @classmethod
    def new(cls, version: int = DEFAULT_FORMAT, chunking: ChunkingParams | None = None) -> RepoFormat:
        if version not in KNOWN_FORMATS:
            raise ValueError(f"unknown format {version}")
        chunking = (chunking or ChunkingParams()).validate()
        if version == 1:
            return cls(1, chunking)
        tensors = TensorChunkingParams.for_chunking(chunking, fixed=version == 3)
        return cls(version, chunking, tensors, blob_codec.CodecParams(), DeltaParams() if version == 3 else None)

    def meta(self) -> dict:
        """The content of aim-repo.json."""
        meta: dict = {"format": self.version, "chunking": self.chunking.as_dict(), "hash": "blake3"}
        if self.tensors is not None and self.codecs is not None:  # formats 2 and 3
            meta["tensor_chunking"] = self.tensors.as_dict()
            meta["codecs"] = self.codecs.as_dict()
        if self.deltas is not None:  # format 3
            meta["deltas"] = self.deltas.as_dict()
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> RepoFormat:
        """The format of a parsed aim-repo.json whose ``format`` is one of KNOWN_FORMATS.
        ValueError, KeyError, TypeError or AttributeError when anything is not what ``meta``
        writes: every client must cut and encode alike, so nothing is guessed."""
        version = meta["format"]
        expected = set(cls.new(version).meta())
        if set(meta) != expected or meta["hash"] != "blake3":
            raise ValueError(f"unexpected keys {sorted(set(meta) ^ expected)!r}")
        chunking = ChunkingParams.from_dict(meta["chunking"]).validate()
        if version == 1:
            return cls(1, chunking)
        tensors = TensorChunkingParams.from_dict(meta["tensor_chunking"])
        if (tensors.tensor_chunk_bytes is not None) != (version == 3):  # each format cuts its own way
            raise ValueError(f"tensor chunking {tensors.algorithm!r} in a format {version} repository")
        codecs = blob_codec.CodecParams.from_dict(meta["codecs"])
        return cls(version, chunking, tensors, codecs, DeltaParams.from_dict(meta["deltas"]) if version == 3 else None)

    # -- chunks -------------------------------------------------------------------------------------
    def chunk_file(
        self, path: str | os.PathLike, *, on_chunk: Callable[[Chunk, memoryview], None] | None = None, whole=None
    ) -> Iterator[Chunk]:
        """The chunks of the file at ``path`` as this format cuts them (chunking.iter_chunks' contract)."""
        if self.tensors is None:
            return iter_chunks(path, self.chunking, on_chunk=on_chunk, whole=whole)
        return iter_file_chunks(path, self.chunking, self.tensors, on_chunk=on_chunk, whole=whole)

    # -- blobs --------------------------------------------------------------------------------------
    def max_stored_size(self, raw_size: int) -> int:
        """The largest object that can hold a chunk of ``raw_size`` bytes: reads stop past it.
        Format 3: a delta blob, its 48-byte header and an inner blob of at most 16 + R bytes."""
        if self.codecs is None:
            return raw_size
        plain = blob_codec.max_stored_size(raw_size)
        return plain if self.deltas is None else DELTA_HEADER_SIZE + plain

    def stored_size_fits(self, stored_size: int, raw_size: int) -> bool:
        """Whether an object of ``stored_size`` bytes can hold a chunk of ``raw_size`` bytes
        (what `repo check` can tell from a listing, without reading)."""
        if self.codecs is None:
            return stored_size == raw_size
        return blob_codec.HEADER_SIZE < stored_size <= self.max_stored_size(raw_size)

    def holds_as_stored(self, src: RepoFormat, stored: bytes) -> bool:
        """Whether ``stored``, a blob of a repository of format ``src``, can be stored here as it
        is (`model copy`): in the same format, or a plain blob (codecs 0-3) between formats 2 and
        3, whose plain blobs are alike; never a delta blob (format 3), whose base the destination
        may lack. Anything else is re-encoded from its raw bytes."""
        plain = src.codecs is None or (
            len(stored) >= blob_codec.HEADER_SIZE and stored[:4] == blob_codec.MAGIC and stored[4] in _PLAIN_CODECS
        )
        if src.version == self.version:
            return src.version < 3 or plain
        return src.codecs is not None and self.codecs is not None and plain

    def encode(self, data, element_size: int = 1):
        """The object to store for the chunk ``data``."""
        if self.codecs is None:
            return data
        return blob_codec.encode(data, element_size, self.codecs)[0]

    def raw_size_of(self, stored: bytes | bytearray | memoryview) -> int:
        """The raw size a stored object claims (checked by ``decode``): CorruptBlob if none."""
        return len(stored) if self.codecs is None else blob_codec.raw_size_of(stored)

    def decode(self, stored: bytes | bytearray | memoryview, raw_size: int) -> bytes | bytearray | memoryview:
        """The chunk's raw bytes from its stored object: blob_codec.CorruptBlob if they cannot be
        ``raw_size`` bytes (their digest is checked by the caller). A delta blob (format 3, codec
        4) is refused as corrupt until deltas are decoded."""
        if self.codecs is None:
            if len(stored) != raw_size:
                raise blob_codec.CorruptBlob(f"it is not the {raw_size} bytes expected")
            return stored
        return blob_codec.decode(stored, raw_size)


def parse_meta(raw: bytes, name: str) -> RepoFormat:
    """aim-repo.json's format and parameters. Anything malformed, numbers out of range included
    (1e400, NaN, -5, a 5000-digit integer), is an IntegrityError; a format this client does not
    know is a ConfigError (upgrade)."""

    def malformed() -> IntegrityError:
        return IntegrityError(
            f"{REPO_META_KEY} of repository {name!r} is malformed", "restore it from a backup or another client's copy"
        )

    try:
        meta = json.loads(raw)
        fmt = meta.get("format")
    except (ValueError, RecursionError, AttributeError):
        raise malformed() from None
    if type(fmt) is not int or fmt < 1:
        raise malformed()
    if fmt not in KNOWN_FORMATS:
        known = " and ".join(str(f) for f in KNOWN_FORMATS)
        raise ConfigError(
            f"repository {name!r} has storage format {fmt}, this aim_cli knows formats {known}", "upgrade aim_cli"
        )
    try:
        return RepoFormat.from_meta(meta)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        raise malformed() from None
