"""`model diff`: what changed between two versions of a model, read from their two manifests.

Files are matched by path: a path only in B is *added*, only in A *removed*; a path in both is
*unchanged* when its size, mode and whole-file BLAKE3 agree, else *changed*. ``--include`` /
``--exclude`` (patterns.py) select the files of both versions alike.

The cost of the update is counted by chunk: the distinct chunks of B's selected files that none
of A's selected files holds are what a pull of B into a directory holding A's files fetches.
Their raw size comes from B's manifest; the bytes a pull downloads are what storage holds for
them (format 2 compresses), asked in bulk (``Repository.stored_sizes``: one listing or a HEAD
per chunk). No blob is read. From manifests alone this is an upper bound: a pull checks B's
chunks against the bytes at the same offset of the file already there, so after an in-place
edit it also keeps the chunks whose boundaries moved but whose bytes did not (the chunk after
an edit is a new chunk over the same bytes); with files only added, removed or rewritten it is
exact (tests/test_diff.py checks both against a real pull).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aim_cli.format import manifest as mf
from aim_cli.repository import Repository
from aim_cli.util.patterns import PathFilter

log = logging.getLogger(__name__)

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"
STATUSES = (ADDED, REMOVED, CHANGED, UNCHANGED)


@dataclass(frozen=True)
class FileDiff:
    """One path of either version. Sizes and modes are None on the side that lacks the file."""

    path: str
    status: str  # one of STATUSES
    size_a: int | None
    size_b: int | None
    mode_a: int | None
    mode_b: int | None


@dataclass(frozen=True)
class Totals:
    """Files of one status and their bytes in A and in B (0 on the side that lacks them)."""

    files: int = 0
    bytes_a: int = 0
    bytes_b: int = 0


@dataclass(frozen=True)
class FetchEstimate:
    """What a pull of B into a directory holding A fetches, at most: the distinct chunks of B's
    selected files that A's selected files lack (see the module docstring)."""

    chunks: int
    raw_bytes: int  # their size as chunks
    stored_bytes: int  # what storage holds for them: the bytes a pull downloads
    unstored_chunks: int  # of them, not stored at all (a pull would fail; `aim_cli repo check`)


@dataclass(frozen=True)
class DiffResult:
    repo: str
    model: str
    tag_a: str
    tag_b: str
    digest_a: str
    digest_b: str
    files: list[FileDiff]  # every selected path of either version, sorted
    totals: dict[str, Totals]  # status -> Totals, every status present
    changed_bytes: int  # B's bytes in added and changed files: what A does not hold as a whole file
    fetch: FetchEstimate
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """No selected file added, removed or changed (the digests may still differ: the
        manifests' dates and messages do)."""
        return all(f.status == UNCHANGED for f in self.files)


def _status(a: mf.FileEntry | None, b: mf.FileEntry | None) -> str:
    if a is None:
        return ADDED
    if b is None:
        return REMOVED
    return UNCHANGED if (a.size, a.mode, a.blake3) == (b.size, b.mode, b.blake3) else CHANGED


def _file_diff(path: str, a: mf.FileEntry | None, b: mf.FileEntry | None) -> FileDiff:
    def field_of(entry: mf.FileEntry | None, name: str) -> int | None:
        return None if entry is None else getattr(entry, name)

    return FileDiff(
        path, _status(a, b), field_of(a, "size"), field_of(b, "size"), field_of(a, "mode"), field_of(b, "mode")
    )


def _totals(files: list[FileDiff]) -> dict[str, Totals]:
    totals = {s: Totals() for s in STATUSES}
    for f in files:
        t = totals[f.status]
        totals[f.status] = Totals(t.files + 1, t.bytes_a + (f.size_a or 0), t.bytes_b + (f.size_b or 0))
    return totals


def fetch_estimate(repo: Repository, a: list[mf.FileEntry], b: list[mf.FileEntry]) -> FetchEstimate:
    """The chunks of files ``b`` that files ``a`` do not hold, with what storage holds for them."""
    held = {d for f in a for d, _ in f.chunks}
    needed = {d: size for f in b for d, size in f.chunks if d not in held}
    stored = repo.stored_sizes(needed)
    return FetchEstimate(len(needed), sum(needed.values()), sum(stored.values()), len(needed) - len(stored))


def diff(
    repo: Repository,
    model: str,
    tag_a: str,
    tag_b: str,
    *,
    paths: PathFilter | None = None,
    warn: Callable[[str], None] = log.warning,
) -> DiffResult:
    """Compare ``model:tag_a`` with ``model:tag_b``, each a tag or an alias (VersionNotFoundError,
    exit 3, for either unknown). An include matching no file of either version is a UsageError (exit 2); an
    exclude matching none is a ``warn``ing."""
    paths = paths or PathFilter()
    ref_a = repo.resolve_version(model, tag_a, None)[0]  # a tag, or an alias: then its tag
    ref_b = repo.resolve_version(model, tag_b, None)[0]
    by_path_a = {f.path: f for f in ref_a.manifest.files}
    by_path_b = {f.path: f for f in ref_b.manifest.files}
    every = sorted(by_path_a.keys() | by_path_b.keys())
    paths.check(every, warn)
    selected = [p for p in every if paths.selects(p)]
    files = [_file_diff(p, by_path_a.get(p), by_path_b.get(p)) for p in selected]
    fetch = fetch_estimate(
        repo, [by_path_a[p] for p in selected if p in by_path_a], [by_path_b[p] for p in selected if p in by_path_b]
    )
    changed_bytes = sum(f.size_b or 0 for f in files if f.status in (ADDED, CHANGED))
    return DiffResult(
        repo.name,
        model,
        ref_a.manifest.tag,
        ref_b.manifest.tag,
        ref_a.digest,
        ref_b.digest,
        files,
        _totals(files),
        changed_bytes,
        fetch,
        list(paths.include),
        list(paths.exclude),
    )
