"""Push, pull and gc over a backend that fails, truncates, pads, corrupts and mis-lists on purpose
(tests/helpers.py FaultyBackend, wrapping a real local or S3 backend), through the library.

What must hold whatever the storage does:
- push: a failing write aborts the push before its manifest exists (the manifest is the commit).
- pull: a short, oversized or corrupt object is an IntegrityError (exit 5) naming the blob, and no
  file stands under its final name unless it is complete and verified.
- gc: nothing a readable version names is ever deleted. A listing that fails, or that misses a
  manifest in one of gc's two listings, stops gc before it deletes anything; a listing that adds
  entries, or misses blobs, only makes gc free less. The limit, written down in gc.py: a manifest
  that *every* listing silently misses is invisible to any reader, so its blobs are garbage to
  gc; the last test pins exactly that behaviour, so that a change to it is a decision.
- every read from storage is bounded by what the reader expects.
"""

from __future__ import annotations

import re

import pytest

from aim_cli import push as pushmod
from aim_cli.audit import gc, verify
from aim_cli.audit.check import check_repo
from aim_cli.backends.local import LocalBackend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.errors import BlobCorruptError, ConflictError, IntegrityError, StorageError
from aim_cli.format import layout, summary
from aim_cli.format import manifest as mf
from aim_cli.format.layout import blob_key, manifest_key
from aim_cli.pull import pipeline as pullmod
from aim_cli.repository import Repository, leases
from tests.fakes import Fault, FaultyBackend
from tests.helpers import BACKENDS, chunks_of, make_variant_model

PARAMS = ChunkingParams.for_average(4096)


@pytest.fixture(params=BACKENDS)
def inner(request, tmp_path):
    """A real, empty backend: a directory, or a prefix of a fresh bucket."""
    if request.param == "local":
        backend = LocalBackend(tmp_path / "store")
    else:
        from aim_cli.backends.s3.backend import S3Backend
        from tests.s3_fixtures import s3_location, s3_region

        endpoint, bucket = s3_location(request, request.param)
        backend = S3Backend(bucket, "repo", endpoint_url=endpoint, region=s3_region())
    yield backend
    backend.close()


def faulty(inner, *faults: Fault) -> tuple[Repository, FaultyBackend]:
    backend = FaultyBackend(inner, *faults)
    return Repository(backend, "faulty", jobs=4), backend


def pushed(inner, tmp_path, *versions: int) -> Repository:
    """A repository holding m:v<i> for each variant i (variants share most chunks)."""
    repo = Repository(inner, "plain", jobs=4)
    for i in versions:
        pushmod.push(repo, "m", f"v{i}", make_variant_model(tmp_path / f"src{i}", variant=i), params=PARAMS)
    return repo


# -- push ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["storage", "connection"])
@pytest.mark.parametrize(
    "op, pattern, nth", [("put", "blobs/*", 5), ("put_if_absent", "models/*", 1)], ids=["blob-put", "manifest-create"]
)
def test_a_failing_write_aborts_push_before_the_manifest_exists(inner, tmp_path, kind, op, pattern, nth):
    Repository(inner).init(PARAMS)
    repo, backend = faulty(inner, Fault(op, kind, pattern, nth=nth))
    src = make_variant_model(tmp_path / "src")
    with pytest.raises((StorageError, ConnectionResetError)):
        pushmod.push(repo, "m", "v1", src, jobs=4)
    assert backend.struck and backend.struck[0][0] == op
    assert not inner.exists(manifest_key("m", "v1"))
    assert [i.key for i in inner.list("models/")] == []
    assert leases.read_leases(repo) == []  # released on the way out
    # Nothing half-done blocks the rerun, which completes the version.
    pushmod.push(Repository(inner, "plain"), "m", "v1", src)
    assert verify.verify_version(Repository(inner), Repository(inner).get_version("m", "v1")).ok


def test_a_failing_blob_listing_aborts_push(inner, tmp_path):
    Repository(inner).init(PARAMS)
    repo, _ = faulty(inner, Fault("list", "storage", "blobs/*", times=None))
    src = make_variant_model(tmp_path / "src", size=400_000)  # enough chunks that push lists blobs/
    with pytest.raises(StorageError):
        pushmod.push(repo, "m", "v1", src, jobs=4)
    assert not inner.exists(manifest_key("m", "v1"))


# -- pull ---------------------------------------------------------------------------------------
def _final_files_are_verified(dest, src) -> list[str]:
    """The files under their final names in ``dest``; each must equal the source's."""
    found = sorted(p.name for p in dest.iterdir() if p.is_file()) if dest.exists() else []
    for name in found:
        assert (dest / name).read_bytes() == (src / name).read_bytes(), name
    return found


@pytest.mark.parametrize("kind", ["short", "long", "too_large", "corrupt"])
def test_a_bad_blob_read_fails_pull_with_an_integrity_error(inner, tmp_path, kind):
    plain = pushed(inner, tmp_path, 1)
    weights = next(f for f in plain.get_version("m", "v1").manifest.files if f.path == "weights.bin")
    bad = weights.chunks[3][0]
    repo, backend = faulty(inner, Fault("get", kind, blob_key(bad), arg=4096))
    dest = tmp_path / "dest"
    with pytest.raises(BlobCorruptError) as err:
        pullmod.pull(repo, "m", dest, tag="v1", jobs=2)
    assert err.value.exit_code == 5 and err.value.digest == bad
    assert ("get", blob_key(bad), kind) in backend.struck
    assert "weights.bin" not in _final_files_are_verified(dest, tmp_path / "src1")
    # The rerun over a sound link completes it.
    pullmod.pull(plain, "m", dest, tag="v1")
    assert _final_files_are_verified(dest, tmp_path / "src1") == ["config.json", "weights.bin"]


@pytest.mark.parametrize("kind", ["storage", "connection"])
def test_a_failing_blob_read_fails_pull_and_leaves_no_wrong_file(inner, tmp_path, kind):
    plain = pushed(inner, tmp_path, 1)
    repo, _ = faulty(inner, Fault("get", kind, "blobs/*", nth=6))
    dest = tmp_path / "dest"
    with pytest.raises((StorageError, ConnectionResetError)):
        pullmod.pull(repo, "m", dest, tag="v1", jobs=2)
    assert "weights.bin" not in _final_files_are_verified(dest, tmp_path / "src1")
    assert plain.get_version("m", "v1")  # the repository is untouched


@pytest.mark.parametrize("kind", ["short", "long", "too_large", "corrupt"])
def test_a_bad_manifest_read_fails_pull_before_any_file(inner, tmp_path, kind):
    pushed(inner, tmp_path, 1)
    repo, _ = faulty(inner, Fault("get", kind, "models/*", arg=10))
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as err:
        pullmod.pull(repo, "m", dest, tag="v1")
    assert err.value.exit_code == 5 and "m:v1" in err.value.message
    assert _final_files_are_verified(dest, tmp_path / "src1") == []


# -- gc -----------------------------------------------------------------------------------------
def _only(repo: Repository, tag: str, *others: str) -> dict[str, int]:
    """The blobs of ``tag`` that none of ``others`` names."""
    mine = chunks_of(repo.get_version("m", tag).manifest)
    for other in others:
        for digest in chunks_of(repo.get_version("m", other).manifest):
            mine.pop(digest, None)
    return mine


def test_a_manifest_missed_by_one_listing_stops_gc_before_any_delete(inner, tmp_path):
    plain = pushed(inner, tmp_path, 1, 2)
    before = dict(plain.iter_blobs())
    repo, backend = faulty(inner, Fault("list", "miss", "models/*", arg="*/v2.json"))  # the first listing only
    with pytest.raises(ConflictError, match=re.escape("models/m/versions/v2.json")):
        gc.collect(repo)
    assert ("list", "models/", "miss") in backend.struck
    assert dict(plain.iter_blobs()) == before
    assert leases.read_leases(plain) == []


def test_a_manifest_missed_by_the_second_listing_stops_gc_too(inner, tmp_path):
    """The second listing missing a key the first one saw is harmless (the plan read it); one
    missing a key the first one did not see is what the check is for: here the first misses v2,
    the second misses v1."""
    plain = pushed(inner, tmp_path, 1, 2)
    before = dict(plain.iter_blobs())
    repo, _ = faulty(
        inner,
        Fault("list", "miss", "models/*", arg="*/v2.json"),
        Fault("list", "miss", "models/*", nth=2, arg="*/v1.json"),
    )
    with pytest.raises(ConflictError):
        gc.collect(repo)
    assert dict(plain.iter_blobs()) == before


def test_listings_with_extra_entries_or_missing_blobs_only_free_less(inner, tmp_path):
    plain = pushed(inner, tmp_path, 1, 2)
    plain.delete_version("m", "v1")
    stored = dict(plain.iter_blobs())
    garbage = {d: s for d, s in stored.items() if d not in chunks_of(plain.get_version("m", "v2").manifest)}
    assert garbage
    missed = sorted(garbage)[0]
    phantom_manifest = manifest_key("m", "v9")  # listed, never stored
    phantom_blob = blob_key("0" * 64)
    repo, _ = faulty(
        inner,
        Fault("list", "extra", "models/*", times=None, arg=[phantom_manifest]),
        Fault("list", "extra", "blobs/*", times=None, arg=[phantom_blob]),
        Fault("list", "miss", "blobs/*", times=None, arg=f"*/{missed}"),
    )
    result = gc.collect(repo)
    assert set(result.plan.blobs) == (set(garbage) - {missed}) | {"0" * 64}
    left = dict(plain.iter_blobs())
    assert set(left) == set(stored) - set(garbage) | {missed}
    assert check_repo(plain, read_data=True).ok
    assert gc.collect(plain).deleted == 1  # a sound listing frees the rest


@pytest.mark.parametrize(
    "op, kind, pattern",
    [
        ("list", "storage", "blobs/*"),
        ("list", "connection", "models/*"),
        ("get", "corrupt", "models/*"),
        ("get", "too_large", "models/*"),
        ("get", "storage", "models/*"),
    ],
    ids=[
        "blob-listing-fails",
        "manifest-listing-breaks",
        "manifest-corrupt",
        "manifest-too-large",
        "manifest-read-fails",
    ],
)
def test_gc_deletes_nothing_when_it_cannot_read_everything(inner, tmp_path, op, kind, pattern):
    plain = pushed(inner, tmp_path, 1, 2)
    plain.delete_version("m", "v1")
    before = dict(plain.iter_blobs())
    repo, backend = faulty(inner, Fault(op, kind, pattern))
    with pytest.raises((IntegrityError, StorageError, ConnectionResetError)):
        gc.collect(repo)
    assert backend.struck
    assert dict(plain.iter_blobs()) == before
    assert leases.read_leases(plain) == []


def test_a_failing_delete_leaves_every_referenced_blob(inner, tmp_path):
    plain = pushed(inner, tmp_path, 1, 2)
    plain.delete_version("m", "v1")
    repo, _ = faulty(inner, Fault("delete_many", "storage", "blobs/*"))
    with pytest.raises(StorageError):
        gc.collect(repo)
    report = check_repo(plain, read_data=True)
    assert report.ok and report.versions == 1


def test_a_manifest_every_listing_misses_is_invisible_to_gc(inner, tmp_path):
    """The documented limit (gc.confirm_listing): gc trusts a listing that does not fail. A
    manifest that no listing ever shows is not a version to any reader, so its own blobs are
    garbage; the blobs it shares with a version gc does see stay."""
    plain = pushed(inner, tmp_path, 1, 2)
    only_v2 = _only(plain, "v2", "v1")
    shared = set(chunks_of(plain.get_version("m", "v2").manifest)) - set(only_v2)
    repo, _ = faulty(inner, Fault("list", "miss", "models/*", times=None, arg="*/v2.json"))
    result = gc.collect(repo)
    assert set(result.plan.blobs) == set(only_v2)
    assert shared and shared <= set(dict(plain.iter_blobs()))
    assert {p.digest for p in check_repo(plain).problems} == set(only_v2)


# -- bounded reads ------------------------------------------------------------------------------
def test_every_read_from_storage_is_bounded(inner, tmp_path):
    """Push, pull, listings, verify, check, gc and deletion never ask the backend for an object
    without a bound: blobs by the largest object that can hold their chunk in the repository's
    format, manifests by MAX_MANIFEST_BYTES, aim-repo.json by MAX_REPO_META_BYTES, summaries by
    MAX_SUMMARY_BYTES. (locks/ belongs to leases.py and is left out here.)"""
    repo, backend = faulty(inner)
    src = make_variant_model(tmp_path / "src")
    pushmod.push(repo, "m", "v1", src, params=PARAMS)
    pushmod.push(repo, "m", "v2", make_variant_model(tmp_path / "src2", variant=2), params=PARAMS)
    pullmod.pull(repo, "m", tmp_path / "dest")
    repo.list_versions("m")
    repo.list_models()
    verify.verify_version(repo, repo.get_version("m", "v1"))
    check_repo(repo, read_data=True)
    sizes = {d: s for tag in ("v1", "v2") for f in repo.get_version("m", tag).manifest.files for d, s in f.chunks}
    repo.delete_version("m", "v1")
    gc.collect(repo)
    fmt = repo.format()
    gets = [(key, bound) for op, key, bound in backend.calls if op == "get" and not key.startswith("locks/")]
    assert {key for key, _ in gets} >= {
        "aim-repo.json",
        manifest_key("m", "v1"),
        manifest_key("m", "v2"),
        layout.summary_key("m", "v2"),
    }
    for key, bound in gets:
        if key == "aim-repo.json":
            assert bound == layout.MAX_REPO_META_BYTES
        elif "/summaries/" in key:
            assert bound == summary.MAX_SUMMARY_BYTES
        elif key.startswith("models/"):
            assert bound == mf.MAX_MANIFEST_BYTES
        else:
            digest = key.rsplit("/", 1)[-1]  # every blob is a chunk of v1 or v2: none is read unbounded
            assert bound == fmt.max_stored_size(sizes[digest]) <= fmt.max_stored_size(mf.MAX_CHUNK_SIZE), key
