"""Garbage collection: free the blobs that no manifest names. Plan, then execute.

    plan_gc(repo)   read every key below models/ as a manifest, one at a time (one unreadable:
                    refuse, gc cannot know what it names), list every blob; the plan is the
                    unreferenced ones and their bytes. Read-only. Memory grows with the distinct
                    chunks, not with versions x chunks: manifests are streamed (scan.py).
                    Format 3: one listing of edges/ (audit/edges.py), no blob body read, keeps
                    every base of every kept blob, transitively ("kept as base"); the markers
                    whose dependent goes (or is not stored) go too, after the blobs; a marker whose
                    base is not stored while its dependent stays is reported (damage: the delta
                    cannot be decoded) and kept. Keys below edges/ that are no marker's are never
                    deleted (`repo check` reports them); format 1 and 2 never read edges/.
    collect(repo)   refuse a root that is not a repository (before writing anything), take the
                    exclusive lease (leases.py: wait for the pushes in progress, make later ones
                    wait), plan under it, list models/ again (a key the plan did not read stops
                    gc), hand the plan to ``on_plan``, then delete in batches,
                    re-checking the lease before each batch. ``dry_run`` plans without a lease (so the
                    blobs of a push in progress show as unreferenced) and deletes nothing.
    reclaimable(repo, deleted)  what deleting these versions left for gc to free, and what gc keeps
                    of it as bases of other versions' deltas (format 3).

The referenced set is computed only once the lease is held and every push lease is gone: a blob
that a push found stored and skipped is named by that push's manifest before gc reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from aim_cli.audit.edges import EdgeListing
from aim_cli.audit.scan import ChangedChunks, scan_manifests
from aim_cli.errors import ConflictError, IntegrityError
from aim_cli.format import manifest as mf
from aim_cli.progress import NullProgress, Progress
from aim_cli.repository import Repository, leases

DELETE_BATCH = 1000
#: The deltas without their base a plan names (their count is complete): `repo check` lists all.
MAX_MISSING_BASES = 10


@dataclass(frozen=True)
class GcPlan:
    blobs: dict[str, int]  # digest -> size: what gc deletes
    versions: int  # manifests read
    referenced: int  # stored blobs they name: what gc keeps
    stored: int  # blobs stored
    manifest_keys: frozenset[str] = frozenset()  # every key below models/ the plan read
    kept_as_base: int = 0  # unreferenced blobs kept because a kept delta's chain needs them (format 3)
    kept_as_base_bytes: int = 0  # what they take in storage
    markers: tuple[tuple[str, str], ...] = ()  # (base, dependent): edge markers gc deletes
    missing_bases: int = 0  # kept deltas whose marker names a base that is not stored (damage)
    missing_base_examples: tuple[tuple[str, str], ...] = ()  # the first MAX_MISSING_BASES of them

    @property
    def bytes(self) -> int:
        return sum(self.blobs.values())


@dataclass(frozen=True)
class GcResult:
    plan: GcPlan
    deleted: int
    freed_bytes: int
    dry_run: bool
    incomplete: tuple[int, int] = (0, 0)  # abandoned partial writes removed: (count, bytes)
    markers_deleted: int = 0  # edge markers of deleted (or never stored) deltas


class StrikeOff:
    """Removes from ``unreferenced`` every digest that the manifests it is fed name. In C, one
    probe per chunk: once a digest is struck off, the probes of its later references meet an
    emptied slot and compare no string. (Adding every reference to a set of referenced digests
    instead compares each one with the stored string: 1.6-2.7x slower over 100 manifests of 112k
    chunks.) Chunks in place since the manifest before are skipped (ChangedChunks)."""

    def __init__(self, unreferenced: set[str]) -> None:
        self.unreferenced = unreferenced
        self._changed = ChangedChunks()

    def __call__(self, manifest: mf.Manifest) -> None:
        for chunks in self._changed.of(manifest):
            self.unreferenced.difference_update(map(itemgetter(0), chunks))


def plan_gc(repo: Repository, progress: Progress | None = None) -> GcPlan:
    """What gc would delete: every blob no readable manifest names. Refuses when something below
    ``models/`` cannot be read (the blobs it names are unknown). Strays that parse as manifests
    keep their blobs, with a warning."""
    # The blobs first, then each manifest strikes off the ones it names: what is left is garbage.
    # (Listing first is safe: plan_gc runs under the exclusive lease, or deletes nothing.)
    stored = dict(repo.iter_blobs())
    unreferenced = set(stored)
    scan = scan_manifests(repo, StrikeOff(unreferenced), progress=progress)
    unreadable = scan.unreadable
    if unreadable:
        names = ", ".join(name for name, _ in unreadable[:3]) + (
            f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        )
        raise IntegrityError(
            f"gc refuses to run: {len(unreadable)} manifest(s) of {repo.name!r} cannot be read ({names}), so the "
            f"blobs they name are unknown",
            f"run `aim_cli repo check {repo.name}` and repair or delete them first",
        )
    for vk, _ in scan.strays:
        repo.warn_stray(vk)  # its blobs are kept: it parses as a manifest
    referenced = len(stored) - len(unreferenced)
    if repo.format().deltas is None:  # formats 1 and 2: anything below edges/ is a stray
        garbage = {d: stored[d] for d in unreferenced}
        return GcPlan(garbage, scan.readable, referenced, len(stored), scan.keys)
    return _with_edges(repo, stored, unreferenced, scan.readable, scan.keys)


def _with_edges(
    repo: Repository, stored: dict[str, int], unreferenced: set[str], versions: int, keys: frozenset[str]
) -> GcPlan:
    """Format 3: the plan once the bases that kept blobs' chains need are taken off the garbage."""
    edges = EdgeListing.read(repo)
    kept = edges.bases_kept((d for d in stored if d not in unreferenced), unreferenced)
    garbage = {d: stored[d] for d in unreferenced - kept}
    pairs = edges.pairs()
    markers = tuple((b, d) for b, d in pairs if d not in stored or d in garbage)
    missing = [(b, d) for b, d in pairs if b not in stored and d in stored and d not in garbage]
    return GcPlan(
        garbage,
        versions,
        len(stored) - len(unreferenced),
        len(stored),
        keys,
        kept_as_base=len(kept),
        kept_as_base_bytes=sum(stored[d] for d in kept),
        markers=markers,
        missing_bases=len(missing),
        missing_base_examples=tuple(missing[:MAX_MISSING_BASES]),
    )


def confirm_listing(repo: Repository, plan: GcPlan) -> None:
    """Refuse to delete when a second listing of ``models/`` shows a key the plan never read.

    Under the exclusive lease no push commits, so a new key means that the first listing missed
    it (a flaky listing, a skipped page) or that a writer ignored the lease: either way the plan
    may hold blobs it names. This catches a miss in either of two listings; a manifest that
    every listing misses cannot be detected by any reader: gc trusts a listing that does not
    fail to be complete, as restic and kopia do (S3 and local directories list consistently)."""
    new = sorted({vk.key for vk in repo.iter_version_keys()} - plan.manifest_keys)
    if new:
        raise ConflictError(
            f"gc stopped before deleting anything: {len(new)} key(s) appeared below models/ of {repo.name!r} while "
            f"it held the exclusive lease (first: {new[0]}), so its listing was incomplete or a writer ignored "
            f"the lease",
            "run `aim_cli repo gc` again; if it keeps happening, check the storage's listings",
        )


def collect(
    repo: Repository,
    *,
    dry_run: bool = False,
    wait: float | None = None,
    on_plan: Callable[[GcPlan], None] | None = None,
    progress: Progress | None = None,
) -> GcResult:
    # Before any lease is written: a path that holds no repository (a typo in the config) gets
    # nothing, not even locks/; a format this client does not know is refused too.
    repo.params()
    progress = progress or NullProgress()
    if dry_run:
        plan = plan_gc(repo, progress)
        if on_plan:
            on_plan(plan)
        return GcResult(plan, 0, 0, True)
    with leases.acquire(repo, leases.EXCLUSIVE, "gc", wait=wait) as lease:
        plan = plan_gc(repo, progress)
        confirm_listing(repo, plan)
        if on_plan:
            on_plan(plan)
        deleted, freed = _delete_blobs(repo, plan, lease, progress)
        # The markers after their blobs: a gc killed in between leaves markers whose dependent is
        # gone (harmless: the next gc removes them), never a delta without its marker.
        for i in range(0, len(plan.markers), DELETE_BATCH):
            lease.check()
            repo.edges.delete_edges(plan.markers[i : i + DELETE_BATCH])
        # Temp files of killed pushes. A live push refreshes its lease, and none holds one now;
        # a file older than the lease timeout cannot belong to a push still writing.
        lease.check()
        incomplete = repo.clean_incomplete(leases.lease_timeout())
    return GcResult(plan, deleted, freed, False, incomplete, len(plan.markers))


def _delete_blobs(repo: Repository, plan: GcPlan, lease, progress: Progress) -> tuple[int, int]:
    """Delete the plan's blobs in batches, checking the lease before each: (blobs, bytes) freed."""
    digests = sorted(plan.blobs)
    deleted = freed = 0
    progress.start("gc", plan.bytes)
    try:
        for i in range(0, len(digests), DELETE_BATCH):
            lease.check()
            batch = digests[i : i + DELETE_BATCH]
            repo.delete_blobs(batch)
            batch_bytes = sum(plan.blobs[d] for d in batch)
            deleted, freed = deleted + len(batch), freed + batch_bytes
            progress.advance(batch_bytes)
    finally:
        progress.close()
    return deleted, freed


class Reclaimable(NamedTuple):
    """What deleting some versions left for `repo gc` to free, and what it keeps as bases."""

    blobs: int
    chunk_bytes: int
    stored_bytes: int
    kept_as_base: int = 0  # blobs the deleted versions named that other versions' deltas need (format 3)
    kept_as_base_bytes: int = 0  # their chunk bytes


def reclaimable(repo: Repository, freed: Mapping[str, int]) -> Reclaimable:
    """What of ``freed`` (digest -> size, what deleted versions named: repository.Deleted) no
    remaining readable manifest names and, in format 3, no chain of a blob still needed reaches
    (one listing of edges/, as gc): what `repo gc` can free. The remaining manifests are streamed
    (``scan_manifests``): memory holds the deleted ones' chunks and the edges, not manifests.
    Stored sizes come from one listing or a HEAD per blob, whichever is cheaper (format 2
    compresses, so they are not the chunk sizes)."""
    if not freed:
        return Reclaimable(0, 0, 0)
    edges = EdgeListing.read(repo) if repo.format().deltas is not None else EdgeListing()
    linked = edges.digests()
    unreferenced = set(freed) | linked  # struck off below when a remaining manifest names them
    scan_manifests(repo, StrikeOff(unreferenced))
    kept = edges.bases_kept(linked - unreferenced, unreferenced) & freed.keys()
    free = (unreferenced & freed.keys()) - kept
    stored = repo.stored_sizes(free)
    return Reclaimable(
        len(free), sum(freed[d] for d in free), sum(stored.values()), len(kept), sum(freed[d] for d in kept)
    )
