import os
import re
import threading

import pytest

import aim_cli.push as push_module
from aim_cli.backends.local import LocalBackend
from aim_cli.errors import StorageError, TagExistsError, UsageError
from aim_cli.format.layout import REPO_META_KEY, aliases_prefix, manifest_key
from aim_cli.push import UploadSlots, push, scan_source
from aim_cli.repository import Repository
from tests.fakes import HookedBackend
from tests.helpers import random_bytes, write_model

MiB = 1 << 20


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalBackend(tmp_path / "repo"), "r", jobs=4)


def blob_files(tmp_path):
    return sorted(p for p in (tmp_path / "repo" / "blobs").rglob("*") if p.is_file())


def test_second_version_stores_only_changed_chunks(repo, tmp_path):
    base = random_bytes(12 * MiB, 1)
    v1 = write_model(tmp_path / "v1", {"model.bin": base, "config.json": b'{"a": 1}'})
    changed = bytearray(base)
    changed[6 * MiB : 6 * MiB + 4096] = random_bytes(4096, 2)
    v2 = write_model(tmp_path / "v2", {"model.bin": bytes(changed), "config.json": b'{"a": 2}'})
    r1 = push(repo, "m", "v1", v1)
    assert r1.new_bytes == r1.total_size == 12 * MiB + 8
    r2 = push(repo, "m", "v2", v2)
    # One 4 KiB edit touches one or two chunks (avg ~1.25 MiB) and the small config.
    assert 0 < r2.new_bytes <= 2 * 4 * MiB + 8
    assert r2.dedup_ratio > 0.6
    # new_bytes counts the chunks, new_stored_bytes what storage holds for them (formats 2 and 3 encode).
    stored = sum(p.stat().st_size for p in blob_files(tmp_path))
    assert stored == r1.new_stored_bytes + r2.new_stored_bytes
    assert len(blob_files(tmp_path)) == r1.new_chunks + r2.new_chunks


def test_identical_repush_writes_nothing_and_other_content_conflicts(repo, tmp_path):
    src = write_model(tmp_path / "src", {"a.bin": random_bytes(MiB, 3)})
    first = push(repo, "m", "v1", src)
    before = sorted(p for p in (tmp_path / "repo").rglob("*"))
    again = push(repo, "m", "v1", src, message="a message does not count")
    assert again.already_pushed and again.digest == first.digest and again.new_bytes == again.new_stored_bytes == 0
    assert sorted(p for p in (tmp_path / "repo").rglob("*")) == before
    (src / "a.bin").write_bytes(random_bytes(MiB, 4))
    with pytest.raises(TagExistsError):
        push(repo, "m", "v1", src)
    assert sorted(p for p in (tmp_path / "repo").rglob("*")) == before  # nothing uploaded either


def test_the_tag_and_its_aliases_are_read_beside_aim_repo_json(repo, tmp_path):
    """Reads the lease does not guard go out together: while the read of aim-repo.json is held,
    the alias listing and the lookup of the tag's manifest are both sent (one round trip for
    three, against a distant store). An existing tag is still found, in one read: the re-push is a no-op."""
    src = write_model(tmp_path / "src", {"a.bin": random_bytes(MiB, 5)})
    first = push(repo, "m", "v1", src)
    sent: set[str] = set()
    looked_up: list[str] = []
    both = threading.Event()

    def note(what: str) -> None:
        sent.add(what)
        if sent == {"aliases", "tag"}:
            both.set()

    class HoldingMeta(HookedBackend):
        def list(self, prefix):
            if prefix.startswith(aliases_prefix("m")):
                note("aliases")
            return self.inner.list(prefix)

    def before(op: str, key: str) -> None:
        if key == manifest_key("m", "v1"):
            looked_up.append(op)
            note("tag")
        if op == "get" and key == REPO_META_KEY and not both.is_set():
            assert both.wait(10), f"aim-repo.json read alone; sent meanwhile: {sorted(sent)}"

    held = Repository(HoldingMeta(repo.backend, before=before), "r", jobs=4)
    again = push(held, "m", "v1", src)
    assert both.is_set() and again.already_pushed and again.digest == first.digest
    assert looked_up == ["get"]  # the stored tag is read once, with no HEAD before it


def test_symlinks_refused_by_default_and_followed_on_request(repo, tmp_path):
    src = write_model(tmp_path / "src", {"real/w.bin": b"weights"})
    os.symlink(tmp_path / "src/real/w.bin", tmp_path / "src/link.bin")
    with pytest.raises(UsageError, match=re.escape("link.bin")) as e:
        scan_source(src)
    assert "--follow-symlinks" in e.value.hint
    files = scan_source(src, follow_symlinks=True)
    assert [(f.path, f.size) for f in files] == [("link.bin", 7), ("real/w.bin", 7)]
    os.symlink(tmp_path / "src/real", tmp_path / "src/dirlink")
    with pytest.raises(UsageError, match="not point to a regular file"):
        scan_source(src, follow_symlinks=True)


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_bad_source_directories(repo, tmp_path, case):
    path = tmp_path / "src"
    if case == "empty":
        path.mkdir()
    elif case == "file":
        path.write_bytes(b"x")
    with pytest.raises(UsageError) as e:
        push(repo, "m", "v1", path)
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    "files",
    [{"a.bin": 8 * MiB}, {f"d{i % 5}/f{i}.txt": 100 + i for i in range(600)}],
    ids=["chunks of a big file", "batches of small files"],
)
def test_a_failed_upload_commits_nothing(tmp_path, files):
    class FailingPuts(LocalBackend):
        puts = 0

        def put(self, key, data, *, hedge=True):
            FailingPuts.puts += 1
            if FailingPuts.puts == 3:
                raise StorageError("injected: disk full", "free space")
            super().put(key, data, hedge=hedge)

    repo = Repository(FailingPuts(tmp_path / "repo"), "r", jobs=2)
    src = write_model(tmp_path / "src", {path: random_bytes(size, i) for i, (path, size) in enumerate(files.items())})
    with pytest.raises(StorageError, match="injected"):
        push(repo, "m", "v1", src)
    assert not (tmp_path / "repo" / "models").exists()


def test_files_are_modes_and_paths_in_manifest(repo, tmp_path):
    src = write_model(tmp_path / "src", {"b/x.sh": b"#!/bin/sh\n", "a.txt": b""})
    os.chmod(src / "b/x.sh", 0o755)
    push(repo, "m", "v1", src)
    m = repo.get_version("m", "v1").manifest
    assert [(f.path, f.size, f.mode, len(f.chunks)) for f in m.files] == [
        ("a.txt", 0, 0o644, 0),
        ("b/x.sh", 10, 0o755, 1),
    ]


def test_a_file_modified_during_the_push_is_refused(repo, tmp_path, monkeypatch):
    """The source is re-stated after it was read: a training job still writing the checkpoint
    must not produce a version that matches no file that ever existed."""
    from aim_cli import push as pushmod

    src = write_model(tmp_path / "src", {"a.bin": random_bytes(2 * MiB, 6)})
    files = scan_source(src)
    later = files[0].mtime_ns + 10**9
    os.utime(src / "a.bin", ns=(later, later))  # written to after the scan
    monkeypatch.setattr(pushmod, "scan_source", lambda *a, **k: files)  # the scan as it was before
    with pytest.raises(UsageError, match="changed while it was being pushed"):
        push(repo, "m", "v1", src)
    assert not repo.has_version("m", "v1")


def test_top_level_aim_names_are_skipped_and_reported(repo, tmp_path):
    src = write_model(
        tmp_path / "src", {"a.bin": b"a", ".aimfoo": b"mine", ".aim/partial/x": b"p", "sub/.aimbar": b"b"}
    )
    skipped = []
    files = scan_source(src, on_skip=skipped.append)
    assert [f.path for f in files] == ["a.bin", "sub/.aimbar"]  # only the top level is aim_cli's own
    assert skipped == [".aim", ".aimfoo"]
    assert push(repo, "m", "v1", src).skipped == (".aim", ".aimfoo")


def test_empty_dir_argument_and_message_that_is_not_utf8(repo, tmp_path, monkeypatch):
    write_model(tmp_path / "src", {"a.bin": b"a"})
    monkeypatch.chdir(tmp_path / "src")  # "" must not mean the current directory
    with pytest.raises(UsageError, match="empty string"):
        push(repo, "m", "v1", "")
    with pytest.raises(UsageError, match="UTF-8"):
        push(repo, "m", "v1", tmp_path / "src", message="caf\udce9")
    assert not repo.has_version("m", "v1")


def test_a_local_push_takes_the_cpus_plus_two_jobs_unless_told(tmp_path, monkeypatch):
    """Upload threads of a local push also compress: by default no more of them than the cores
    + 2 (aim_cli/defaults.py), at most DEFAULT_JOBS; an explicit --jobs is taken as given."""
    from aim_cli import api
    from aim_cli import push as pushmod
    from aim_cli.defaults import DEFAULT_JOBS

    config = tmp_path / "model_repos.yaml"
    config.write_text("repos:\n  local: {type: local, path: repo}\n")
    src = write_model(tmp_path / "src", {"w.bin": random_bytes(4096, 1)})
    seen = []
    real = pushmod.push
    monkeypatch.setattr(pushmod, "push", lambda *a, **k: seen.append(k["jobs"]) or real(*a, **k))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    api.push("local", "m", src, tag="v1", config=config)
    api.push("local", "m", src, tag="v2", config=config, jobs=8)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    api.push("local", "m", src, tag="v3", config=config)
    assert seen == [4, 8, DEFAULT_JOBS]


def test_upload_slots_bound_chunks_and_bytes_and_always_pass_one():
    slots = UploadSlots(3, 10)
    assert slots.room_for(64)  # nothing held: a chunk larger than the budget still passes
    slots.acquire(4)
    slots.acquire(4)
    assert not slots.room_for(4)  # 12 bytes > 10
    assert slots.room_for(2)
    slots.acquire(2)
    assert not slots.room_for(0)  # 3 chunks held
    slots.release(4)
    assert slots.room_for(4) and (slots.held, slots.bytes) == (2, 6)


def test_an_upload_waiting_for_room_goes_on_once_a_chunk_is_stored():
    class Observed(UploadSlots):
        def __init__(self, count, budget):
            super().__init__(count, budget)
            self.refused = threading.Event()

        def room_for(self, size):
            room = super().room_for(size)
            if not room:
                self.refused.set()
            return room

    slots = Observed(8, 10)
    slots.acquire(8)
    waiter = threading.Thread(target=slots.acquire, args=(8,))
    waiter.start()
    assert slots.refused.wait(30)  # it found no room: 16 bytes > 10
    assert waiter.is_alive()  # and waits, since nothing was released
    slots.release(8)
    waiter.join(30)
    assert not waiter.is_alive() and (slots.held, slots.bytes) == (1, 8)


def test_a_push_bounds_the_chunk_bytes_its_uploads_hold(repo, tmp_path, monkeypatch):
    """The uploader is made with the byte budget: with a budget of one byte, one chunk at a time
    is handed over, and the push still stores every chunk."""
    held = []
    real = push_module.UploadSlots

    class Recording(real):
        def acquire(self, size):
            super().acquire(size)
            held.append((self.held, self.budget))

    monkeypatch.setattr(push_module, "UPLOAD_BUDGET", 1)
    monkeypatch.setattr(push_module, "UploadSlots", Recording)
    src = tmp_path / "m"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(6 << 20))
    result = push(repo, "m", "v1", src)
    assert result.new_chunks >= 2 and held and all(h == 1 and b == 1 for h, b in held)
