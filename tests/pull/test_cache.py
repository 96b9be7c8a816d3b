"""The shared chunk cache (aim_cli/cache.py): layout, verification on read, best-effort writes,
LRU prune, its use by pull, and the `aim_cli cache` commands."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import blake3
import pytest

from aim_cli import api
from aim_cli import push as pushmod
from aim_cli.backends.local import LocalBackend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.pull import pipeline as pullmod
from aim_cli.pull.cache import ChunkCache
from aim_cli.repository import Repository
from tests.fakes import CountingBackend
from tests.helpers import stored_sizes, version_bytes

SMALL_CHUNKS = ChunkingParams.for_average(64 * 1024)  # many chunks from a few MB of test data


def digest_of(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@pytest.fixture
def model_dir(tmp_path) -> Path:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    rng = random.Random(7)
    (src / "weights.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))
    (src / "sub" / "config.json").write_text('{"hidden": 64}\n')
    return src


@pytest.fixture(params=[2, 1], ids=["format2", "format1"])
def counting_repo(request, tmp_path, model_dir):
    """``m:v1`` pushed into a repository of each format, its backend counting blob reads."""
    backend = CountingBackend(LocalBackend(tmp_path / "repo"))
    repo = Repository(backend, "test")
    repo.init(SMALL_CHUNKS, version=request.param)
    pushmod.push(repo, "m", "v1", model_dir, params=SMALL_CHUNKS)
    backend.gets = backend.get_bytes = 0
    return repo, backend


def same_tree(a: Path, b: Path) -> bool:
    """The same files, byte for byte; the pull's index (DEST/.aim/index.json) aside."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.relative_to(b).parts[0] != ".aim")
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


# -- the cache alone ---------------------------------------------------------------------------------
def test_put_get_round_trip_and_layout(tmp_path):
    cache = ChunkCache(tmp_path / "cache")
    data = b"some chunk bytes" * 1000
    h = digest_of(data)
    assert cache.get(h, len(data)) is None
    cache.put(h, memoryview(data))
    # The layout is pinned: <root>/<h[:2]>/<h>, raw bytes, no temp file left behind.
    assert (tmp_path / "cache" / h[:2] / h).read_bytes() == data
    assert os.listdir(tmp_path / "cache" / h[:2]) == [h]
    assert sorted(os.listdir(tmp_path / "cache")) == ["aim-cache.json", h[:2]]  # the marker
    assert cache.get(h, len(data)) == data
    cache.put(h, data)  # idempotent
    assert cache.info() == (1, len(data))


def test_corrupted_entry_is_deleted_and_missed(tmp_path):
    cache = ChunkCache(tmp_path)
    data = os.urandom(5000)
    h = digest_of(data)
    cache.put(h, data)
    cache.path_of(h).write_bytes(data[:-1] + b"\0")
    assert cache.get(h, len(data)) is None
    assert not cache.path_of(h).exists()


def test_get_refuses_a_digest_that_is_not_hex64(tmp_path):
    cache = ChunkCache(tmp_path)
    assert cache.get("../../etc/passwd", 5) is None
    cache.put("../escape", b"x")
    assert not (tmp_path.parent / "escape").exists()


def test_put_never_raises_and_warns_once(tmp_path, monkeypatch, caplog):
    cache = ChunkCache(tmp_path / "cache")

    def disk_full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    for i in range(3):
        data = f"chunk {i}".encode()
        cache.put(digest_of(data), data)
    warnings = [r for r in caplog.records if "chunk cache" in r.getMessage()]
    assert len(warnings) == 1 and "disk full" in warnings[0].getMessage()
    assert cache.info() == (0, 0)
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == ["aim-cache.json"]  # the temp files were removed; the marker came first


def test_put_into_an_unusable_root_does_not_raise(tmp_path):
    root = tmp_path / "not-a-dir"
    root.write_text("a file")
    cache = ChunkCache(root)
    cache.put(digest_of(b"x"), b"x")
    assert cache.get(digest_of(b"x"), 1) is None
    assert cache.info() == (0, 0)


def test_concurrent_puts_and_gets(tmp_path):
    cache = ChunkCache(tmp_path)
    blobs = [os.urandom(2000 + i) for i in range(20)]
    errors = []

    def work():
        try:
            for data in blobs:
                cache.put(digest_of(data), data)
                got = cache.get(digest_of(data), len(data))
                assert got is None or got == data
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.info() == (len(blobs), sum(len(b) for b in blobs))
    assert all(cache.get(digest_of(b), len(b)) == b for b in blobs)


def test_get_updates_access_time(tmp_path):
    cache = ChunkCache(tmp_path)
    data = b"touch me"
    h = digest_of(data)
    cache.put(h, data)
    os.utime(cache.path_of(h), (1_000_000, 1_000_000))
    cache.get(h, len(data))
    assert os.stat(cache.path_of(h)).st_atime > 1_000_000


def test_prune_removes_least_recently_used_first(tmp_path):
    cache = ChunkCache(tmp_path)
    blobs = {}
    for i, atime in enumerate([400, 100, 300, 200]):  # entry i was last used at `atime`
        data = bytes([i]) * 1000
        h = digest_of(data)
        cache.put(h, data)
        os.utime(cache.path_of(h), (1_700_000_000 + atime, 1_700_000_000))
        blobs[atime] = h
    stale_tmp = tmp_path / "ab" / f".tmp-{'ab' * 32}.0123456789ab"  # the name a killed put leaves
    stale_tmp.parent.mkdir(exist_ok=True)
    stale_tmp.write_bytes(b"partial")
    os.utime(stale_tmp, (1_000_000, 1_000_000))

    planned = cache.prune(2500, dry_run=True)
    assert (planned.removed, planned.freed) == (2, 2000)
    assert cache.info() == (4, 4000)

    result = cache.prune(2500)
    assert (result.removed, result.freed, result.entries, result.bytes) == (2, 2000, 2, 2000)
    assert not cache.path_of(blobs[100]).exists() and not cache.path_of(blobs[200]).exists()
    assert cache.path_of(blobs[300]).exists() and cache.path_of(blobs[400]).exists()
    assert not stale_tmp.exists()

    assert cache.prune(0) == (2, 2000, 0, 0)
    assert cache.prune(0) == (0, 0, 0, 0)


def test_info_and_prune_of_a_missing_cache(tmp_path):
    cache = ChunkCache(tmp_path / "none")
    assert cache.info() == (0, 0)
    assert cache.prune(0) == (0, 0, 0, 0)


# -- the cache in a pull -------------------------------------------------------------------------------
def test_second_pull_into_an_empty_directory_fetches_nothing(tmp_path, counting_repo, model_dir):
    repo, backend = counting_repo
    cache = ChunkCache(tmp_path / "cache")
    first = pullmod.pull(repo, "m", tmp_path / "a", tag="v1", cache=cache)
    total_blob_bytes = backend.get_bytes
    # Fetched: every blob once, counted as stored (on the wire); the cache holds the raw chunks.
    assert (first.fetched_raw_bytes, first.fetched_bytes) == version_bytes(repo, "m", "v1")
    assert first.fetched_bytes == total_blob_bytes and first.fetched_raw_bytes == first.total_size
    assert cache.info().bytes == first.total_size

    backend.gets = backend.get_bytes = 0
    second = pullmod.pull(repo, "m", tmp_path / "b", tag="v1", cache=cache)
    assert backend.gets == 0 and backend.get_bytes == 0
    assert second.fetched_bytes == 0 and second.cached_bytes == second.total_size
    assert same_tree(model_dir, tmp_path / "b")


def test_without_cache_every_pull_fetches_everything(tmp_path, counting_repo, model_dir):
    repo, backend = counting_repo
    pullmod.pull(repo, "m", tmp_path / "a", tag="v1")
    first = backend.get_bytes
    backend.gets = backend.get_bytes = 0
    result = pullmod.pull(repo, "m", tmp_path / "b", tag="v1")
    assert (result.fetched_raw_bytes, result.fetched_bytes) == version_bytes(repo, "m", "v1")
    assert backend.get_bytes == first == result.fetched_bytes and result.fetched_raw_bytes == result.total_size
    assert result.cached_bytes == 0
    assert same_tree(model_dir, tmp_path / "b")


def test_corrupted_cache_entry_is_fetched_again(tmp_path, counting_repo, model_dir):
    repo, backend = counting_repo
    cache = ChunkCache(tmp_path / "cache")
    pullmod.pull(repo, "m", tmp_path / "a", tag="v1", cache=cache)
    entries = sorted(p for p in (tmp_path / "cache").rglob("*") if p.is_file())
    victim = entries[len(entries) // 2]
    good = victim.read_bytes()
    victim.write_bytes(b"\xff" + good[1:])  # same size, one byte flipped

    backend.gets = backend.get_bytes = 0
    result = pullmod.pull(repo, "m", tmp_path / "b", tag="v1", cache=cache)
    stored = stored_sizes(repo, [victim.name])[victim.name]  # a cache entry is named by its digest
    assert backend.gets == 1 and backend.get_bytes == stored
    assert (result.fetched_bytes, result.fetched_raw_bytes) == (stored, len(good))
    assert victim.read_bytes() == good  # the entry was replaced with the verified chunk
    assert same_tree(model_dir, tmp_path / "b")


def test_api_pull_uses_the_cache_dir(tmp_path, model_dir):
    config = tmp_path / "model_repos.yaml"
    config.write_text("repos:\n  local: {type: local, path: repo}\n")
    api.push("local", "m", model_dir, tag="v1", config=config)
    cache_dir = tmp_path / "cache"
    first = api.pull("local", "m", tmp_path / "a", tag="v1", cache_dir=cache_dir, config=config)
    second = api.pull("local", "m", tmp_path / "b", tag="v1", cache_dir=cache_dir, config=config)
    repository = api.open_repository("local", config=str(config))
    assert (first.fetched_raw_bytes, first.fetched_bytes) == version_bytes(repository, "m", "v1")
    assert first.fetched_raw_bytes == first.total_size and first.cached_bytes == 0
    assert second.fetched_bytes == 0 and second.cached_bytes == second.total_size
    assert api.cache_info(cache_dir).bytes == first.total_size
    assert api.cache_prune(cache_dir, 0).freed == first.total_size
    assert api.cache_info(cache_dir) == (0, 0)


# -- the commands --------------------------------------------------------------------------------------
def run_cli(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "AIM_CACHE_DIR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "aim_cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_cache_commands(tmp_path):
    cache = ChunkCache(tmp_path / "cache")
    for i, atime in enumerate([100, 200, 300]):
        data = bytes([i]) * 1024 * 1024
        cache.put(digest_of(data), data)
        os.utime(cache.path_of(digest_of(data)), (1_700_000_000 + atime, 1_700_000_000))
    newest = cache.path_of(digest_of(bytes([2]) * 1024 * 1024))

    r = run_cli("cache", "info", "--cache-dir", str(tmp_path / "cache"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) | {"cache_dir": None} == {"cache_dir": None, "entries": 3, "bytes": 3 * 1024 * 1024}

    r = run_cli("cache", "info", env_extra={"AIM_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert "3 chunks" in r.stdout and "3.0 MiB" in r.stdout

    r = run_cli("cache", "prune", "--max-size", "1MiB", "--cache-dir", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert "removed 2 chunks (2.0 MiB)" in r.stdout
    assert newest.exists() and cache.info() == (1, 1024 * 1024)

    r = run_cli("cache", "prune", "--all", env_extra={"AIM_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert cache.info() == (0, 0)


@pytest.mark.parametrize("command", [["cache", "info"], ["cache", "prune"]])
def test_cache_commands_need_a_cache_dir(command):
    r = run_cli(*command)
    assert r.returncode == 2
    assert "--cache-dir" in r.stderr and "AIM_CACHE_DIR" in r.stderr


def test_cache_prune_refuses_a_bad_size(tmp_path):
    r = run_cli("cache", "prune", "--max-size", "lots", "--cache-dir", str(tmp_path))
    assert r.returncode == 2 and "invalid size" in r.stderr
