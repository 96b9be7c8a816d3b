"""A repository's blobs role: content-addressed chunks below ``blobs/``, stored in the
repository's format and verified on every read (re-hashed, bounded by the size the manifest
names), asked about one by one or in bulk, listed, deleted. In format 3 a chunk may be stored as
a delta against another (``put_delta``; whole again: ``put_plain``), decoded on read by following
its chain of bases (delta_chain.py)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import blake3

from aim_cli.backends.base import Backend, Bytes
from aim_cli.errors import BlobCorruptError, BlobMissingError, KeyNotFoundError, ObjectTooLargeError
from aim_cli.format import manifest as mf
from aim_cli.format.blob_codec import CorruptBlob
from aim_cli.format.delta_codec import encode_delta, worth_storing
from aim_cli.format.layout import BLOBS, SHARDS, blob_key, digest_of_shard_key
from aim_cli.format.repo_format import RepoFormat
from aim_cli.repository.delta_chain import BaseSource, BrokenChain, decode_chain, is_delta
from aim_cli.repository.edges import Edges
from aim_cli.repository.keys import list_objects
from aim_cli.repository.meta import RepoMeta
from aim_cli.repository.parallel import map_parallel

_B = TypeVar("_B", bound="bytes | bytearray | memoryview")

log = logging.getLogger(__name__)


class Blobs:
    """The blobs of the repository ``name`` in ``backend``, in the format ``meta`` reads; bulk
    questions use up to ``jobs`` requests at once."""

    def __init__(self, backend: Backend, name: str, meta: RepoMeta, jobs: int, edges: Edges | None = None):
        self.backend = backend
        self.name = name
        self.meta = meta
        self.jobs = jobs
        self.edges = edges or Edges(backend)  # format 3: a delta's marker is written before it

    def put_blob(self, digest: str, data, element_size: int = 1) -> int:
        """Store the chunk ``data`` (raw bytes, named ``digest``) in the repository's format;
        return the bytes stored. ``element_size`` is the chunker's hint for the codec."""
        stored = self.meta.format().encode(data, element_size)
        self.backend.put(blob_key(digest), stored)
        return len(stored)

    def get_blob(self, digest: str, size: int, *, context: str = "", base_source: BaseSource | None = None) -> Bytes:
        """The chunk's raw bytes, verified against ``digest`` and ``size`` (what a manifest names)."""
        return self.fetch_blob(digest, size, context=context, base_source=base_source)[0]

    def fetch_blob(
        self, digest: str, size: int, *, context: str = "", base_source: BaseSource | None = None
    ) -> tuple[Bytes, int]:
        """(the chunk's raw bytes, the bytes read from storage, a delta's bases included),
        verified against ``digest`` and ``size``. Reads stop past the largest object that can
        hold ``size`` bytes in this repository's format, so memory stays bounded whatever the
        storage holds; decoding is bounded by ``size`` too. A delta blob (format 3) is decoded by
        following its chain (delta_chain.py), each base asked of ``base_source(digest, size)``
        first, then read from here. Missing: BlobMissingError; altered, truncated, oversized or
        undecodable, or a delta whose chain is broken (a base missing, of another size, altered;
        a loop; deeper than the repository's max_depth): BlobCorruptError; both name the blob and
        carry its digest."""
        where = f" (needed by {context})" if context else ""
        fmt = self.meta.format()
        stored = self._get_stored_once(digest, fmt.max_stored_size(size), where)
        data, fetched = self._decoded(digest, stored, size, where, base_source)
        return data, len(stored) + fetched

    def fetch_blob_via(
        self, digest: str, size: int, dependent: str, dependent_data, *, context: str = ""
    ) -> tuple[Bytes, int] | None:
        """(chunk ``digest``'s raw bytes, the bytes read from storage), taken from the blob of
        ``dependent`` (format 3), a delta against ``digest`` whose raw bytes ``dependent_data`` the
        caller holds, verified: raw(digest) = raw(dependent) XOR the delta's payload. None when
        that blob is not (or no longer) a delta against ``digest``, or gone: then fetch ``digest``
        itself; so too when it decodes to other bytes (damage: a warning names that blob)."""
        from aim_cli.format import delta_codec

        where = f" (needed by {context})" if context else ""
        try:
            stored = self.backend.get(blob_key(dependent), max_size=self.meta.format().max_stored_size(size))
        except (KeyNotFoundError, ObjectTooLargeError):
            return None
        try:
            if delta_codec.base_of(stored[: delta_codec.DELTA_HEADER_SIZE]) != digest:
                return None
            data = delta_codec.decode_delta(stored, size, dependent_data, dependent)
            if blake3.blake3(data).hexdigest() != digest:
                raise CorruptBlob(f"it does not decode to chunk {digest}, its recorded base")
        except CorruptBlob as e:
            # The chunk itself may well be intact: fetch it as itself, and say what is damaged.
            log.warning("%s; fetching chunk %s itself", self._corrupt(dependent, str(e), where).message, digest)
            return None
        return data, len(stored)

    def _get_stored_once(self, digest: str, max_size: int, where: str) -> Bytes:
        """``_get_stored`` of a blob read to be decoded and dropped: the backend may keep it out of
        its caches and hand it over as any bytes-like object (Backend.get_once)."""
        return self._stored(digest, max_size, where, self.backend.get_once)

    def _get_stored(self, digest: str, max_size: int, where: str) -> bytes:
        return self._stored(digest, max_size, where, self.backend.get)

    def _stored(self, digest: str, max_size: int, where: str, read: Callable[[str, int], _B]) -> _B:
        try:
            return read(blob_key(digest), max_size)
        except KeyNotFoundError:
            raise BlobMissingError(
                f"blob {digest} is missing from repository {self.name!r}{where}",
                "push the same files again (under a new tag) to restore it; `aim_cli repo check` lists all damage",
                digest=digest,
            ) from None
        except ObjectTooLargeError:
            raise self._corrupt(
                digest, f"it is larger than {max_size} bytes, the most its chunk can take", where
            ) from None

    def _decoded(
        self,
        digest: str,
        stored: Bytes,
        size: int,
        where: str,
        base_source: BaseSource | None = None,
        read_bases: list | None = None,
    ) -> tuple[Bytes, int]:
        """(the verified raw bytes, the stored bytes read for a delta's bases)."""
        fmt = self.meta.format()
        fetched = 0
        try:
            if fmt.deltas is not None and is_delta(stored):
                data, fetched = self._decode_chain(digest, stored, size, base_source, read_bases)
            else:
                data = fmt.decode(stored, size)
        except CorruptBlob as e:
            raise self._corrupt(digest, str(e), where) from None
        except BrokenChain as e:
            raise self._broken(digest, e, where) from None
        if blake3.blake3(data).hexdigest() != digest:
            raise self._corrupt(digest, "its content does not match its hash", where)
        return data, fetched

    def _decode_chain(
        self, digest: str, stored: Bytes, size: int, base_source: BaseSource | None, read_bases: list | None = None
    ) -> tuple[Bytes, int]:
        """``read_bases``: a list to which each base's (digest, stored object) is appended as read."""
        fmt = self.meta.format()
        assert fmt.deltas is not None
        max_stored = fmt.max_stored_size(size)

        def read(base: str) -> bytes:
            got = self.backend.get(blob_key(base), max_size=max_stored)
            if read_bases is not None:
                read_bases.append((base, got))
            return got

        return decode_chain(
            digest,
            stored,
            size,
            max_depth=fmt.deltas.max_depth,
            read=read,
            raw_size_of=fmt.raw_size_of,
            decode_plain=fmt.decode,
            base_source=base_source,
        )

    def get_stored_blob(
        self, digest: str, size: int, *, context: str = "", base_source: BaseSource | None = None
    ) -> tuple[bytes, Bytes]:
        """(the stored object, the chunk's raw bytes), verified as ``fetch_blob`` verifies: for
        copying a blob between repositories of the same format as it is (``put_stored_blob``).
        A delta's stored object needs its base (and marker) in the destination too."""
        where = f" (needed by {context})" if context else ""
        stored = self._get_stored(digest, self.meta.format().max_stored_size(size), where)
        return stored, self._decoded(digest, stored, size, where, base_source)[0]

    def get_stored_chain(self, digest: str, size: int, *, context: str = "") -> tuple[list[tuple[str, bytes]], Bytes]:
        """(the stored objects of the blob and of each base its chain reads, as (digest, object),
        the blob first, down to the first base stored whole; the chunk's raw bytes), for copying a
        delta (format 3) as stored together with its bases (`model copy`). Every one is verified:
        decoding the chain checks each base's raw bytes against its digest before using it, and
        the asked blob's as ``fetch_blob`` does (errors as there)."""
        where = f" (needed by {context})" if context else ""
        stored = self._get_stored(digest, self.meta.format().max_stored_size(size), where)
        chain = [(digest, stored)]
        return chain, self._decoded(digest, stored, size, where, read_bases=chain)[0]

    def put_stored_blob(self, digest: str, stored: bytes) -> None:
        """Store an object that ``get_stored_blob`` of a repository of this format returned."""
        self.backend.put(blob_key(digest), stored)

    def put_stored_delta(self, digest: str, stored: bytes, base: str) -> None:
        """Store a delta blob (format 3) as another format 3 repository stores it, its edge
        marker first (gc must never free a needed base; `repo check`: no delta without its
        marker). ``base`` must be the one its header names (ValueError: a programming error)."""
        from aim_cli.format import delta_codec

        self._format3("put_stored_delta")
        try:
            named = delta_codec.base_of(stored[: delta_codec.DELTA_HEADER_SIZE])
        except CorruptBlob:
            named = None
        if named != base:
            raise ValueError(f"blob {digest} is not a delta against {base}")
        self.edges.put_edge(base, digest)
        self.backend.put(blob_key(digest), stored)

    def read_stored_blob(self, digest: str, stored_size: int) -> int:
        """Read and verify a stored blob that no manifest may name (`repo check --read-data`):
        its raw size comes from the object itself. Returns the raw size; BlobMissingError or
        BlobCorruptError as ``fetch_blob`` (a delta's chain is decoded from this repository)."""
        fmt = self.meta.format()
        stored = self._get_stored(digest, min(stored_size, fmt.max_stored_size(mf.MAX_CHUNK_SIZE)), "")
        try:
            size = fmt.raw_size_of(stored)
        except CorruptBlob as e:
            raise self._corrupt(digest, str(e), "") from None
        if size > mf.MAX_CHUNK_SIZE:  # no chunk is larger: never decode towards what a header claims
            raise self._corrupt(digest, f"its header claims {size} bytes, more than any chunk", "")
        self._decoded(digest, stored, size, "")
        return size

    def _corrupt(self, digest: str, what: str, where: str) -> BlobCorruptError:
        return BlobCorruptError(
            f"blob {digest} in repository {self.name!r} is corrupt: {what}{where}",
            "delete that blob, then push the same files again (under a new tag) to restore it; "
            "`aim_cli repo check --read-data` lists all damage",
            digest=digest,
            reason=what,
        )

    def _broken(self, digest: str, e: BrokenChain, where: str) -> BlobCorruptError:
        """A delta that cannot be decoded is corrupt, whatever the state of its base: the blob
        asked for is the one the user's version needs."""
        if e.missing is None:
            return self._corrupt(digest, e.reason, where)
        return BlobCorruptError(
            f"blob {digest} in repository {self.name!r} is unreadable: {e.reason}{where}",
            f"it is stored as a delta against {e.missing}: push the files of a version holding that chunk "
            "again (under a new tag) to restore it; `aim_cli repo check` lists all damage",
            digest=digest,
            reason=e.reason,
        )

    # -- format 3: storing a chunk as a delta, or whole again --------------------------------------
    def put_delta(
        self, digest: str, data, base_digest: str, base_data, element_size: int, plain_size: int
    ) -> int | None:
        """Store the chunk ``data`` (raw bytes named ``digest``) as a delta against the chunk
        ``base_data`` named ``base_digest`` (the same size, already stored and durable here), if
        the delta is worth it against the chunk's plain blob of ``plain_size`` bytes
        (delta_codec.worth_storing with the repository's min_saving): then the edge marker is
        written first, the blob replaced atomically after, and the bytes stored returned. Else
        None, and nothing is written. ValueError outside a format 3 repository, for a base naming
        the chunk itself or of another size (programming errors)."""
        fmt = self._format3("put_delta")
        assert fmt.deltas is not None and fmt.codecs is not None
        if base_digest == digest:
            raise ValueError(f"chunk {digest} cannot be its own delta base")
        delta = encode_delta(data, base_data, base_digest, element_size, fmt.codecs)
        if not worth_storing(len(delta), plain_size, fmt.deltas.min_saving):
            return None
        self.edges.put_edge(base_digest, digest)  # before the blob: gc must never free a needed base
        # Durable before it replaces the whole blob, a committed version's chunk.
        self.backend.put(blob_key(digest), delta, durable=True)
        return len(delta)

    def delta_base_of(self, digest: str) -> str | None:
        """The base that blob ``digest`` is stored as a delta against, from its header; None when
        it is stored whole, is not stored, or its header is not a delta's (format 3)."""
        from aim_cli.format import delta_codec

        try:
            prefix = self.backend.get_prefix(blob_key(digest), delta_codec.DELTA_HEADER_SIZE)
        except (KeyNotFoundError, ObjectTooLargeError):
            return None
        try:
            return delta_codec.base_of(prefix)
        except CorruptBlob:
            return None

    def put_plain(self, digest: str, data, element_size: int = 1) -> int:
        """(Re)store the chunk ``data`` whole, a keyframe, replacing a delta atomically; return the
        bytes stored. Its old edge marker, if any, stays (stale: `repo optimize` removes it).
        ValueError outside a format 3 repository."""
        stored = self._format3("put_plain").encode(data, element_size)
        self.backend.put(blob_key(digest), stored, durable=True)  # it replaces a committed chunk's delta
        return len(stored)

    def _format3(self, what: str) -> RepoFormat:
        fmt = self.meta.format()
        if fmt.deltas is None:
            raise ValueError(f"{what} in repository {self.name!r} of format {fmt.version}: deltas need format 3")
        return fmt

    def has_blob(self, digest: str) -> bool:
        return self.backend.exists(blob_key(digest))

    def stored_size(self, digest: str) -> int | None:
        """The bytes the blob takes in storage, or None if it is not stored (one HEAD)."""
        return self.backend.size(blob_key(digest))

    def stored_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        """digest -> stored bytes of those of ``digests`` that are stored, asked in bulk
        (listing or parallel HEADs, whichever is cheaper)."""
        wanted = set(digests)
        index = self.stored_blob_index(len(wanted))
        if index is not None:
            return {d: index[d] for d in wanted if d in index}
        ordered = sorted(wanted)
        sizes = map_parallel(self.stored_size, ordered, self.jobs)
        return {d: n for d, n in zip(ordered, sizes, strict=True) if n is not None}

    def stored_blob_index(self, expected_lookups: int) -> dict[str, int] | None:
        """digest -> stored size of all stored blobs when listing them is cheaper than ``expected_lookups`` single
        existence checks, else None (then ask blob by blob with ``stored_size``).

        A check costs one request; a listing one request per ~1000 blobs. Like dvc's
        ``oids_exist``, estimate the number of stored blobs from one of the 256 prefixes."""
        if expected_lookups < 16:
            return None
        sample = random.choice(SHARDS)
        estimate = 256 * sum(1 for _ in self.backend.list(f"{BLOBS}{sample}/"))
        if estimate / 1000 >= expected_lookups / 4:
            return None
        return dict(self.iter_blobs())

    def missing_blobs(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the repository lacks, asked in bulk (listing or parallel checks)."""
        wanted = set(digests)
        return wanted - self.stored_sizes(wanted).keys()

    def iter_blob_keys(self) -> Iterator[tuple[str, str | None, int]]:
        """(key, digest, size) of every object below blobs/; digest None for a key that is not
        ``blobs/<h[0:2]>/<h>`` (a stray: gc never deletes it, `repo check` reports it)."""
        for info in list_objects(self.backend, BLOBS):
            yield info.key, digest_of_shard_key(info.key[len(BLOBS) :]), info.size

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        """(digest, size) of every stored blob."""
        for _, digest, size in self.iter_blob_keys():
            if digest is not None:
                yield digest, size

    def delete_blobs(self, digests: Iterable[str]) -> None:
        self.backend.delete_many(blob_key(d) for d in digests)
