"""`repo check` of format 3's delta edges: the edge markers against the blob headers.

Every stored blob's first 48 bytes are read (one ranged read each, ``jobs`` at a time): its
header says whether it is a delta and against which base (delta_codec.base_of). Then:

- a delta without its marker ``edges/<b[0:2]>/<b>/<d>``: damage ("edge"), since gc keeps a
  base only through markers and could free it;
- a delta whose base is not stored, names itself, or whose chain of bases (followed through the
  headers) loops or is longer than aim-repo.json's ``max_depth``: damage ("chain"), it cannot be
  decoded; a header that is no blob's: "corrupt";
- a marker whose dependent is stored whole, or is a delta against another base: stale, a note
  (it keeps its base alive until `repo optimize` removes it); a marker whose dependent is not
  stored: a note (`repo gc` removes it);
- a key below edges/ that is no marker's, or any key there in a format 1 or 2 repository: a
  stray, reported as broken and never deleted.

Why every blob's header and not only those of the dependents markers name: a delta without its
marker is found only by reading it, and in a repository of checkpoints nearly every chunk but the
newest version's is a delta, so the dependents are most of the blobs anyway. Measured on this
project's 2-core machine (docs/design.md §9): a header costs about as much as a listed key
locally, and a round trip on S3, spread over ``jobs`` connections.

Races with a re-encoder (check takes no lease): the headers are read before edges/ is listed, and
a marker is written before its delta, so a delta seen in a header has its marker listed. A
re-encoder that moves a delta to a new base after its header was read deletes the old marker
after the new delta lands: a delta whose marker the listing lacks is read again, and only a
delta whose current base has no marker is damage.
"""

from __future__ import annotations

from dataclasses import dataclass

from aim_cli.audit.edges import EdgeListing
from aim_cli.errors import KeyNotFoundError
from aim_cli.format import delta_codec
from aim_cli.format.blob_codec import CorruptBlob
from aim_cli.format.layout import blob_key, edge_key
from aim_cli.format.repo_format import RepoFormat
from aim_cli.repository import Repository
from aim_cli.repository.parallel import map_bounded

#: The problems of a blob's edges (a blob can have them and decode, or not): `--read-data` still decodes it.
EDGE_PROBLEMS = ("edge", "chain")
Header = tuple[str | None, str | None] | None  # (base or None for a plain blob, why corrupt), None: gone


@dataclass
class EdgeCounts:
    deltas: int = 0  # blobs stored as deltas
    markers: int = 0  # edge markers listed
    stale_markers: int = 0  # dependent stored whole, or a delta against another base
    dangling_markers: int = 0  # dependent not stored


def _header(repo: Repository, digest: str) -> Header:
    try:
        prefix = repo.backend.get_prefix(blob_key(digest), delta_codec.DELTA_HEADER_SIZE)
    except KeyNotFoundError:
        return None  # collected since it was listed
    try:
        return delta_codec.base_of(prefix), None
    except CorruptBlob as e:
        return None, str(e)


def check_edges(
    repo: Repository,
    fmt: RepoFormat,
    stored: dict[str, int],
    bad: dict[str, tuple[str, str]],
    broken: list[tuple[str, str]],
    jobs: int,
) -> EdgeCounts:
    """Judge the edges of ``repo`` (module docstring): damage goes to ``bad`` (digest ->
    (problem, detail)), strays to ``broken``; the notes are counted."""
    if fmt.deltas is None:
        for key, _ in repo.edges.iter_edge_keys():
            broken.append(
                (
                    key,
                    f"below edges/ in a format {fmt.version} repository, which holds no delta; remove it "
                    "from the storage by hand",
                )
            )
        return EdgeCounts()
    base_of: dict[str, str] = {}
    for digest, header in map_bounded(
        lambda d: _header(repo, d), sorted(d for d in stored if d not in bad), jobs, "aim-check-headers"
    ):
        if header is None:
            continue
        base, why = header
        if why is not None:
            bad[digest] = ("corrupt", why)
        elif base is not None:
            base_of[digest] = base
    listing = EdgeListing.read(repo)  # after the headers: a delta read there has its marker listed
    broken += [(key, "not an edge marker aim_cli writes; remove it from the storage by hand") for key in listing.strays]
    for digest, base in sorted(base_of.items()):
        problem = _delta_problem(repo, digest, base, stored, listing, base_of, fmt)
        if problem is not None:
            bad[digest] = problem
    counts = EdgeCounts(len(base_of), listing.count)
    for base, dependent in listing.pairs():
        if dependent not in stored:
            counts.dangling_markers += 1
        elif base_of.get(dependent) != base:
            counts.stale_markers += 1
    return counts


def _delta_problem(
    repo: Repository,
    digest: str,
    base: str,
    stored: dict[str, int],
    listing: EdgeListing,
    base_of: dict[str, str],
    fmt: RepoFormat,
) -> tuple[str, str] | None:
    if base == digest:
        return "corrupt", "it names itself as its base"
    if base not in stored:
        return "chain", f"a delta against {base}, which is not stored: it cannot be decoded"
    if base not in listing.bases.get(digest, ()) and not _marked_now(repo, digest):
        return "edge", (
            f"a delta against {base} without its edge marker {edge_key(base, digest)}: `repo gc` could free its base"
        )
    assert fmt.deltas is not None
    depth, seen, link = 1, {digest}, base
    while link in base_of:  # the chain through the headers read
        link = base_of[link]
        depth += 1
        if link in seen:
            return "chain", "its chain of bases loops back to a blob of the chain: it cannot be decoded"
        seen.add(link)
        if depth > fmt.deltas.max_depth:
            return "chain", f"its chain of bases is longer than max_depth {fmt.deltas.max_depth}: it cannot be decoded"
    return None


def _marked_now(repo: Repository, digest: str) -> bool:
    """Whether the delta's header, read again, names a base whose marker exists (a re-encoder
    moved it to a new base since its header was read); a blob now whole needs no marker."""
    header = _header(repo, digest)
    if header is None or header[1] is not None:
        return header is None  # gone: nothing to judge; corrupt now: judged by the next check
    base = header[0]
    return base is None or repo.backend.exists(edge_key(base, digest))
