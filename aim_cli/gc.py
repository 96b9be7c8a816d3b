"""Garbage collection: free the blobs that no manifest names. Plan, then execute.

    plan_gc(repo)   read every manifest (one unreadable: refuse, gc cannot know what it names),
                    list every blob; the plan is the unreferenced ones and their bytes. Read-only.
    collect(repo)   take the exclusive lease (leases.py: wait for the pushes in progress, make later
                    ones wait), plan under it, hand the plan to ``on_plan``, then delete in batches,
                    re-checking the lease before each batch. ``dry_run`` plans without a lease (so the
                    blobs of a push in progress show as unreferenced) and deletes nothing.
    reclaimable(repo, deleted)  what deleting these versions left for gc to free.

The referenced set is computed only once the lease is held and every push lease is gone: a blob
that a push found stored and skipped is named by that push's manifest before gc reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aim_cli import leases
from aim_cli import manifest as mf
from aim_cli.errors import AimError, IntegrityError, NotFoundError
from aim_cli.store import Repository

DELETE_BATCH = 1000


@dataclass(frozen=True)
class GcPlan:
    blobs: dict[str, int]  # digest -> size: what gc deletes
    versions: int  # manifests read
    referenced: int  # distinct blobs they name
    stored: int  # blobs stored

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


def read_manifests(repo: Repository) -> tuple[list[mf.Manifest], list[tuple[str, str]]]:
    """Every manifest that can be read, and (model:tag, why) for those that cannot. A version
    deleted while we read is skipped."""

    def read(key: tuple[str, str]):
        try:
            return repo.get_version(*key).manifest
        except NotFoundError:
            return None
        except AimError as e:  # IntegrityError, or a key whose name is not valid
            return (f"{key[0]}:{key[1]}", e.message)

    keys = sorted(repo.iter_manifest_keys())
    if not keys:
        return [], []
    with ThreadPoolExecutor(max(1, min(repo.jobs, len(keys)))) as pool:
        results = list(pool.map(read, keys))
    manifests = [r for r in results if isinstance(r, mf.Manifest)]
    broken = [r for r in results if isinstance(r, tuple)]
    return manifests, broken


def referenced_blobs(manifests: Iterable[mf.Manifest]) -> dict[str, int]:
    """digest -> size of every blob the manifests name."""
    return {digest: size for m in manifests for f in m.files for digest, size in f.chunks}


def plan_gc(repo: Repository) -> GcPlan:
    manifests, broken = read_manifests(repo)
    if broken:
        names = ", ".join(name for name, _ in broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
        raise IntegrityError(
            f"gc refuses to run: {len(broken)} manifest(s) of {repo.name!r} cannot be read ({names}), so the "
            f"blobs they name are unknown", f"run `aim_cli repo check {repo.name}` and repair or delete them first")
    referenced = referenced_blobs(manifests)
    stored = dict(repo.iter_blobs())
    garbage = {d: size for d, size in stored.items() if d not in referenced}
    return GcPlan(garbage, len(manifests), len(referenced), len(stored))


def collect(repo: Repository, *, dry_run: bool = False, wait: float | None = None,
            on_plan: Callable[[GcPlan], None] | None = None) -> GcResult:
    if dry_run:
        plan = plan_gc(repo)
        if on_plan:
            on_plan(plan)
        return GcResult(plan, 0, 0, True)
    with leases.acquire(repo, leases.EXCLUSIVE, "gc", wait=wait) as lease:
        plan = plan_gc(repo)
        if on_plan:
            on_plan(plan)
        digests = sorted(plan.blobs)
        deleted = freed = 0
        for i in range(0, len(digests), DELETE_BATCH):
            lease.check()
            batch = digests[i : i + DELETE_BATCH]
            repo.delete_blobs(batch)
            deleted += len(batch)
            freed += sum(plan.blobs[d] for d in batch)
        # Temp files of killed pushes. A live push refreshes its lease, and none holds one now;
        # a file older than the lease timeout cannot belong to a push still writing.
        lease.check()
        incomplete = repo.clean_incomplete(leases.lease_timeout())
    return GcResult(plan, deleted, freed, False, incomplete)


def reclaimable(repo: Repository, deleted: Iterable[mf.Manifest]) -> tuple[int, int]:
    """(blobs, bytes) named by the ``deleted`` manifests and by no remaining readable one."""
    freed = referenced_blobs(deleted)
    if not freed:
        return 0, 0
    remaining, _ = read_manifests(repo)
    for digest in referenced_blobs(remaining):
        freed.pop(digest, None)
    return len(freed), sum(freed.values())
