import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from aim_cli.backends.local import LocalBackend
from aim_cli.errors import IntegrityError, LockHeldError, StorageError, UsageError
from aim_cli.format.layout import blob_key
from aim_cli.pull.pipeline import pull
from aim_cli.push import push
from aim_cli.repository import Repository
from tests.fakes import CountingBackend, HookedBackend
from tests.helpers import altered_blob, chunks_of, file_contents, random_bytes, version_bytes, work_files, write_model

MiB = 1 << 20


@pytest.fixture
def local(tmp_path):
    return LocalBackend(tmp_path / "repo")


@pytest.fixture
def repo(local):
    return Repository(local, "r", jobs=4)


@pytest.fixture
def v1(tmp_path):
    return write_model(
        tmp_path / "v1",
        {
            "model-1.bin": random_bytes(10 * MiB, 1),
            "model-2.bin": random_bytes(6 * MiB, 2),
            "config.json": b'{"layers": 2}',
            "empty": b"",
        },
    )


def test_pull_is_byte_identical_with_modes(repo, v1, tmp_path):
    os.chmod(v1 / "config.json", 0o600)
    push(repo, "m", "v1", v1)
    r = pull(repo, "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(v1)
    # Every chunk fetched once: fetched_bytes counts the stored objects, fetched_raw_bytes the chunks.
    assert (r.fetched_raw_bytes, r.fetched_bytes) == version_bytes(repo, "m", "v1")
    assert r.fetched_raw_bytes == r.total_size and r.reused_bytes == 0
    assert work_files(tmp_path / "out") == []


def test_newest_version_when_no_tag(repo, v1, tmp_path):
    push(repo, "m", "v1", v1)
    (v1 / "config.json").write_bytes(b"{}")
    push(repo, "m", "v2", v1)
    r = pull(repo, "m", tmp_path / "out")
    assert r.tag == "v2" and r.newest


@pytest.mark.parametrize("version", [2, 1])
def test_interrupted_pull_resumes_fetching_only_what_is_missing(local, v1, tmp_path, version):
    Repository(local, "r").init(version=version)
    push(Repository(local, "r"), "m", "v1", v1)
    total_chunks = sum(len(f.chunks) for f in Repository(local, "r").get_version("m", "v1").manifest.files)
    cut = CountingBackend(local, fail_after=total_chunks // 2)
    with pytest.raises(ConnectionAbortedError):
        pull(Repository(cut, "r", jobs=1), "m", tmp_path / "out", tag="v1")
    # Nothing incomplete under a final name; the partial files stay for the rerun.
    for rel, (data, _) in file_contents(tmp_path / "out").items():
        assert data == (v1 / rel).read_bytes()
    assert any((tmp_path / "out/.aim/partial").iterdir())
    rerun = CountingBackend(local)
    r = pull(Repository(rerun, "r", jobs=2), "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(v1)
    assert rerun.gets == total_chunks - cut.gets
    chunks = chunks_of(Repository(local, "r").get_version("m", "v1").manifest)
    assert r.fetched_bytes == rerun.get_bytes
    assert r.fetched_raw_bytes == sum(size for d, size in chunks.items() if blob_key(d) in rerun.got) < r.total_size
    assert work_files(tmp_path / "out") == []


def test_corrupted_partial_file_is_detected_and_refetched(local, v1, tmp_path):
    push(Repository(local, "r"), "m", "v1", v1)
    cut = CountingBackend(local, fail_after=5)
    with pytest.raises(ConnectionAbortedError):
        pull(Repository(cut, "r", jobs=1), "m", tmp_path / "out", tag="v1")
    partials = sorted((tmp_path / "out/.aim/partial").iterdir())
    for p in partials:  # flip one byte at the start of every partial file
        with open(p, "r+b") as f:
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 0xFF]) if b else b"")
    pull(Repository(local, "r"), "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(v1)


def test_pulling_v2_over_v1_fetches_only_changed_chunks(local, v1, tmp_path):
    repo = Repository(local, "r")
    push(repo, "m", "v1", v1)
    data = bytearray((v1 / "model-1.bin").read_bytes())
    data[5 * MiB : 5 * MiB + 100] = b"x" * 100
    v2 = write_model(tmp_path / "v2", {**{p.name: p.read_bytes() for p in v1.iterdir()}, "model-1.bin": bytes(data)})
    r2 = push(repo, "m", "v2", v2)
    pull(repo, "m", tmp_path / "out", tag="v1")
    counting = CountingBackend(local)
    r = pull(Repository(counting, "r"), "m", tmp_path / "out", tag="v2")
    assert file_contents(tmp_path / "out") == file_contents(v2)
    assert r.fetched_bytes == counting.get_bytes <= r2.new_stored_bytes
    assert 0 < r.fetched_raw_bytes <= r2.new_bytes
    assert r.kept_files == 3  # model-2.bin, config.json and empty were already right


def test_reference_directories_provide_chunks(local, v1, tmp_path):
    repo = Repository(local, "r")
    push(repo, "m", "v1", v1)
    counting = CountingBackend(local)
    r = pull(Repository(counting, "r"), "m", tmp_path / "out", tag="v1", references=[v1])
    assert file_contents(tmp_path / "out") == file_contents(v1)
    assert counting.gets == 0 and r.reused_bytes == r.total_size
    # A reference whose bytes differ is verified and not used.
    bad = tmp_path / "bad"
    shutil.copytree(v1, bad)
    (bad / "model-2.bin").write_bytes(random_bytes(6 * MiB, 9))
    counting = CountingBackend(local)
    pull(Repository(counting, "r"), "m", tmp_path / "out2", tag="v1", references=[bad])
    assert file_contents(tmp_path / "out2") == file_contents(v1)
    assert counting.get_bytes >= 6 * MiB - 2 * 4 * MiB  # model-2 had to come from the repository


def test_altered_blob_fails_and_leaves_no_final_file(repo, v1, tmp_path):
    push(repo, "m", "v1", v1)
    entry = next(f for f in repo.get_version("m", "v1").manifest.files if f.path == "model-2.bin")
    digest = entry.chunks[-1][0]
    blob = tmp_path / "repo/blobs" / digest[:2] / digest
    blob.write_bytes(altered_blob(repo, blob.read_bytes(), 10, 1))
    with pytest.raises(IntegrityError, match=digest) as e:
        pull(repo, "m", tmp_path / "out", tag="v1", jobs=1)
    assert e.value.exit_code == 5
    assert not (tmp_path / "out/model-2.bin").exists()
    # Files that completed and verified before the failure have their final names, intact.
    pulled = file_contents(tmp_path / "out")
    assert "config.json" in pulled and "empty" in pulled
    for rel, (data, _) in pulled.items():
        assert data == (v1 / rel).read_bytes()


@pytest.mark.parametrize("path", ["../escaped", "/tmp/escaped-abs", "a/../../escaped", ".aim/partial/x"])
def test_hostile_manifest_writes_nothing(repo, v1, tmp_path, path):
    push(repo, "m", "v1", v1)
    ref = repo.get_version("m", "v1")
    doc = json.loads(ref.raw)
    doc["tag"] = "evil"
    doc["files"][0]["path"] = path
    repo.backend.put("models/m/versions/evil.json", json.dumps(doc).encode())
    before = sorted(tmp_path.iterdir())
    with pytest.raises(IntegrityError):
        pull(repo, "m", tmp_path / "out", tag="evil")
    assert sorted(tmp_path.iterdir()) == before  # not even DEST was created
    assert not os.path.exists("/tmp/escaped-abs")


def test_pull_never_writes_through_a_symlink_in_dest(repo, tmp_path):
    src = write_model(tmp_path / "src", {"sub/w.bin": b"weights"})
    push(repo, "m", "v1", src)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out/sub")
    with pytest.raises(UsageError, match="symlink"):
        pull(repo, "m", tmp_path / "out", tag="v1")
    assert list(outside.iterdir()) == []


def test_a_second_pull_into_the_same_dest_refuses_while_the_first_runs(repo, v1, tmp_path):
    push(repo, "m", "v1", v1)
    dest = tmp_path / "out"
    (dest / ".aim").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (dest / ".aim/pull.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(LockHeldError) as e:
            pull(repo, "m", dest, tag="v1")
        assert e.value.exit_code == 4
    finally:
        holder.stdin.close()
        holder.wait()
    # The holder is gone: its lock is stale and taken over.
    pull(repo, "m", dest, tag="v1")
    assert file_contents(dest) == file_contents(v1)


def test_not_enough_space_is_refused_before_fetching(repo, v1, tmp_path, monkeypatch):
    push(repo, "m", "v1", v1)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    counting = CountingBackend(repo.backend)
    with pytest.raises(StorageError, match="not enough space") as e:
        pull(Repository(counting, "r"), "m", tmp_path / "out", tag="v1")
    assert e.value.exit_code == 6 and counting.gets == 0


def test_wrong_digest_downloads_nothing(repo, v1, tmp_path):
    r = push(repo, "m", "v1", v1)
    counting = CountingBackend(repo.backend)
    with pytest.raises(IntegrityError, match="pinned"):
        pull(Repository(counting, "r"), "m", tmp_path / "out", tag="v1", digest="0" * 64)
    assert counting.gets == 0 and not (tmp_path / "out").exists()
    with pytest.raises(UsageError):
        pull(repo, "m", tmp_path / "out", tag="v1", digest=r.digest[:12])
    pull(repo, "m", tmp_path / "out", tag="v1", digest=r.digest.upper())
    assert file_contents(tmp_path / "out") == file_contents(v1)


def test_files_already_right_are_kept_and_others_left_alone(repo, v1, tmp_path):
    push(repo, "m", "v1", v1)
    dest = tmp_path / "out"
    shutil.copytree(v1, dest)
    (dest / "mine.txt").write_bytes(b"not part of the model")
    counting = CountingBackend(repo.backend)
    r = pull(Repository(counting, "r"), "m", dest, tag="v1")
    assert counting.gets == 0 and r.kept_files == 4
    assert (dest / "mine.txt").read_bytes() == b"not part of the model"


def test_partials_of_another_versions_interrupted_pull_are_used_then_removed(local, v1, tmp_path):
    repo = Repository(local, "r")
    push(repo, "m", "v1", v1)
    for name in ("model-1.bin", "model-2.bin"):  # other file digests: other partial names
        with open(v1 / name, "r+b") as f:
            f.seek(-1, 2)
            f.write(b"!")
    push(repo, "m", "v2", v1)
    cut = CountingBackend(local, fail_after=10)
    with pytest.raises(ConnectionAbortedError):
        pull(Repository(cut, "r", jobs=1), "m", tmp_path / "out", tag="v1")
    counting = CountingBackend(local)
    pull(Repository(counting, "r"), "m", tmp_path / "out", tag="v2")
    assert file_contents(tmp_path / "out") == file_contents(v1)
    assert counting.gets < sum(len(f.chunks) for f in repo.get_version("m", "v2").manifest.files) - 5
    assert work_files(tmp_path / "out") == []


def test_modes_are_applied_only_after_the_rename(local, tmp_path, monkeypatch):
    """A pull cut off after files verified but before their renames leaves partial files the
    owner can read and write (0600), never with the manifest's mode: a 0444 partial wedged every
    rerun as a user, a 0200 one could not be re-read for verification."""
    from aim_cli.pull import dest_writer

    src = write_model(
        tmp_path / "src",
        {"a-ro.txt": b"read only\n", "b-wo.bin": random_bytes(100_000, 3), "z-big.bin": random_bytes(10 * MiB, 4)},
    )
    os.chmod(src / "a-ro.txt", 0o444)
    os.chmod(src / "b-wo.bin", 0o200)
    push(Repository(local, "r"), "m", "v1", src)

    def no_sync(path):
        raise OSError(errno.EIO, "injected: syncfs failed")

    monkeypatch.setattr(dest_writer, "sync_filesystem", no_sync)  # fails every commit, after verification
    cut = CountingBackend(local, fail_after=4)  # the two small files, then part of the big one
    with pytest.raises(ConnectionAbortedError):
        pull(Repository(cut, "r", jobs=1), "m", tmp_path / "out", tag="v1")
    partials = {p: p.stat().st_mode & 0o7777 for p in (tmp_path / "out/.aim/partial").iterdir()}
    assert len(partials) == 3 and set(partials.values()) == {0o600}, partials
    assert file_contents(tmp_path / "out") == {}  # nothing under a final name
    with pytest.raises(StorageError, match="syncfs failed"):  # verified from the partials, then refused
        pull(Repository(local, "r"), "m", tmp_path / "out", tag="v1")
    assert {p.stat().st_mode & 0o7777 for p in (tmp_path / "out/.aim/partial").iterdir()} == {0o600}
    monkeypatch.undo()
    r = pull(Repository(local, "r"), "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(src) and r.fetched_bytes == 0
    assert work_files(tmp_path / "out") == []


def test_the_case_probe_answers_for_this_filesystem_and_leaves_nothing(tmp_path):
    from aim_cli.pull.dest_writer import ignores_case as _ignores_case

    assert _ignores_case(tmp_path) is False  # ext4, tmpfs, xfs: case-sensitive
    assert list(tmp_path.iterdir()) == []


def test_a_complete_file_with_other_names_is_replaced_not_chmodded(repo, tmp_path):
    """A file already right in DEST but hard-linked elsewhere: giving it the version's mode would
    change the other names too. It is assembled afresh (from its own chunks) and renamed over."""
    src = write_model(tmp_path / "src", {"run.sh": b"#!/bin/sh\necho hi\n"})
    os.chmod(src / "run.sh", 0o755)
    push(repo, "m", "v1", src)
    elsewhere = write_model(tmp_path / "elsewhere", {"keep.sh": b"#!/bin/sh\necho hi\n"}) / "keep.sh"
    os.chmod(elsewhere, 0o600)
    (tmp_path / "out").mkdir()
    os.link(elsewhere, tmp_path / "out/run.sh")
    r = pull(repo, "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(src) and r.fetched_bytes == 0
    assert elsewhere.stat().st_mode & 0o777 == 0o600 and elsewhere.stat().st_nlink == 1


def test_the_version_and_the_format_are_read_together(local, v1, tmp_path):
    """Pull's first two reads do not depend on each other: the manifest's GET waits (bounded)
    until aim-repo.json's has begun, which a pull reading them one after the other never lets
    happen (docs/design.md §13)."""
    push(Repository(local, "r"), "m", "v1", v1)
    format_read = threading.Event()
    waited_in_vain = []

    def before(op, key):
        if key == "aim-repo.json":
            format_read.set()
        elif key == "models/m/versions/v1.json" and not format_read.wait(10):
            waited_in_vain.append(key)

    r = pull(Repository(HookedBackend(local, before=before), "r"), "m", tmp_path / "out", tag="v1")
    assert r.tag == "v1" and file_contents(tmp_path / "out") == file_contents(v1)
    assert waited_in_vain == []
