"""Many small files: push and pull move files smaller than a chunk in batches (one task per
batch: no thread hand-off, future or re-stat per file) and keep every guarantee of the per-chunk
path: exact round trip, verified before the rename, resumable, nothing unverified under a final
name, the source re-checked after it was read, no symlink followed, no FIFO waited on."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import random

import pytest

from aim_cli import api
from aim_cli.backends.local import LocalBackend
from aim_cli.chunking.cdc import BATCH_FILES, ChunkingParams, file_digest, is_one_chunk, iter_chunks
from aim_cli.errors import IntegrityError, StorageError, UsageError
from aim_cli.format.layout import blob_key
from aim_cli.pull import dest_writer
from aim_cli.pull.pipeline import pull
from aim_cli.push import push, scan_source
from aim_cli.repository import Repository
from tests.fakes import CountingBackend
from tests.helpers import (
    altered_blob,
    assert_same_tree,
    file_contents,
    ok,
    one_line_error,
    random_bytes,
    run,
    work_files,
    write_model,
)

KiB = 1024
MODES = (0o644, 0o755, 0o600, 0o444, 0o640)


def small_tree(root, count: int, *, seed: int = 1, max_size: int = 8 * KiB):
    """``count`` files of 0 to ``max_size`` bytes (some empty, some duplicates) in nested
    directories, with varied modes."""
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        size = rng.choice((0, 1, 100, 4 * KiB, rng.randrange(max_size)))
        data = b"same bytes\n" if i % 50 == 7 else random_bytes(size, seed * 100_000 + i)
        files[f"d{i % 7}/sub{i % 3}/f{i:05d}.bin"] = data
    write_model(root, files)
    for i, rel in enumerate(sorted(files)):
        os.chmod(root / rel, MODES[i % len(MODES)])
    return root


def blob_chunks(repo: Repository, model: str, tag: str) -> int:
    return sum(len(f.chunks) for f in repo.get_version(model, tag).manifest.files)


@pytest.fixture
def local(tmp_path):
    return LocalBackend(tmp_path / "repo")


# -- through the console script ------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def config(request, tmp_path):
    if request.param == "s3":
        from tests.s3_fixtures import s3_repo_yaml

        text = s3_repo_yaml("r", request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"))
    else:
        text = "repos:\n  r: {type: local, path: store}\n"
    (tmp_path / "model_repos.yaml").write_text(text)
    return tmp_path


def test_many_small_files_round_trip_exactly(config, tmp_path):
    """More files than one batch, plus a file of several chunks: every byte, mode and directory
    comes back, and each small file is one chunk named by its own digest."""
    src = small_tree(tmp_path / "src", BATCH_FILES + 60)
    (src / "big.bin").write_bytes(random_bytes(9 * 1024 * KiB, 9))  # > 2 x the maximum chunk size
    ok(run(["model", "push", "r", "m", src, "--tag", "v1", "--quiet"], cwd=config))
    ok(run(["model", "pull", "r", "m", tmp_path / "out", "--tag", "v1", "--quiet"], cwd=config))
    assert_same_tree(src, tmp_path / "out")
    m = api.open_repository("r", config=str(config / "model_repos.yaml")).get_version("m", "v1").manifest
    assert all(f.chunks == ([(f.blake3, f.size)] if f.size else []) for f in m.files if f.path != "big.bin")
    assert len(next(f for f in m.files if f.path == "big.bin").chunks) > 1


def test_corrupt_small_blob_fails_the_pull_with_exit_5_and_no_final_file(config, tmp_path):
    src = small_tree(tmp_path / "src", 40, max_size=2 * KiB)
    ok(run(["model", "push", "r", "m", src, "--tag", "v1", "--quiet"], cwd=config))
    repo = api.open_repository("r", config=str(config / "model_repos.yaml"))
    victim = next(
        f
        for f in repo.get_version("m", "v1").manifest.files
        if f.size > 10 and sum(g.blake3 == f.blake3 for g in repo.get_version("m", "v1").manifest.files) == 1
    )
    repo.backend.put(blob_key(victim.blake3), altered_blob(repo, repo.backend.get(blob_key(victim.blake3))))
    dest = tmp_path / "out"
    one_line_error(
        run(["model", "pull", "r", "m", dest, "--tag", "v1", "--jobs", "2"], cwd=config),
        5,
        victim.blake3,
        "corrupt",
        "does not match its hash",
    )
    assert not os.path.lexists(dest / victim.path)
    for rel, (data, mode) in file_contents(dest).items():  # what did get a final name is verified and whole
        assert data == (src / rel).read_bytes() and mode == os.stat(src / rel).st_mode & 0o777


# -- the library ----------------------------------------------------------------------------------
def test_batched_digests_are_the_chunkers(local, tmp_path):
    """A file below the minimum chunk size is one chunk, whose digest is the file's: what push
    computes from one read without the chunker is what the chunker says, on both sides of the
    threshold."""
    params = ChunkingParams.for_average(4 * KiB)  # min 1 KiB
    sizes = [0, 1, params.min_size - 1, params.min_size, params.min_size + 1, 3 * params.max_size]
    src = write_model(tmp_path / "src", {f"f{size:06d}": random_bytes(size, size) for size in sizes})
    repo = Repository(local, "r")
    push(repo, "m", "v1", src, params=params)
    for f in repo.get_version("m", "v1").manifest.files:
        chunks = [(c.digest, c.size) for c in iter_chunks(src / f.path, params)]
        assert f.chunks == chunks and f.blake3 == file_digest(src / f.path)
        assert is_one_chunk(f.size, params) == (f.size < params.min_size)


def test_no_task_and_no_stat_per_small_file(local, tmp_path, monkeypatch):
    """The cost that made 5,000 files of 4 KiB take 6.5 s: a future and several stats per file.
    Counted, not timed: tasks grow with batches, stats with directories."""
    src = small_tree(tmp_path / "src", 3 * BATCH_FILES)
    dirs = sum(1 for p in src.rglob("*") if p.is_dir())  # 28, for 768 files
    submits, stats = [], []
    real_submit, real_stat, real_lstat = concurrent.futures.ThreadPoolExecutor.submit, os.stat, os.lstat
    monkeypatch.setattr(
        concurrent.futures.ThreadPoolExecutor,
        "submit",
        lambda self, *a, **k: submits.append(1) or real_submit(self, *a, **k),
    )

    # Stats of files and directories by path. The local backend's own look-ups (one fstatat per
    # blob read, relative to a directory fd: a link or FIFO in the store is damage, never opened)
    # are the repository's cost, not the per-file cost of walking DIR or DEST that this pins.
    def counted_stat(path, *args, **kwargs):
        if "dir_fd" not in kwargs:
            stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(os, "lstat", lambda *a, **k: stats.append(a[0]) or real_lstat(*a, **k))
    repo = Repository(local, "r", jobs=4)
    # 768 files: a batch per job, the listing of stored blobs, and the two reads beside aim-repo.json
    push(repo, "m", "v1", src, jobs=4)
    assert len(submits) <= 4 + 2 + 2 and len(stats) <= 30, (len(submits), stats)
    submits.clear()
    stats.clear()
    pull(repo, "m", tmp_path / "out", tag="v1", jobs=4)  # planned in a batch per CPU, fetched, renamed on 4 threads
    # Per directory: checked when planned, created and checked again (never a symlink, never a
    # repository's) when files are renamed into it.
    assert len(submits) <= 4 + max(3, os.cpu_count() or 2) + 2 + 4, len(submits)
    assert len(stats) <= 5 * dirs + 20, stats
    monkeypatch.undo()
    assert file_contents(tmp_path / "out") == file_contents(src)


@pytest.mark.parametrize("jobs", [1, 4])
def test_interrupted_small_files_pull_resumes_without_refetching(local, tmp_path, jobs):
    src = small_tree(tmp_path / "src", 2 * BATCH_FILES + 10)
    push(Repository(local, "r"), "m", "v1", src)
    total = blob_chunks(Repository(local, "r"), "m", "v1")
    cut = CountingBackend(local, fail_after=total // 2)
    dest = tmp_path / "out"
    with pytest.raises(ConnectionAbortedError):
        pull(Repository(cut, "r", jobs=jobs), "m", dest, tag="v1", jobs=jobs)
    done = file_contents(dest)
    for rel, (data, mode) in done.items():  # complete and verified, with their modes
        assert data == (src / rel).read_bytes() and mode == os.stat(src / rel).st_mode & 0o777
    assert 0 < len(done) < len(file_contents(src))
    rerun = CountingBackend(local)
    r = pull(Repository(rerun, "r", jobs=jobs), "m", dest, tag="v1", jobs=jobs)
    assert file_contents(dest) == file_contents(src)
    assert rerun.gets == total - cut.gets  # nothing fetched twice
    assert r.kept_files == len(done)
    assert work_files(dest) == []


def test_verified_partials_are_found_by_the_rerun(local, tmp_path, monkeypatch):
    """Small files verified but not yet renamed (the syncfs before the renames failed): nothing
    under a final name, partials of the owner's mode only; the rerun renames them, fetching
    nothing. A partial longer than its file (garbage after the right bytes) is cut, not refetched."""
    src = small_tree(tmp_path / "src", 30)
    push(Repository(local, "r"), "m", "v1", src)

    def failing_sync(path):
        raise OSError(errno.EIO, "injected: syncfs failed")

    monkeypatch.setattr(dest_writer, "sync_filesystem", failing_sync)
    dest = tmp_path / "out"
    with pytest.raises(StorageError, match="syncfs failed"):
        pull(Repository(local, "r"), "m", dest, tag="v1")
    partials = list((dest / ".aim/partial").iterdir())
    assert file_contents(dest) == {} and len(partials) == 30
    assert {p.stat().st_mode & 0o777 for p in partials} == {0o600}
    with open(max(partials, key=lambda p: p.stat().st_size), "ab") as f:
        f.write(b"garbage after the file's bytes")
    monkeypatch.undo()
    counting = CountingBackend(local)
    r = pull(Repository(counting, "r"), "m", dest, tag="v1")
    assert file_contents(dest) == file_contents(src) and counting.gets == 0 and r.fetched_bytes == 0


def test_a_final_small_file_of_another_size_is_replaced(local, tmp_path):
    src = write_model(tmp_path / "src", {"a.txt": b"hello\n", "b.txt": b"world\n"})
    push(Repository(local, "r"), "m", "v1", src)
    dest = write_model(tmp_path / "out", {"a.txt": b"hello\n!", "b.txt": b"world\n"})
    counting = CountingBackend(local)
    r = pull(Repository(counting, "r"), "m", dest, tag="v1")
    assert file_contents(dest) == file_contents(src) and r.kept_files == 1 and counting.gets == 1


def test_a_manifest_whose_only_chunk_is_not_the_file_fetches_nothing(local, tmp_path):
    src = write_model(tmp_path / "src", {"a.txt": b"hello\n"})
    repo = Repository(local, "r")
    push(repo, "m", "v1", src)
    doc = json.loads(repo.get_version("m", "v1").raw)
    doc["tag"] = "evil"
    doc["files"][0]["blake3"] = "0" * 64
    local.put("models/m/versions/evil.json", json.dumps(doc).encode())
    counting = CountingBackend(local)
    with pytest.raises(IntegrityError, match="inconsistent") as e:
        pull(Repository(counting, "r"), "m", tmp_path / "out", tag="evil")
    assert e.value.exit_code == 5 and counting.gets == 0 and file_contents(tmp_path / "out") == {}


@pytest.mark.parametrize("change", ["rewritten", "symlink", "fifo", "grown"])
def test_a_small_file_changed_after_the_scan_is_refused(local, tmp_path, monkeypatch, change):
    """The scan's stat is the only one: the read re-checks it with one fstat of the open file,
    never follows a symlink put in the file's place and never waits on a FIFO."""
    import aim_cli.push as pushmod

    src = write_model(tmp_path / "src", {"a.txt": b"old content\n", "other.txt": b"x"})
    files = scan_source(src)
    target = src / "a.txt"
    if change == "rewritten":  # same size, later mtime
        later = files[0].mtime_ns + 10**9
        target.write_bytes(b"new content\n")
        os.utime(target, ns=(later, later))
    elif change == "grown":
        with open(target, "ab") as f:
            f.write(b"more")
    else:
        target.unlink()
        if change == "symlink":
            os.symlink(src / "other.txt", target)
        else:
            os.mkfifo(target)
    monkeypatch.setattr(pushmod, "scan_source", lambda *a, **k: files)  # the scan as it was before
    repo = Repository(local, "r")
    with pytest.raises(UsageError, match="changed while it was being pushed") as e:
        push(repo, "m", "v1", src)
    assert e.value.exit_code == 2 and not repo.has_version("m", "v1")


def test_dest_names_that_a_filesystem_may_fold_are_looked_at(local, tmp_path):
    """DEST is read with one listdir per directory; a name found only after folding (a
    filesystem that ignores case or normalises Unicode would open it for the version's name) is
    looked at with an lstat. Here, on a case-sensitive filesystem, they are other files: left
    alone, and the version's files written beside them."""
    from aim_cli.pull.plan import DestNames as _DestNames

    src = write_model(tmp_path / "src", {"A.bin": b"version\n", "caf\u00e9.txt": b"nfc\n"})
    push(Repository(local, "r"), "m", "v1", src)
    dest = write_model(tmp_path / "out", {"a.bin": b"mine\n", "cafe\u0301.txt": b"nfd, mine\n"})
    names = _DestNames()
    assert names.may_have(dest, "A.bin") and names.may_have(dest, "caf\u00e9.txt")
    assert not names.may_have(dest, "b.bin") and not names.may_have(dest / "absent", "a.bin")
    mine = file_contents(dest)
    pull(Repository(local, "r"), "m", dest, tag="v1")
    assert file_contents(dest) == {**file_contents(src), **mine}
