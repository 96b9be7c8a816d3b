"""Format 3's delta edges as the repository-wide audits see them (gc, `repo check`, what a delete
leaves for gc): one listing of ``edges/`` (repository/edges.py), never a blob body.

    EdgeListing.read(repo)     every marker, by dependent, and the keys below edges/ that are no
                               marker's (strays: never deleted, reported by `repo check`)
    EdgeListing.bases_kept(needed, candidates)   the candidates that some needed blob's chain
                               reaches through markers, transitively

Why the markers, not the blob headers: gc must not read a blob per blob, and a marker is written
before its delta, so a delta that exists always has its marker (a delta without one is damage:
`repo check`). A stale marker (its dependent stored whole, or a delta against another base)
keeps its base alive until `repo optimize` removes it: harmless, a little space.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aim_cli.repository import Repository


@dataclass
class EdgeListing:
    """The markers of one listing of edges/: dependent -> its bases (a dependent re-encoded
    against a new base has two markers until the old one is removed), and the strays."""

    bases: dict[str, set[str]] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)
    count: int = 0  # markers listed

    @classmethod
    def read(cls, repo: Repository) -> EdgeListing:
        listing = cls()
        for key, edge in repo.edges.iter_edge_keys():
            if edge is None:
                listing.strays.append(key)
            else:
                base, dependent = edge
                listing.bases.setdefault(dependent, set()).add(base)
                listing.count += 1
        listing.strays.sort()
        return listing

    def pairs(self) -> list[tuple[str, str]]:
        """(base, dependent) of every marker, sorted."""
        return sorted((b, d) for d, bases in self.bases.items() for b in bases)

    def digests(self) -> set[str]:
        """Every blob a marker names, as base or dependent."""
        return set(self.bases).union(*self.bases.values())

    def bases_kept(self, needed: Iterable[str], candidates: set[str]) -> set[str]:
        """The members of ``candidates`` (blobs otherwise free to go) that a chain of markers
        from a ``needed`` blob reaches: needed blob -> its bases -> theirs, and so on. A
        candidate reached this way is needed too, so its own bases are followed (the bases of a
        blob that is not a candidate are walked only if it is in ``needed``). Each blob is
        visited once: cycles (damage, `repo check` reports them) end the walk."""
        kept: set[str] = set()
        seen: set[str] = set()
        stack = [d for d in needed if d in self.bases]
        while stack:
            dependent = stack.pop()
            if dependent in seen:
                continue
            seen.add(dependent)
            for base in self.bases.get(dependent, ()):
                if base in candidates:  # needed now: its own bases are followed in turn
                    kept.add(base)
                    stack.append(base)
        return kept
