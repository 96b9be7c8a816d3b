"""A format 3 repository's delta edges: one empty marker per edge, ``edges/<b[0:2]>/<b>/<d>``
(format/layout.py), saying that blob d is, or is about to be, stored as a delta against blob b.

Why markers: gc must keep every base of every delta it keeps without reading blob bodies, and a
pull of version N over N-1's files must find, for a chunk it wants, the deltas stored against it
without listing every edge. Keyed by the base, one LIST of ``edges_prefix(b)`` answers the second,
one listing of ``edges/`` the first; a delta's own header also names its base (decoding).

A marker is written before its delta (a killed writer leaves a marker without a delta: stale,
harmless, it only keeps its base alive until gc or `repo optimize` removes it); a delta without
its marker is damage (`repo check`), since gc could free its base.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from aim_cli.backends.base import Backend
from aim_cli.format.layout import EDGES, edge_key, edge_of_key, edges_prefix
from aim_cli.repository.keys import list_objects


class Edges:
    """The edge markers of the repository in ``backend``."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def put_edge(self, base: str, dependent: str) -> None:
        """Record that ``dependent`` is about to be stored as a delta against ``base``."""
        self.backend.put(edge_key(base, dependent), b"")

    def dependents_of(self, base: str) -> set[str]:
        """The blobs recorded as deltas against ``base`` (one listing of its prefix)."""
        found = set()
        for info in list_objects(self.backend, edges_prefix(base)):
            edge = edge_of_key(info.key)
            if edge is not None and edge[0] == base:
                found.add(edge[1])
        return found

    def iter_edge_keys(self) -> Iterator[tuple[str, tuple[str, str] | None]]:
        """(key, (base, dependent)) of every object below edges/; None for a key that is not a
        marker's (a stray: never deleted by gc, reported by `repo check`)."""
        for info in list_objects(self.backend, EDGES):
            yield info.key, edge_of_key(info.key)

    def edges(self) -> dict[str, set[str]]:
        """base -> dependents, every edge recorded (one listing of edges/)."""
        graph: dict[str, set[str]] = {}
        for _, edge in self.iter_edge_keys():
            if edge is not None:
                graph.setdefault(edge[0], set()).add(edge[1])
        return graph

    def delete_edges(self, edges: Iterable[tuple[str, str]]) -> None:
        self.backend.delete_many(edge_key(b, d) for b, d in edges)
