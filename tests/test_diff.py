"""`model diff`: files added, removed, changed and unchanged between two versions, and what a pull
of B into a directory holding A fetches, through the console script on both backends."""

import json
import os

import pytest

from aim_cli import api
from tests.helpers import LOCAL_ONLY, chunks_of, ok, one_line_error, random_bytes, write_file

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral

KiB = 1024


def _versions(repo):
    """v1 and v2 of model m: a changed in place (same size), b removed, e added, c unchanged,
    nested/d the same bytes with another mode."""
    a = bytearray(random_bytes(200 * KiB, 1))
    v1 = repo.tmp / "v1"
    write_file(v1 / "a.bin", bytes(a))
    write_file(v1 / "b.txt", b"removed in v2\n")
    write_file(v1 / "c.json", b'{"same": true}\n')
    write_file(v1 / "nested" / "d.sh", b"#!/bin/sh\n", 0o644)
    a[100 * KiB : 101 * KiB] = random_bytes(KiB, 2)
    v2 = repo.tmp / "v2"
    write_file(v2 / "a.bin", bytes(a))
    write_file(v2 / "c.json", b'{"same": true}\n')
    write_file(v2 / "e.bin", random_bytes(50 * KiB, 3))
    write_file(v2 / "nested" / "d.sh", b"#!/bin/sh\n", 0o755)
    repo.push("m", v1, "v1")
    repo.push("m", v2, "v2")
    return v1, v2


def _diff(repo, *args):
    return json.loads(ok(repo.cli("model", "diff", repo.name, "m", *args, "--json")).stdout)


def test_diff_lists_added_removed_changed_and_unchanged_files_with_sizes(repo):
    _versions(repo)
    d = _diff(repo, "v1", "v2")
    status = {f["path"]: f["status"] for f in d["files"]}
    assert status == {
        "a.bin": "changed",
        "b.txt": "removed",
        "c.json": "unchanged",
        "e.bin": "added",
        "nested/d.sh": "changed",
    }
    by_path = {f["path"]: f for f in d["files"]}
    assert by_path["e.bin"]["size_a"] is None and by_path["e.bin"]["size_b"] == 50 * KiB
    assert by_path["b.txt"]["size_b"] is None and by_path["b.txt"]["size_a"] == len(b"removed in v2\n")
    assert (by_path["nested/d.sh"]["mode_a"], by_path["nested/d.sh"]["mode_b"]) == (0o644, 0o755)
    assert d["totals"]["added"] == {"files": 1, "bytes_a": 0, "bytes_b": 50 * KiB}
    assert d["totals"]["changed"]["files"] == 2 and d["totals"]["unchanged"]["files"] == 1
    assert d["changed_bytes"] == 200 * KiB + 50 * KiB + len(b"#!/bin/sh\n")
    assert d["identical"] is False
    assert d["digest_a"] != d["digest_b"]

    # The fetch: exactly the chunks of v2 that v1 lacks, at their stored sizes.
    m1, m2 = repo.manifest("m", "v1"), repo.manifest("m", "v2")
    new = {dg: s for dg, s in chunks_of(m2).items() if dg not in chunks_of(m1)}
    stored = repo.blobs()
    assert new and d["fetch"] == {
        "chunks": len(new),
        "raw_bytes": sum(new.values()),
        "stored_bytes": sum(stored[dg] for dg in new),
        "unstored_chunks": 0,
    }

    text = ok(repo.cli("model", "diff", repo.name, "m", "v1", "v2")).stdout
    assert "added" in text and "e.bin" in text and "(mode 644 -> 755)" in text
    assert f"fetches {len(new)} chunks" in text


def test_the_fetch_estimate_bounds_what_a_pull_of_b_over_a_fetches(repo):
    v1, _ = _versions(repo)
    write_file(v1 / "added.bin", random_bytes(60 * KiB, 4))
    repo.push("m", v1, "v3")  # v1 plus a file: every other chunk of v3 is one of v1's
    dest = repo.tmp / "dest"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v1", "--quiet"))
    pulled = json.loads(ok(repo.cli("model", "pull", repo.name, "m", str(dest), "--tag", "v3", "--json")).stdout)
    d = _diff(repo, "v1", "v3")
    assert (d["fetch"]["stored_bytes"], d["fetch"]["chunks"]) == (pulled["fetched_bytes"], pulled["fetched_chunks"])
    # From manifests alone the estimate is an upper bound: a pull also finds in place the bytes
    # of chunks whose boundaries moved (a.bin's chunks after its edit are new, their bytes not).
    dest2 = repo.tmp / "dest2"
    ok(repo.cli("model", "pull", repo.name, "m", str(dest2), "--tag", "v1", "--quiet"))
    pulled = json.loads(ok(repo.cli("model", "pull", repo.name, "m", str(dest2), "--tag", "v2", "--json")).stdout)
    d = _diff(repo, "v1", "v2")
    assert 0 < pulled["fetched_bytes"] <= d["fetch"]["stored_bytes"]


def test_patterns_select_the_files_of_both_versions(repo):
    _versions(repo)
    d = _diff(repo, "v1", "v2", "--include", "nested/", "--include", "*.bin", "--exclude", "e.*")
    assert [f["path"] for f in d["files"]] == ["a.bin", "nested/d.sh"]
    assert d["include"] == ["nested/", "*.bin"] and d["exclude"] == ["e.*"]
    # Without e.bin the fetch is a.bin's changed chunks only.
    m1, m2 = repo.manifest("m", "v1"), repo.manifest("m", "v2")
    a1 = {dg for f in m1.files if f.path == "a.bin" for dg, _ in f.chunks}
    a2 = {dg: s for f in m2.files if f.path == "a.bin" for dg, s in f.chunks}
    assert d["fetch"]["raw_bytes"] == sum(s for dg, s in a2.items() if dg not in a1)
    # A pattern matching a removed file counts: it matches a file of either version.
    assert [f["status"] for f in _diff(repo, "v1", "v2", "--include", "b.txt")["files"]] == ["removed"]


def test_an_include_matching_no_file_is_exit_2_and_an_unmatched_exclude_a_warning(repo):
    _versions(repo)
    res = repo.cli("model", "diff", repo.name, "m", "v1", "v2", "--include", "*.gguf")
    one_line_error(res, 2, "'*.gguf'", "matches no file")
    res = ok(repo.cli("model", "diff", repo.name, "m", "v1", "v2", "--exclude", "*.gguf"))
    assert "warning" in res.stderr and "'*.gguf'" in res.stderr


def test_an_unknown_tag_or_model_is_exit_3(repo):
    _versions(repo)
    one_line_error(repo.cli("model", "diff", repo.name, "m", "v1", "v9"), 3, "'v9'")
    one_line_error(repo.cli("model", "diff", repo.name, "m", "v9", "v2"), 3, "'v9'")
    one_line_error(repo.cli("model", "diff", repo.name, "nope", "v1", "v2"), 3, "'nope'")


@LOCAL_ONLY
def test_identical_files_diff_to_nothing_and_exit_0(repo):
    v1, _ = _versions(repo)
    repo.push("m", v1, "v1-again")
    d = _diff(repo, "v1", "v1-again")
    assert d["identical"] is True and d["changed_bytes"] == 0
    assert d["fetch"] == {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0, "unstored_chunks": 0}
    assert d["digest_a"] != d["digest_b"]  # another push: another created_at


@LOCAL_ONLY
def test_a_chunk_missing_from_storage_is_counted_not_fatal(repo):
    _versions(repo)
    m1, m2 = repo.manifest("m", "v1"), repo.manifest("m", "v2")
    gone = next(dg for dg in chunks_of(m2) if dg not in chunks_of(m1))
    repo.delete_blob(gone)
    d = _diff(repo, "v1", "v2")
    assert d["fetch"]["unstored_chunks"] == 1
    assert "not stored" in ok(repo.cli("model", "diff", repo.name, "m", "v1", "v2")).stdout


@LOCAL_ONLY
def test_the_python_api_returns_a_typed_result(repo):
    _versions(repo)
    r = api.diff(repo.name, "m", "v1", "v2", include=["*.bin"], config=str(repo.config))
    assert isinstance(r, api.DiffResult)
    assert {f.path: f.status for f in r.files} == {"a.bin": "changed", "e.bin": "added"}
    assert r.totals["added"].bytes_b == 50 * KiB and not r.identical
    assert os.path.basename(r.repo) == repo.name
