"""Streaming audits (issue 9): gc, `repo check`, `model verify` and delete-version's reclaimable
bytes hold one decoded manifest at a time plus the set of chunks they name, so memory grows with
the distinct chunks, never with versions x chunks. The assertions count objects and bytes
(deterministic), never time. Also ReadAhead, the backend wrapper that reads the next manifests
while one is decoded."""

from __future__ import annotations

import gc as pygc
import json
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.audit import gc, scan
from aim_cli.audit.check import check_repo
from aim_cli.backends.local import LocalBackend
from aim_cli.backends.readahead import ReadAhead
from aim_cli.errors import KeyNotFoundError, ObjectTooLargeError, StorageError
from aim_cli.format import manifest as mf
from aim_cli.format.layout import blob_key
from aim_cli.repository import Repository
from tests.fakes import Fault, FaultyBackend, HookedBackend
from tests.helpers import commit_versions, ok, run


def _repository(tmp_path, *, jobs: int = 4) -> Repository:
    repository = Repository(LocalBackend(tmp_path / "store"), "r", jobs=jobs)
    repository.init()
    return repository


# -- ReadAhead -----------------------------------------------------------------------------------------
@pytest.fixture
def objects(tmp_path):
    backend = LocalBackend(tmp_path / "objects")
    keys = [f"k/{i:02d}" for i in range(10)]
    for i, key in enumerate(keys):
        backend.put(key, bytes([i]) * (i + 1))
    return FaultyBackend(backend), keys


def _gets(backend: FaultyBackend) -> list[str]:
    return [key for op, key, _ in backend.calls if op == "get"]


def test_read_ahead_answers_in_order_and_holds_at_most_jobs_ahead(objects):
    backend, keys = objects
    with ReadAhead(backend, keys, max_size=100, jobs=3) as ahead:
        for n, key in enumerate(keys):
            # Submitted reads run in any order, but never beyond the next ``jobs`` keys.
            assert set(_gets(backend)) <= set(keys[: n + 3])
            assert ahead.get(key, max_size=100) == bytes([n]) * (n + 1)
    assert sorted(_gets(backend)) == keys  # each read once, with the caller's bound
    assert {size for op, _, size in backend.calls if op == "get"} == {100}


def test_read_ahead_raises_what_the_read_raised_at_the_callers_get(objects):
    backend, keys = objects
    backend.inner.delete(keys[1])
    backend.faults += [Fault("get", "too_large", keys[2]), Fault("get", "storage", keys[3])]
    with ReadAhead(backend, keys, max_size=100, jobs=4) as ahead:
        assert ahead.get(keys[0], max_size=100) == b"\x00"
        with pytest.raises(KeyNotFoundError):
            ahead.get(keys[1], max_size=100)
        with pytest.raises(ObjectTooLargeError):
            ahead.get(keys[2], max_size=100)
        with pytest.raises(StorageError):
            ahead.get(keys[3], max_size=100)
        assert ahead.get(keys[4], max_size=100) == b"\x04" * 5


def test_read_ahead_passes_other_reads_and_calls_through(objects):
    backend, keys = objects
    with ReadAhead(backend, keys[:2], max_size=100, jobs=2) as ahead:
        with pytest.raises(ObjectTooLargeError):
            ahead.get(keys[9], max_size=3)  # not read ahead: the wrapped backend's bound applies
        with pytest.raises(ObjectTooLargeError):
            ahead.get(keys[1], max_size=1)  # read ahead with another bound: read again with this one
        assert ahead.get(keys[1], max_size=100) == b"\x01\x01"
        assert ahead.exists(keys[5]) and [i.key for i in ahead.list("k/0")] != []
    assert ("get", keys[1], 1) in backend.calls


def test_audits_read_each_manifest_once_on_the_read_ahead_threads(tmp_path):
    repository = _repository(tmp_path)
    commit_versions(repository, "m", [f"v{i:02d}" for i in range(10)], chunks=20)
    reads: list[tuple[str, str]] = []  # (key, thread) of every manifest read

    def record(op: str, key: str) -> None:
        if op == "get" and key.startswith("models/") and "/versions/" in key:  # not the small summaries
            reads.append((key, threading.current_thread().name))

    audited = Repository(HookedBackend(repository.backend, before=record), "r", jobs=3)
    for audit in (gc.plan_gc, check_repo):
        reads.clear()
        audit(audited)
        assert sorted(key for key, _ in reads) == [f"models/m/versions/v{i:02d}.json" for i in range(10)]
        assert all(thread.startswith("aim-readahead") for _, thread in reads), reads


# -- memory: one manifest at a time --------------------------------------------------------------------
def _live_manifests() -> int:
    # type(), not isinstance(): the heap may hold weak proxies whose object is gone.
    return sum(1 for o in pygc.get_objects() if type(o) is mf.Manifest)


def _count_manifests_at_each_decode(monkeypatch) -> list[int]:
    """From now on, the Manifest objects alive right after each decode (the repository decodes through
    mf.decode), appended to the list returned."""
    seen: list[int] = []
    decode = mf.decode

    def counting(data, *, where):
        manifest = decode(data, where=where)
        seen.append(_live_manifests())
        return manifest

    monkeypatch.setattr(mf, "decode", counting)
    return seen


AUDITS = {  # each over a repository, with a manifest decoded beforehand (the deleted one, for reclaimable)
    "gc plan": lambda r, _: gc.plan_gc(r),
    "check": lambda r, _: check_repo(r),
    "check, damaged (second pass)": lambda r, _: check_repo(r),
    "reclaimable": lambda r, deleted: gc.reclaimable(r, scan.referenced_blobs([deleted])),
    "model delete": lambda r, _: r.delete_model("m"),  # what it deleted, folded one manifest at a time
}


@pytest.mark.parametrize("audit", AUDITS)
def test_audits_keep_no_manifest_alive(tmp_path, monkeypatch, audit):
    repository = _repository(tmp_path)
    shared = commit_versions(repository, "m", [f"v{i:02d}" for i in range(12)], chunks=40, unique=2)
    if "damaged" in audit:
        repository.backend.delete(blob_key(shared[0]))
    deleted = repository.get_version("m", "v00").manifest
    pygc.collect()
    baseline = _live_manifests()
    count_manifests = _count_manifests_at_each_decode(monkeypatch)
    result = AUDITS[audit](repository, deleted)
    assert len(count_manifests) >= 12  # every manifest was read (twice when damaged)
    assert max(count_manifests) - baseline <= 1, count_manifests  # the one just decoded, never more
    if "damaged" in audit:
        [problem] = result.problems
        assert problem.problem == "missing" and len(problem.used_by) == 10  # found by the second pass
        assert problem.used_by_omitted == 2  # the files past the first ten are counted, not listed
        assert len(count_manifests) == 24


def _peak(fn) -> int:
    pygc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("audit", ["gc plan", "check"])
def test_audit_memory_grows_with_distinct_chunks_not_with_versions(tmp_path, monkeypatch, audit):
    """Twelve times the versions over the same chunks: the peak grows by less than three decoded
    manifests (keeping them, as before, grew it by 22)."""
    few, many = _repository(tmp_path / "few", jobs=1), _repository(tmp_path / "many", jobs=1)
    commit_versions(few, "m", ["v00", "v01"], chunks=3000, unique=1)
    commit_versions(many, "m", [f"v{i:02d}" for i in range(24)], chunks=3000, unique=1)
    raw = few.get_version("m", "v00").raw
    # A bounded read allocates its bound before it reads (256 MiB for a manifest): a bound near
    # the manifests' size keeps that from hiding what the audit itself holds.
    monkeypatch.setattr(mf, "MAX_MANIFEST_BYTES", len(raw) + 1000)
    one_manifest = _peak(lambda: mf.decode(raw, where="x"))
    peak_few, peak_many = _peak(lambda: AUDITS[audit](few, None)), _peak(lambda: AUDITS[audit](many, None))
    assert peak_many - peak_few < 3 * one_manifest, (peak_few, peak_many, one_manifest)


# -- results over many versions ------------------------------------------------------------------------
def test_sizes_that_manifests_disagree_on_are_reported(tmp_path):
    repository = _repository(tmp_path)
    [digest, *_] = commit_versions(repository, "m", ["v1"], chunks=5, unique=1)
    m = repository.get_version("m", "v1").manifest
    entry = next(f for f in m.files if (digest, 64) in f.chunks)
    i = entry.chunks.index((digest, 64))
    entry.chunks[i] = (digest, 63)
    entry.size -= 1
    m.total_size -= 1
    m.tag = "v2"
    repository.commit(m)
    report = check_repo(repository)
    assert [(p.digest, p.problem, p.detail) for p in report.problems] == [
        (digest, "size", "manifests disagree on its size")
    ]
    assert report.problems[0].used_by == [f"m:v1/{entry.path}", f"m:v2/{entry.path}"]


def test_gc_and_reclaimable_count_what_no_remaining_version_names(tmp_path):
    repository = _repository(tmp_path)
    shared = commit_versions(repository, "m", [f"v{i}" for i in range(6)], chunks=30, unique=3)
    repository.backend.delete(blob_key(shared[0]))  # a referenced blob gone: gc neither counts nor frees it
    v0 = repository.delete_version("m", "v0").chunks
    only_v0 = set(v0) - set(shared)
    stored = sum(size for d, size in repository.iter_blobs() if d in only_v0)
    assert gc.reclaimable(repository, v0)[:3] == (3, 3 * 64, stored)
    plan = gc.plan_gc(repository)
    assert sum(plan.blobs.values()) == stored  # what the deletion announced is what gc frees
    assert set(plan.blobs) == only_v0 and plan.versions == 5
    assert plan.referenced == plan.stored - 3 == len(shared) - 1 + 5 * 3


# -- through the console script ------------------------------------------------------------------------
def test_cli_audits_of_many_versions(tmp_path):
    config = tmp_path / "model_repos.yaml"
    config.write_text(f"repos:\n  r: {{type: local, path: {tmp_path / 'store'}}}\n")
    repository = _repository(tmp_path)
    tags = [f"v{i:02d}" for i in range(20)]
    shared = commit_versions(repository, "m", tags, chunks=60, unique=2)
    aim = ["--config", config]

    plan = json.loads(ok(run([*aim, "repo", "gc", "r", "--dry-run", "--json"], cwd=tmp_path)).stdout)
    assert (plan["deleted"], plan["versions"], plan["referenced"]) == (0, 20, 58 + 40)
    deleted = ok(run([*aim, "model", "delete-version", "r", "m", "--tag", "v00"], cwd=tmp_path)).stdout
    assert "reclaimable: 2 blobs, " in deleted and "128 Bytes of chunks)" in deleted, (
        deleted
    )  # v00's own chunks: every other one is shared

    repository.backend.delete(blob_key(shared[7]))
    check = run([*aim, "repo", "check", "r", "--json"], cwd=tmp_path)
    assert check.returncode == 5, check.stderr
    report = json.loads(check.stdout)
    [problem] = report["problems"]
    assert problem["digest"] == shared[7] and problem["problem"] == "missing"
    assert [u.split("/")[0] for u in problem["used_by"]] == [f"m:{t}" for t in tags[1:11]]  # the first ten
    assert problem["used_by_omitted"] == len(tags[11:])  # and how many more
    assert report["versions"] == 19 and report["unreferenced"] == 2


# -- chunks in place since the manifest before ------------------------------------------------------
_chunk = st.tuples(st.sampled_from(["a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64]), st.integers(1, 3))
_files = st.dictionaries(st.sampled_from(["x.bin", "y.bin", "z/w.bin"]), st.lists(_chunk, max_size=8), max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(_files, max_size=6))
def test_changed_chunks_feed_every_distinct_chunk_of_any_sequence_of_manifests(versions):
    """Skipping what is in place since the manifest before loses nothing, whatever the manifests
    hold (same paths with other chunks, insertions that shift the rest, shorter and longer lists,
    paths that come and go): what is fed is every chunk of every manifest."""
    changed = scan.ChangedChunks()
    fed: set[tuple[str, int]] = set()
    named: set[tuple[str, int]] = set()
    for files in versions:
        m = mf.Manifest(
            mf.FORMAT,
            "m",
            "t",
            "2026-01-01T00:00:00.000000Z",
            "u@h",
            "",
            0,
            [mf.FileEntry(path, 0, 0o644, "0" * 64, chunks) for path, chunks in sorted(files.items())],
        )
        for chunks in changed.of(m):
            fed.update(chunks)
        named.update(c for f in m.files for c in f.chunks)
        assert fed == named


def test_changed_chunks_skip_what_is_in_place():
    """A near-identical version feeds only its changed chunks (the point of it)."""
    a = [(f"{i:064x}", 10) for i in range(100)]
    b = list(a)
    b[7] = ("f" * 64, 10)
    changed = scan.ChangedChunks()

    def files(chunks):
        return mf.Manifest(
            mf.FORMAT,
            "m",
            "t",
            "2026-01-01T00:00:00.000000Z",
            "u@h",
            "",
            0,
            [mf.FileEntry("w.bin", 0, 0o644, "0" * 64, chunks)],
        )

    assert list(changed.of(files(a))) == [a]
    assert list(changed.of(files(b))) == [[("f" * 64, 10)]]
    assert list(changed.of(files(b + [("e" * 64, 3)]))) == [[("e" * 64, 3)]]
