"""Format 3's edge markers (repository/edges.py) on every backend: written, listed by base and
in full, deleted; strays below edges/ are named, never taken for edges."""

from __future__ import annotations

import pytest

from aim_cli.format.layout import edge_key

pytestmark = pytest.mark.format_neutral

B1, B2 = "ab" + "0" * 62, "ab" + "1" * 62
D1, D2, D3 = "cd" + "2" * 62, "ef" + "3" * 62, "01" + "4" * 62


def test_markers_list_by_base_and_in_full(repo):
    repo = repo.repository
    edges = repo.edges
    assert edges.dependents_of(B1) == set() and edges.edges() == {}
    edges.put_edge(B1, D1)
    edges.put_edge(B1, D2)
    edges.put_edge(B2, D3)  # same shard, another base: not B1's
    assert edges.dependents_of(B1) == {D1, D2}
    assert edges.dependents_of(B2) == {D3}
    assert edges.edges() == {B1: {D1, D2}, B2: {D3}}
    edges.delete_edges([(B1, D1)])
    assert edges.edges() == {B1: {D2}, B2: {D3}}


def test_a_stray_below_edges_is_named_not_taken_for_an_edge(repo):
    repo = repo.repository
    repo.edges.put_edge(B1, D1)
    stray = edge_key(B1, D1) + ".bak"
    repo.backend.put(stray, b"x")
    keys = dict(repo.edges.iter_edge_keys())
    assert keys[stray] is None and keys[edge_key(B1, D1)] == (B1, D1)
    assert repo.edges.edges() == {B1: {D1}}
