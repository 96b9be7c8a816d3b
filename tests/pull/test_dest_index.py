"""DEST's index (aim_cli/pull/dest_index.py, docs/design.md §6): files pull wrote and nobody
changed are not read again; anything else about them is; the index is hostile input; changed
files are built with copy_file_range from the old file's chunks and still verified whole."""

import errno
import json
import logging
import os
import subprocess

import blake3
import pytest

from aim_cli.backends.local import LocalBackend
from aim_cli.pull import plan as plan_module
from aim_cli.pull.assembly_digest import InOrderDigest
from aim_cli.pull.dest_index import MAX_INDEX_BYTES, load_index
from aim_cli.pull.pipeline import pull
from aim_cli.push import push
from aim_cli.repository import Repository
from tests.helpers import AIM, base_env, describe, file_contents, random_bytes, sigkill_when, work_files, write_model

MiB = 1 << 20


@pytest.fixture
def repo(tmp_path):
    return Repository(LocalBackend(tmp_path / "repo"), "r", jobs=4)


def _versions(tmp_path, shards: int = 2, size: int = 3 * MiB):
    """v1, and v2 with 64 KiB rewritten in the middle of every shard (the rest unchanged)."""
    v1 = {f"shard-{i}.bin": random_bytes(size, i) for i in range(shards)} | {"config.json": b'{"a": 1}'}
    v2 = dict(v1)
    for i in range(shards):
        data = bytearray(v1[f"shard-{i}.bin"])
        data[size // 2 : size // 2 + 64 * 1024] = random_bytes(64 * 1024, 100 + i)
        v2[f"shard-{i}.bin"] = bytes(data)
    return write_model(tmp_path / "v1", v1), write_model(tmp_path / "v2", v2)


@pytest.fixture
def pushed(repo, tmp_path):
    v1, v2 = _versions(tmp_path)
    push(repo, "m", "v1", v1)
    push(repo, "m", "v2", v2)
    return v1, v2


@pytest.fixture
def reads(monkeypatch):
    """The final files of DEST the planner reads (checked chunk by chunk, or re-chunked)."""
    seen: list[str] = []
    real_check, real_add = plan_module.chunks_in_place, plan_module.LocalFiles.add_file

    def check(path, *args, **kwargs):
        if "/.aim/" not in str(path):
            seen.append(os.path.basename(path))
        return real_check(path, *args, **kwargs)

    def add_file(self, path):
        seen.append(os.path.basename(path))
        return real_add(self, path)

    monkeypatch.setattr(plan_module, "chunks_in_place", check)
    monkeypatch.setattr(plan_module.LocalFiles, "add_file", add_file)
    return seen


def test_files_pull_wrote_are_trusted_by_stat_and_changed_ones_copied(repo, pushed, tmp_path, reads, monkeypatch):
    _, v2 = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    assert reads == [] and work_files(dest) == []
    again = pull(repo, "m", dest, tag="v1")
    assert reads == [] and again.kept_files == 3 and again.fetched_chunks == 0  # nothing read, nothing fetched

    copies = []
    real_copy = os.copy_file_range
    monkeypatch.setattr(os, "copy_file_range", lambda *a: copies.append(a[2]) or real_copy(*a))
    r = pull(repo, "m", dest, tag="v2")
    assert reads == []  # the old shards' chunks came from the index, not from reading them
    assert file_contents(dest) == file_contents(v2)
    assert sum(copies) >= r.reused_bytes - 2 * 2 * MiB > 0  # the unchanged chunks were copied in the kernel
    assert r.fetched_raw_bytes < 2 * MiB  # only the changed chunks were fetched
    assert work_files(dest) == []


def test_unchanged_chunks_are_copied_in_runs_not_chunk_by_chunk(repo, tmp_path, monkeypatch):
    """Chunks adjacent in the new file and in the old one are copied with one call (pull/copy_runs.py):
    a shard changed in its middle takes two, one before the change and one after."""
    v1, v2 = _versions(tmp_path, shards=1, size=24 * MiB)
    push(repo, "m", "v1", v1)
    push(repo, "m", "v2", v2)
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    copies = []
    real_copy = os.copy_file_range
    monkeypatch.setattr(os, "copy_file_range", lambda *a: copies.append(a[2]) or real_copy(*a))
    r = pull(repo, "m", dest, tag="v2")
    assert file_contents(dest) == file_contents(v2)
    chunks = len(repo.get_version("m", "v2").manifest.files[-1].chunks)
    assert len(copies) <= 2 < chunks - 2, (copies, chunks)
    assert sum(copies) == r.reused_bytes - len((v1 / "config.json").read_bytes()) > 20 * MiB


def test_a_touched_or_rewritten_file_is_read_again(repo, pushed, tmp_path, reads):
    v1, _ = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    os.utime(dest / "shard-0.bin", ns=(0, 10**18))  # touched: same bytes, another mtime
    target = dest / "shard-1.bin"  # rewritten, its size and mtime put back: only ctime tells
    st = os.stat(target)
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = pull(repo, "m", dest, tag="v1")
    assert sorted(set(reads)) == ["shard-0.bin", "shard-1.bin"]
    assert file_contents(dest) == file_contents(v1) and r.kept_files == 2  # config.json and shard-0


def test_an_entry_as_new_as_the_index_is_racy_and_read_again(repo, pushed, tmp_path, reads):
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    index = dest / ".aim" / "index.json"
    mtime = os.stat(dest / "shard-0.bin").st_mtime_ns
    os.utime(index, ns=(mtime, mtime))  # written in the same clock tick as shard-0's last write
    assert load_index(dest).trusted("shard-0.bin", os.lstat(dest / "shard-0.bin")) is None
    racy = sorted(p.name for p in dest.iterdir() if p.is_file() and p.stat().st_mtime_ns >= mtime)
    pull(repo, "m", dest, tag="v1")
    assert "shard-0.bin" in racy and sorted(reads) == racy


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "extra field", "bool size", "bad digest", "sizes disagree", "twice", "oversized", "mode"],
)
def test_a_damaged_index_is_ignored_with_a_warning(repo, pushed, tmp_path, reads, caplog, damage):
    v1, _ = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    index = dest / ".aim" / "index.json"
    doc = json.loads(index.read_bytes())
    entry = doc["entries"][0]
    if damage == "garbage":
        index.write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:-7])
    elif damage == "oversized":
        with open(index, "r+b") as f:
            f.truncate(MAX_INDEX_BYTES + 1)  # sparse: cheap
    elif damage == "mode":
        os.chmod(index, 0o666)  # anyone could have written it
    else:
        if damage == "extra field":
            entry["trusted"] = True
        elif damage == "bool size":
            entry["size"] = True
        elif damage == "bad digest":
            entry["blake3"] = "Z" * 64
        elif damage == "sizes disagree":
            entry["size"] += 1
        elif damage == "twice":
            doc["entries"].append(entry)
        index.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        r = pull(repo, "m", dest, tag="v1")
    assert any("ignoring" in m and "index.json" in m for m in caplog.messages), caplog.messages
    assert sorted(reads) == sorted(file_contents(v1))  # read, not trusted
    assert file_contents(dest) == file_contents(v1) and r.kept_files == 3
    assert load_index(dest).entries.keys() == set(file_contents(v1))  # written anew, whole


def _forge(dest, path, **fields):
    """Rewrite the index entry of ``path``: its stat taken now, the rest from ``fields``."""
    index = dest / ".aim" / "index.json"
    doc = json.loads(index.read_bytes())
    st = os.lstat(dest / path)
    for entry in doc["entries"]:
        if entry["path"] == path:
            entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino)
            entry.update(fields)
    index.write_text(json.dumps(doc))
    os.utime(index, ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns + 10**9))  # not racy


def test_verify_existing_reads_every_file(repo, pushed, tmp_path, reads):
    v1, _ = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    (dest / "shard-0.bin").write_bytes(random_bytes(3 * MiB, 99))  # changed behind the index's back
    _forge(dest, "shard-0.bin")
    pull(repo, "m", dest, tag="v1")
    assert reads == [] and file_contents(dest) != file_contents(v1)  # the index is trusted: README says so
    r = pull(repo, "m", dest, tag="v1", verify_existing=True)
    assert sorted(set(reads)) == sorted(file_contents(v1))
    assert file_contents(dest) == file_contents(v1) and r.kept_files == 2


def test_chunks_an_index_lies_about_cost_a_reassembly_never_a_wrong_file(repo, pushed, tmp_path, caplog):
    _, v2 = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    v2_chunks = {e.path: e.chunks for e in repo.get_version("m", "v2").manifest.files}
    _forge(dest, "shard-0.bin", chunks=[list(c) for c in v2_chunks["shard-0.bin"]])  # "it holds v2's chunks"
    with caplog.at_level(logging.WARNING):
        pull(repo, "m", dest, tag="v2")
    assert file_contents(dest) == file_contents(v2)
    assert any("not as indexed" in m for m in caplog.messages), caplog.messages


@pytest.mark.parametrize("error", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP])
def test_without_copy_file_range_chunks_are_read_and_verified(repo, pushed, tmp_path, monkeypatch, error):
    _, v2 = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")

    def refuse(*args):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    r = pull(repo, "m", dest, tag="v2")
    assert file_contents(dest) == file_contents(v2) and r.fetched_raw_bytes < 2 * MiB


def test_a_file_replaced_by_a_symlink_is_not_followed(repo, pushed, tmp_path):
    v1, _ = pushed
    dest = tmp_path / "out"
    pull(repo, "m", dest, tag="v1")
    outside = tmp_path / "outside.bin"
    outside.write_bytes((dest / "shard-0.bin").read_bytes())
    before = os.stat(outside)
    (dest / "shard-0.bin").unlink()
    (dest / "shard-0.bin").symlink_to(outside)
    pull(repo, "m", dest, tag="v1")
    assert not (dest / "shard-0.bin").is_symlink() and file_contents(dest) == file_contents(v1)
    after = os.stat(outside)
    assert (after.st_mtime_ns, after.st_ino, outside.read_bytes()) == (
        before.st_mtime_ns,
        before.st_ino,
        (v1 / "shard-0.bin").read_bytes(),
    )


def test_in_order_digest_equals_the_files_whatever_the_order(tmp_path):
    sizes = [1000, 5000, 70000, 3, 250000]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    data = random_bytes(sum(sizes), 7)
    chunks = [data[o : o + s] for o, s in zip(offsets, sizes, strict=True)]
    for order, present in [([0, 1, 2, 3, 4], ()), ([4, 2, 0, 3], (1,)), ([3, 1], (0, 2, 4))]:
        path = tmp_path / f"partial-{len(present)}"
        path.write_bytes(b"".join(c if i in present else bytes(len(c)) for i, c in enumerate(chunks)))
        digest = InOrderDigest(str(path), offsets, sizes, present)
        with open(path, "r+b") as f:
            for i in order:
                f.seek(offsets[i])
                f.write(chunks[i])
                f.flush()
                digest.written(i, chunks[i] if i % 2 == 0 else None)  # some from memory, some read back
        assert digest.hexdigest() == blake3.blake3(data).hexdigest()


def test_an_update_in_place_killed_with_sigkill_resumes(tmp_path):
    cfg = tmp_path / "model_repos.yaml"
    cfg.write_text("repos:\n  r: {type: local, path: repo}\n")
    v1, v2 = _versions(tmp_path, shards=6, size=8 * MiB)

    def aim(*args):
        return subprocess.run(
            [str(AIM), "--config", str(cfg), *map(str, args)],
            capture_output=True,
            text=True,
            env=base_env(),
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    for version in (v1, v2):
        assert aim("model", "push", "r", "m", version, "--tag", version.name, "-q").returncode == 0
    dest = tmp_path / "dest"
    assert aim("model", "pull", "r", "m", dest, "--tag", "v1", "-q").returncode == 0
    partial = dest / ".aim" / "partial"
    sigkill_when(
        ["--config", cfg, "model", "pull", "r", "m", dest, "--tag", "v2", "-q", "--jobs", "1"],
        lambda: partial.exists() and any(partial.iterdir()),
        what="pull",
    )
    for rel, (data, _) in file_contents(dest).items():  # every final name holds v1's file or v2's
        assert data in ((v1 / rel).read_bytes(), (v2 / rel).read_bytes())
    rerun = aim("model", "pull", "r", "m", dest, "--tag", "v2", "--json")
    assert rerun.returncode == 0, describe(rerun)
    assert file_contents(dest) == file_contents(v2) and work_files(dest) == []
    assert aim("model", "verify", "r", "m", "--tag", "v2", "--local", dest).returncode == 0


def test_a_large_chunk_written_starts_its_writeback_at_once(tmp_path):
    """dest_writer.write_at: a chunk of 256 KiB or more leaves no page dirty in the cache
    (cachestat(2)): its writeback started as it was written, not in one burst per file later.
    A small one is left to the batched sync."""
    from aim_cli.backends.uncached_read import _SYS_CACHESTAT, _cachestat
    from aim_cli.pull.dest_writer import write_at

    syscall, cache_range, counts = _cachestat()

    def dirty_pages(path) -> int:
        found = counts()
        fd = os.open(path, os.O_RDONLY)
        try:
            assert syscall(_SYS_CACHESTAT, fd, cache_range(0, 0), found, 0) == 0
        finally:
            os.close(fd)
        return found[1]

    write_at(tmp_path / "large", 0, random_bytes(2 * MiB, 30))
    write_at(tmp_path / "small", 0, random_bytes(64 * 1024, 31))
    assert dirty_pages(tmp_path / "large") < 2 * MiB // 4096 // 8  # started: almost none left dirty
    assert dirty_pages(tmp_path / "small") == 64 * 1024 // 4096


def test_renames_on_threads_keep_each_files_stat_and_a_refused_directory_keeps_no_other_file_back(tmp_path):
    """dest_writer.commit_files renames on several threads: each stat returned is its own file's,
    in order; a directory that became a symlink is refused (nothing written through it) while
    the other verified files still get their names."""
    from aim_cli.errors import UsageError
    from aim_cli.format import manifest as mf
    from aim_cli.pull.dest_writer import commit_files
    from aim_cli.pull.plan import FilePlan

    dest = tmp_path / "dest"
    (dest / ".aim" / "partial").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    plans = []
    for i, path in enumerate(["a.bin", "d/b.bin", "c.bin", "trap/x.bin", "e.bin", "f.bin"]):
        data = random_bytes(100 + i, 40 + i)
        partial = dest / ".aim" / "partial" / f"p{i}"
        partial.write_bytes(data)
        entry = mf.FileEntry(path, len(data), 0o640, blake3.blake3(data).hexdigest(), [])
        plans.append(FilePlan(entry, str(dest / path), str(partial), []))
    placed = [p for p in plans if not p.entry.path.startswith("trap/")]
    stats = commit_files(dest, placed)
    assert [s.st_size for s in stats] == [100, 101, 102, 104, 105]
    assert [s.st_ino for s in stats] == [os.stat(dest / p.entry.path).st_ino for p in placed]
    for p in plans[:3]:  # put them back as partial files, then refuse one directory
        os.replace(p.final, p.partial)
    os.symlink(tmp_path / "elsewhere", dest / "trap")
    with pytest.raises(UsageError, match="symlink"):
        commit_files(dest, [plans[3], *plans[:3]])  # the refused one first
    assert [(dest / p.entry.path).exists() for p in plans[:3]] == [True, True, True]
    assert os.listdir(tmp_path / "elsewhere") == []
