"""gc and deletion know format 3's delta edges (issue 18, item 6): every base of every kept blob is
kept, transitively, from one listing of edges/ and no blob body; what only garbage needs goes,
with the markers of what goes; a marker whose base is gone is reported and kept; strays below
edges/ stay; format 2 never follows edges/. Deltas are stored by hand (tests/audit/deltas.py)."""

from __future__ import annotations

import json

from aim_cli import api
from aim_cli.audit import gc
from aim_cli.audit.check import check_repo
from aim_cli.format.layout import edge_key
from aim_cli.repository import Repository
from tests.audit.deltas import NAME, delta_repo
from tests.fakes import CountingBackend
from tests.helpers import ok


def _chain(r, model: str = "m"):
    """Three versions of one tensor chunk, x1 -> x2 -> x3 (the newest whole, older ones deltas
    against the next newer one), and a chunk y every version shares. Returns (x1, x2, x3, y)."""
    y = r.chunk(0)
    x3 = r.chunk(3)
    x2 = r.chunk(2, like=x3)
    x1 = r.chunk(1, like=x2)
    for tag, x in (("v1", x1), ("v2", x2), ("v3", x3)):
        r.commit(model, tag, [x, y])
    r.as_delta(x2, x3)
    r.as_delta(x1, x2)
    return x1, x2, x3, y


def test_deleting_the_newer_versions_keeps_their_chunks_as_bases(tmp_path):
    r = delta_repo(tmp_path)
    x1, x2, x3, y = _chain(r)
    deleted = api.delete_versions(NAME, "m", ["v2"], config=str(r.config))
    # x2 is named by no version now, but v1's x1 is a delta against it: nothing to reclaim.
    assert (deleted.reclaimable_blobs, deleted.kept_as_base_blobs, deleted.kept_as_base_bytes) == (0, 1, 4096)
    deleted = api.delete_versions(NAME, "m", ["v3"], config=str(r.config))
    assert (deleted.reclaimable_blobs, deleted.kept_as_base_blobs) == (0, 1)  # x3: the base of x2, transitively

    counting = CountingBackend(r.repository.backend)
    result = gc.collect(Repository(counting, NAME))
    assert counting.gets == 0  # the edges come from the markers: no blob body was read
    assert (result.deleted, result.plan.kept_as_base, result.plan.referenced) == (0, 2, 2)
    assert result.plan.kept_as_base_bytes == sum(r.repository.stored_sizes([x2, x3]).values()) > 0
    assert r.blobs() == {x1, x2, x3, y} and r.markers() == {(x2, x1), (x3, x2)}
    assert check_repo(r.repository).ok

    # The last version goes: the whole chain is garbage, markers included.
    api.delete_versions(NAME, "m", ["v1"], config=str(r.config))
    result = gc.collect(r.repository)
    assert (result.deleted, result.plan.kept_as_base, result.markers_deleted) == (4, 0, 2)
    assert r.blobs() == set() and r.markers() == set()


def test_bases_only_garbage_needs_go_and_so_do_markers_of_deltas_not_stored(tmp_path):
    r = delta_repo(tmp_path)
    kept = r.chunk(0)
    r.commit("m", "v1", [kept])
    base = r.chunk(1)  # named by no version: the base of garbage only
    garbage_delta = r.chunk(2, like=base)
    r.as_delta(garbage_delta, base)
    r.repository.edges.put_edge(kept, "f" * 64)  # a killed writer's marker: its delta never landed
    planned = gc.plan_gc(r.repository)
    assert set(planned.blobs) == {base, garbage_delta} and planned.kept_as_base == 0
    assert set(planned.markers) == {(base, garbage_delta), (kept, "f" * 64)}
    result = gc.collect(r.repository)
    assert (result.deleted, result.markers_deleted) == (2, 2)
    assert r.blobs() == {kept} and r.markers() == set()


def test_a_marker_whose_base_is_gone_is_reported_and_kept(tmp_path):
    r = delta_repo(tmp_path)
    base = r.chunk(1)
    dependent = r.chunk(2, like=base)
    r.commit("m", "v1", [dependent])
    r.as_delta(dependent, base)
    r.repository.delete_blobs([base])  # lost by hand: the delta cannot be decoded any more
    result = gc.collect(r.repository)
    assert result.plan.missing_bases == 1 and result.plan.missing_base_examples == ((base, dependent),)
    assert result.markers_deleted == 0 and r.markers() == {(base, dependent)}
    report = check_repo(r.repository)
    assert not report.ok
    assert [(p.digest, p.problem) for p in report.problems] == [(dependent, "chain")]
    assert base in report.problems[0].detail


def test_strays_below_edges_are_never_deleted(tmp_path):
    r = delta_repo(tmp_path)
    stray = edge_key("a" * 64, "b" * 64) + ".bak"
    r.repository.backend.put(stray, b"x")
    r.repository.backend.put("edges/notes.txt", b"y")
    result = gc.collect(r.repository)
    assert result.markers_deleted == 0
    assert r.repository.backend.exists(stray) and r.repository.backend.exists("edges/notes.txt")
    report = check_repo(r.repository)
    assert sorted(name for name, _ in report.broken) == sorted(["edges/notes.txt", stray])
    assert all("not an edge marker" in why for _, why in report.broken)


def test_format_2_never_follows_edges(tmp_path):
    """edges/ has no meaning in format 2: what is there is strays, kept and reported, and keeps
    no blob alive."""
    r = delta_repo(tmp_path, version=2)
    kept = r.chunk(0)
    r.commit("m", "v1", [kept])
    base = r.chunk(1)
    r.repository.edges.put_edge(base, kept)
    result = gc.collect(r.repository)
    assert result.plan.blobs.keys() == {base} and result.plan.kept_as_base == 0 and result.markers_deleted == 0
    assert r.blobs() == {kept} and r.markers() == {(base, kept)}
    report = check_repo(r.repository)
    assert [name for name, _ in report.broken] == [edge_key(base, kept)]


def test_cli_gc_and_delete_version_say_what_was_kept_as_a_base(tmp_path):
    r = delta_repo(tmp_path)
    _chain(r)
    res = ok(r.cli("model", "delete-version", NAME, "m", "--tag", "v3"))
    assert "0 blobs" in res.stdout and "kept: 1 blob (4.0 KiB of chunks) as bases of other versions' deltas" in (
        res.stdout
    )
    res = ok(r.cli("model", "delete-version", NAME, "m", "--tag", "v2", "--json"))
    assert json.loads(res.stdout)["kept_as_base_blobs"] == 1
    res = ok(r.cli("repo", "gc", NAME, "--dry-run"))
    assert "keep 2 blobs referenced by 1 version\nplan: keep 2 unreferenced blobs" in res.stdout
    assert "as bases of kept deltas" in res.stdout
    out = json.loads(ok(r.cli("repo", "gc", NAME, "--json")).stdout)
    assert (out["deleted"], out["kept_as_base"], out["markers_deleted"], out["missing_bases"]) == (0, 2, 0, 0)
    assert out["kept_as_base_bytes"] > 0
