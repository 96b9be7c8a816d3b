"""`model copy`: versions of a model from one repository into another, byte for byte.

    resolve the versions (every version of the model, oldest first, or the named tags: an
    unknown tag is refused before anything is written)
    initialise the destination if needed (with the source's format and chunking, so that later
    pushes there cut the chunks the copied versions hold), then, under its shared lease (the
    one push takes, leases.py), version by version:
        the tag is there with the same manifest digest -> skipped
        the tag is there with another digest -> a conflict: noted, on to the next version
        the version's distinct chunks the destination lacks (asked in bulk, once per chunk per
        run) -> read from the source and verified -> stored (``jobs`` threads, at most
        2 x ``jobs`` blobs submitted at once, so memory stays bounded)
        (format 3 -> 3: under the destination's optimize lease too, a delta with its chain of
        bases, copy_deltas.py)
        sync -> lease check -> exclusive create of the manifest's exact bytes
        then each signature of the version the destination lacks, exact bytes, exclusive create
        (onto a skipped tag too: it holds the same files; never onto a conflicting one), each
        judged first as `repo check` judges it: a damaged one is left out, with a warning

The manifest is copied as stored, so its digest (what an auditor pins) is the same in both
repositories. Blobs are named by the BLAKE3 of their raw bytes in every format, so any repository
can hold any chunk: nothing is re-chunked. Between repositories of the same storage format a
blob is copied as stored, once its raw bytes are verified, and so is a plain blob between formats
2 and 3 (RepoFormat.holds_as_stored: their plain blobs are alike). A delta blob (format 3) is
copied as stored into a format 3 repository with the bases it needs (copy_deltas.py; stored
whole when the chain would be too deep there or another re-encoder holds the optimize lease),
and stored whole, decoded, into format 1 or 2. Otherwise a blob is re-encoded:
format 2 or 3 -> 1 stores the raw bytes; format 1 -> 2 or 3 compresses without a dtype hint (a format 1
repository records none, so every chunk is encoded with element size 1), which saves less on
bf16/f16 weights than a push into the format 2 repository would.

A copy that stops (a kill, a lost connection) leaves complete blobs and committed versions
only; the rerun finds them and copies the rest, signatures included. A signature is written only
after its version is committed: never one without its version. A blob that fails verification stops the copy
(IntegrityError, exit 5) before its version is committed. ``dry_run`` plans the same way and
writes nothing: no repository, no lease, no blob. ``delta`` (into format 3): after each version
is committed, push's re-encoding of the destination's newest pair (``reencodes_after_copy`` is
the policy: only when asked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

from aim_cli.copy_deltas import ChainCopier, Moved
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.errors import LockHeldError, TagExistsError, UsageError
from aim_cli.names import check_name
from aim_cli.progress import NullProgress
from aim_cli.repository import Repository, VersionRef, leases
from aim_cli.repository.parallel import map_bounded

log = logging.getLogger(__name__)

COPIED, SKIPPED, CONFLICT = "copied", "skipped", "conflict"


@dataclass(frozen=True)
class VersionCopy:
    """One version's outcome. In a dry run, COPIED means "would be copied" and the counts are
    what the copy would transfer."""

    tag: str
    digest: str  # the manifest digest, the same in both repositories once copied
    status: str  # COPIED, SKIPPED (the destination holds the same digest) or CONFLICT
    blobs: int = 0  # blobs transferred
    raw_bytes: int = 0  # their size as chunks
    read_bytes: int = 0  # what the source stores for them (what was read)
    stored_bytes: int | None = 0  # what the destination stores for them (dry run across formats: None)
    present_blobs: int = 0  # its other distinct chunks: in the destination already, or copied for an earlier version
    dst_digest: str | None = None  # a conflict: the digest the destination holds
    signatures: int = 0  # signatures stored (would be, in a dry run) that the destination lacked
    #: (signer hint, why) of each signature not copied: damaged, as `repo check` would report it
    bad_signatures: list[tuple[str, str]] = field(default_factory=list)
    deltas: int = 0  # format 3 -> 3: its blobs stored as deltas, as the source stores them
    bases_copied: int = 0  # format 3 -> 3: the bases those deltas need that no chunk of it names
    base_bytes: int = 0  # their stored bytes (a dry run: what the source stores for them)
    reencoded_chunks: int = 0  # `delta`: chunks re-encoded as deltas once it was committed


@dataclass(frozen=True)
class CopyResult:
    src: str
    dst: str
    model: str
    dry_run: bool
    src_format: int
    dst_format: int  # (a dry run into no repository yet: the format it would get)
    dst_created: bool  # the destination repository was created (dry run: would be)
    versions: list[VersionCopy]
    copied: list[str]  # tags copied (would be, in a dry run)
    skipped: list[str]  # tags the destination held with the same digest
    conflicts: list[str]  # tags the destination holds with another digest: the CLI exits 4
    blobs: int
    raw_bytes: int
    read_bytes: int
    stored_bytes: int | None
    elapsed: float
    signatures: int = 0  # signatures copied, over all versions
    bad_signatures: int = 0  # damaged signatures of the source left out (each in its version's bad_signatures)
    delta: bool = False  # asked to re-encode each copied version's predecessor as push does (`--delta`)
    deltas: int = 0  # the sums of the versions' counts
    bases_copied: int = 0
    base_bytes: int = 0
    reencoded_chunks: int = 0

    @property
    def reencoded(self) -> bool:
        """Blobs were re-encoded (the formats differ) instead of copied as stored."""
        return self.src_format != self.dst_format


def _result(
    src: Repository,
    dst: Repository,
    model: str,
    dry_run: bool,
    formats: tuple[int, int],
    created: bool,
    versions: list[VersionCopy],
    started: float,
    delta: bool,
) -> CopyResult:
    def tags(status: str) -> list[str]:
        return [v.tag for v in versions if v.status == status]

    stored = [v.stored_bytes for v in versions]
    return CopyResult(
        src.name,
        dst.name,
        model,
        dry_run,
        formats[0],
        formats[1],
        created,
        versions,
        tags(COPIED),
        tags(SKIPPED),
        tags(CONFLICT),
        sum(v.blobs for v in versions),
        sum(v.raw_bytes for v in versions),
        sum(v.read_bytes for v in versions),
        None if None in stored else sum(s or 0 for s in stored),
        time.monotonic() - started,
        sum(v.signatures for v in versions),
        sum(len(v.bad_signatures) for v in versions),
        delta,
        sum(v.deltas for v in versions),
        sum(v.bases_copied for v in versions),
        sum(v.base_bytes for v in versions),
        sum(v.reencoded_chunks for v in versions),
    )


def versions_to_copy(src: Repository, model: str, tags: Sequence[str] | None) -> list[str]:
    """The tags to copy: every version of ``model``, oldest first, or ``tags`` (each once), every
    one of which must exist (VersionNotFoundError, exit 3, before anything is written); an alias
    there names the tag it points at."""
    if not tags:
        return [s.tag for s in src.list_versions(model)]
    wanted = list(dict.fromkeys(check_name("tag", t) for t in tags))
    resolved = []
    for tag, found in zip(wanted, src.map_parallel(lambda t: src.has_version(model, t), wanted), strict=True):
        # An alias copies the version it points at (checked against its digest); neither a tag
        # nor an alias raises VersionNotFoundError naming the model or the tag.
        resolved.append(tag if found else src.resolve_version(model, tag, None)[0].manifest.tag)
    return list(dict.fromkeys(resolved))


class _Copier:
    """Copies versions one at a time. ``known`` maps each chunk the destination holds (as far as
    this run knows: asked once per chunk) to what it stores for it; None for a chunk a dry run
    would copy."""

    def __init__(
        self,
        src: Repository,
        dst: Repository,
        model: str,
        *,
        formats: tuple[int, int],
        dst_exists: bool,
        dry_run: bool,
        delta: bool,
        jobs: int,
        progress,
    ):
        self.src, self.dst, self.model = src, dst, model
        self.same_format = formats[0] == formats[1]
        self.deltas_as_stored = formats == (3, 3)  # format 3 -> 3: copy_deltas.py
        self.delta = delta
        self.dst_exists = dst_exists
        self.dry_run = dry_run
        self.jobs = jobs
        self.progress = progress
        self.known: dict[str, int | None] = {}
        self.lock = threading.Lock()

    def held_digest(self, tag: str) -> str | None:
        """The digest of the destination's version ``tag``, or None if it has none."""
        if not self.dst_exists or not self.dst.has_version(self.model, tag):
            return None
        return self.dst.get_version(self.model, tag).digest

    def missing(self, chunks: dict[str, int]) -> dict[str, int]:
        """digest -> size of ``chunks`` the destination lacks; learns what it holds of the others."""
        unknown = [d for d in chunks if d not in self.known]
        if unknown and self.dst_exists:
            self.known.update(self.dst.stored_sizes(unknown))
        return {d: chunks[d] for d in unknown if d not in self.known}

    def version(self, tag: str, lease: leases.Lease | None) -> VersionCopy:
        """The version, then (copied or skipped: the destination holds the same manifest) its signatures."""
        ref = self.src.get_version(self.model, tag)
        done = self._version(ref, tag, lease)
        if done.status == CONFLICT:
            return done  # a signature covers files: never put onto another version's
        copied, bad = self.signatures(ref, tag)
        done = replace(done, signatures=copied, bad_signatures=bad)
        if done.status == COPIED and not self.dry_run and reencodes_after_copy(self.delta):
            done = replace(done, reencoded_chunks=reencode_newest_pair(self.dst, self.model))
        return done

    def signatures(self, ref: VersionRef, tag: str) -> tuple[int, list[tuple[str, str]]]:
        """Store each signature of the version the destination lacks, exact bytes, exclusively (a
        signer's bundle is never replaced), once `repo check`'s judge accepts it (read within the
        bound the manifest gives): how many were stored (would be, in a dry run), and (hint, why)
        of each damaged one left out, whose signer a later copy from a repaired source fills."""
        hints = self.src.list_signatures(self.model, tag)
        if hints and self.dst_exists:
            held = set(self.dst.list_signatures(self.model, tag))
            hints = [h for h in hints if h not in held]
        if not hints:
            return 0, []
        from aim_cli.audit.check import read_signature
        from aim_cli.signing.bundle import max_bundle_bytes

        bound = max_bundle_bytes(ref.manifest)

        def put(hint: str) -> tuple[bool, str | None]:
            data, why = read_signature(self.src, self.model, tag, hint, bound)
            if data is None:
                return False, why  # damaged (why), or gone since it was listed (None)
            return self.dry_run or self.dst.put_signature(self.model, tag, hint, data), None

        found = self.src.map_parallel(put, hints)
        bad = [(hint, why) for hint, (_, why) in zip(hints, found, strict=True) if why is not None]
        return sum(stored for stored, _ in found), bad

    def _version(self, ref: VersionRef, tag: str, lease: leases.Lease | None) -> VersionCopy:
        held = self.held_digest(tag)
        if held is not None:
            return VersionCopy(
                tag,
                ref.digest,
                SKIPPED if held == ref.digest else CONFLICT,
                dst_digest=None if held == ref.digest else held,
            )
        chunks = {d: size for f in ref.manifest.files for d, size in f.chunks}
        missing = self.missing(chunks)
        if self.dry_run:
            return self._planned(ref, tag, chunks, missing)
        assert lease is not None  # only a dry run copies without one, and it returned above
        with self._delta_lease(missing) as delta_lease:
            chains = None
            if delta_lease is not None:
                chains = ChainCopier(self.src, self.dst, self.known, self.lock)
                chains.chunks = set(chunks)
            moved = self._transfer(tag, missing, chains)
            self.dst.sync()  # every blob durable before the manifest that names it exists
            lease.check()  # a lease judged stale may have let gc free blobs this copy found: do not commit
            if delta_lease is not None:
                delta_lease.check()
            try:
                self.dst.commit_raw(ref.raw, stored_size=sum(self.known[d] or 0 for d in chunks))
            except TagExistsError:  # another writer took the tag since we looked
                return VersionCopy(tag, ref.digest, CONFLICT, dst_digest=self.held_digest(tag))
        return VersionCopy(
            tag,
            ref.digest,
            COPIED,
            len(missing),
            sum(missing.values()),
            moved.read,
            moved.written,
            len(chunks) - len(missing),
            deltas=moved.deltas,
            bases_copied=moved.bases,
            base_bytes=moved.base_bytes,
        )

    def _delta_lease(self, missing: dict[str, int]):
        """Format 3 -> 3: the destination's optimize lease, held while deltas are copied as stored
        and until the version is committed, so that no re-encoder pairs chunks there without
        seeing their markers (a cycle). Another re-encoder holding it: None, and this version's
        deltas are stored whole (decoded), as across formats."""
        if not self.deltas_as_stored or not missing:
            return nullcontext(None)
        try:
            return leases.acquire(self.dst, leases.OPTIMIZE, "copy", wait=0)
        except LockHeldError:
            log.info("another re-encoder holds %s: this version's deltas are stored whole", self.dst.name)
            return nullcontext(None)

    def _planned(self, ref: VersionRef, tag: str, chunks: dict[str, int], missing: dict[str, int]) -> VersionCopy:
        read = sum(self.src.stored_sizes(missing).values())
        deltas, bases, base_bytes = self._planned_bases(missing) if self.deltas_as_stored else (0, 0, 0)
        self.known.update(dict.fromkeys(missing))
        return VersionCopy(
            tag,
            ref.digest,
            COPIED,
            len(missing),
            sum(missing.values()),
            read,
            read if self.same_format else None,
            len(chunks) - len(missing),
            deltas=deltas,
            bases_copied=bases,
            base_bytes=base_bytes,
        )

    def _planned_bases(self, missing: dict[str, int]) -> tuple[int, int, int]:
        """Format 3 -> 3, a dry run: (how many of ``missing`` are deltas, the bases they need that
        the destination lacks, what the source stores for those), from the blobs' 48-byte headers
        level by level (the depth rule of copy_deltas.py is left out)."""
        params = self.src.format().deltas
        assert params is not None
        frontier, seen, bases = sorted(missing), set(missing), set()
        deltas = 0
        for level in range(1 + params.max_depth):
            named = dict(zip(frontier, self.src.map_parallel(self.src.delta_base_of, frontier), strict=True))
            if level == 0:
                deltas = sum(b is not None for b in named.values())
            new = {b for b in named.values() if b is not None and b not in seen and b not in self.known}
            if new and self.dst_exists:
                held = self.dst.stored_sizes(new)
                self.known.update(held)
                new -= held.keys()
            if not new:
                break
            seen |= new
            bases |= new
            frontier = sorted(new)
        self.known.update(dict.fromkeys(bases))
        return deltas, len(bases), sum(self.src.stored_sizes(bases).values())

    def _transfer(self, tag: str, missing: dict[str, int], chains: ChainCopier | None) -> Moved:
        """Copy the ``missing`` blobs (``chains``: format 3 -> 3, deltas as stored with their bases)."""
        where = f"{self.model}:{tag}"
        self.progress.start(f"copy {where}", sum(missing.values()))
        total = Moved()
        try:
            # At most 2 x jobs blobs in flight: memory stays bounded however many there are.
            for _, moved in map_bounded(
                lambda item: self._move(*item, where, chains), missing.items(), self.jobs, "aim-copy"
            ):
                total.read += moved.read
                total.written += moved.written
                total.bases += moved.bases
                total.base_bytes += moved.base_bytes
                total.deltas += moved.deltas
        finally:
            self.progress.close()
        return total

    def _move(self, digest: str, size: int, where: str, chains: ChainCopier | None) -> Moved:
        """One blob from the source (verified) into the destination."""
        if chains is not None:
            moved = chains.move(digest, size, where)
        else:
            stored, raw = self.src.get_stored_blob(digest, size, context=where)
            if self.dst.format().holds_as_stored(self.src.format(), stored):
                self.dst.put_stored_blob(digest, stored)
                written = len(stored)
            else:
                written = self.dst.put_blob(digest, raw)  # element size 1: see the module docstring
            with self.lock:
                self.known[digest] = written
            moved = Moved(len(stored), written)
        self.progress.advance(size)
        return moved


def reencodes_after_copy(delta: bool) -> bool:
    """The policy: whether a copied version is followed by push's inline re-encoding of the
    destination's version before it. Only when asked (``delta``, `--delta`): inline re-encoding
    made push 3.6x slower than a format 2 push, and `repo optimize` does the same later."""
    return delta


def reencode_newest_pair(dst: Repository, model: str) -> int:
    """The chunks re-encoded: the destination's newest pair of ``model`` (by created_at), as
    push's inline pass (optimize.py); 0, with a log line, when another re-encoder holds the
    optimize lease (`repo optimize` does it later)."""
    from aim_cli.optimize import optimize

    try:
        return optimize(dst, models=[model], newest_pair_only=True, wait=0).reencoded
    except LockHeldError:
        log.info("another re-encoder is running: `aim_cli repo optimize` re-encodes %s's versions later", model)
        return 0


def copy(
    src: Repository,
    dst: Repository,
    model: str,
    tags: Sequence[str] | None = None,
    *,
    jobs: int = DEFAULT_JOBS,
    dry_run: bool = False,
    delta: bool = False,
    progress=None,
) -> CopyResult:
    """Copy ``tags`` of ``model`` (every version when None or empty) from ``src`` into ``dst``.
    Conflicts do not raise: they are listed in the result (``conflicts``), the other versions
    copied. ``delta`` (a format 3 destination): after each version is committed, re-encode the
    destination's version before it as deltas against it, as push does. Raises
    VersionNotFoundError for an unknown model or tag, IntegrityError for a source blob that
    fails verification, LockHeldError if the destination's lease is lost, UsageError for
    ``delta`` into a repository without deltas."""
    started = time.monotonic()
    check_name("model", model)
    src_format = src.format()  # not a repository, an unknown format: refused before anything else
    names = versions_to_copy(src, model, tags)
    dst_exists = dst.exists()
    if not dry_run:
        dst.init(like=src_format)  # like push: before the lease
    elif not dst_exists:
        dst.check_can_init()  # refused as the copy would be: nested in a repository, or not empty
    dst_version = dst.format().version if dst_exists or not dry_run else src_format.version
    formats = (src_format.version, dst_version)
    if delta and dst_version < 3:
        raise UsageError(
            f"--delta: repository {dst.name!r} has storage format {dst_version}, which stores no deltas",
            "copy without --delta, or into a format 3 repository (repo create --format 3)",
        )
    copier = _Copier(
        src,
        dst,
        model,
        formats=formats,
        dst_exists=dst_exists or not dry_run,
        dry_run=dry_run,
        delta=delta,
        jobs=jobs,
        progress=progress or NullProgress(),
    )
    if dry_run:
        versions = [copier.version(tag, None) for tag in names]
    else:
        with leases.acquire(dst, leases.SHARED, "copy") as lease:
            versions = [copier.version(tag, lease) for tag in names]
    return _result(src, dst, model, dry_run, formats, not dst_exists, versions, started, delta)
