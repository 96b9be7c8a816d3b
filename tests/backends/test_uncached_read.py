"""Reading around the page cache (aim_cli/backends/uncached_read.py): a large file the cache does
not hold is read with O_DIRECT and stays out of the cache; one it holds is left to a buffered
read; either way the bytes, the bounds and the file's flags are what a plain read gives."""

from __future__ import annotations

import fcntl
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.backends.local import LocalBackend
from aim_cli.backends.uncached_read import ALIGN, MIN_SIZE, _cached_pages, read_uncached
from aim_cli.pull.pipeline import pull
from aim_cli.push import push
from aim_cli.repository import Repository
from tests.helpers import drop_from_page_cache, file_contents, random_bytes, write_model

MiB = 1 << 20


def _write_cold(path, data: bytes) -> None:
    """``data`` on disk and none of its pages in the page cache."""
    path.write_bytes(data)
    drop_from_page_cache(path)


def _first_page_cached(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        pages = _cached_pages(fd, ALIGN)
    finally:
        os.close(fd)
    assert pages is not None  # this kernel has cachestat(2), as CI's does
    return pages > 0


def _read(path, limit: int | None = None):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        data = read_uncached(fd, size, size + 1 if limit is None else limit)
        assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags  # O_DIRECT taken off again
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the offset not moved
        return data
    finally:
        os.close(fd)


def test_a_cold_file_is_read_directly_and_stays_out_of_the_cache(tmp_path):
    data = random_bytes(3 * MiB + 123, 1)
    _write_cold(tmp_path / "blob", data)
    assert not _first_page_cached(tmp_path / "blob")  # the premise: this filesystem drops it
    got = _read(tmp_path / "blob")
    assert isinstance(got, memoryview) and bytes(got) == data
    assert not _first_page_cached(tmp_path / "blob")  # read around the cache, not through it


def test_a_cached_file_or_a_small_one_is_left_to_a_buffered_read(tmp_path):
    (tmp_path / "warm").write_bytes(random_bytes(MIN_SIZE * 2, 2))  # just written: in the cache
    assert _read(tmp_path / "warm") is None
    _write_cold(tmp_path / "small", random_bytes(MIN_SIZE - 1, 3))
    assert _read(tmp_path / "small") is None


@settings(max_examples=40, deadline=None)
@given(size=st.integers(MIN_SIZE, MIN_SIZE + 3 * ALIGN), cut=st.integers(0, 4 * ALIGN))
def test_the_bytes_and_the_limit_are_a_plain_reads_at_any_size(tmp_path_factory, size, cut):
    """Sizes around the alignment; ``limit`` below the size stands for a file grown past the
    caller's bound: exactly ``limit`` bytes come back, never more."""
    path = tmp_path_factory.mktemp("u") / "blob"
    data = random_bytes(size, size)
    _write_cold(path, data)
    limit = max(1, size + 1 - cut)
    got = _read(path, limit)
    assert got is not None and bytes(got) == data[:limit]


@pytest.mark.parametrize("version", [1, 2, 3], ids=["format1", "format2", "format3"])
def test_a_pull_from_a_cold_repository_reads_blobs_around_the_cache(tmp_path, version):
    """End to end, in every format (raw blobs, and through the store's codecs): the pull is byte
    for byte the push, and the blobs it read are still not cached."""
    src = write_model(tmp_path / "src", {"w.bin": random_bytes(6 * MiB, 4), "config.json": b"{}"})
    repo = Repository(LocalBackend(tmp_path / "repo"), "r", jobs=4)
    repo.init(version=version)
    push(repo, "m", "v1", src)
    blobs = [p for p in (tmp_path / "repo" / "blobs").rglob("*") if p.is_file()]
    for blob in blobs:
        _write_cold(blob, blob.read_bytes())
    large = [b for b in blobs if b.stat().st_size >= MIN_SIZE]
    assert large and not any(_first_page_cached(b) for b in large)
    pull(repo, "m", tmp_path / "out", tag="v1")
    assert file_contents(tmp_path / "out") == file_contents(src)
    assert not any(_first_page_cached(b) for b in large)


@pytest.mark.parametrize("flip", [0, 100_000])
def test_a_corrupt_cold_blob_is_refused_as_corrupt(tmp_path, flip):
    """The bytes a direct read hands on are verified like any others."""
    from aim_cli.errors import BlobCorruptError

    src = write_model(tmp_path / "src", {"w.bin": random_bytes(2 * MiB, 5)})
    repo = Repository(LocalBackend(tmp_path / "repo"), "r", jobs=2)
    push(repo, "m", "v1", src)
    blob = max((p for p in (tmp_path / "repo" / "blobs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    damaged = bytearray(blob.read_bytes())
    damaged[flip] ^= 0x01
    blob.chmod(0o644)
    _write_cold(blob, bytes(damaged))
    with pytest.raises(BlobCorruptError):
        pull(repo, "m", tmp_path / "out", tag="v1")
