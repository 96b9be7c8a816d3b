"""util.fs.write_beside_at, the one writer beside a target (issue 17, item 7): a random
O_EXCL|O_NOFOLLOW temp name, written whole, then renamed (replace=True: the chunk cache, exports,
the config) or linked (replace=False: the pull lock, the cache's marker), all relative to an open
directory. Failures are provoked for real (a file size limit, a directory in the target's place,
a read-only directory), never mocked."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.pull.cache import STALE_TMP_SECONDS, ChunkCache
from aim_cli.util import fs as fsmod
from aim_cli.util.fs import TEMP_NAME, write_beside_at
from tests.helpers import drop_dac_caps, write_file

pytestmark = pytest.mark.format_neutral


def write_at(directory: Path, name: str, data: bytes, **kwargs) -> bool:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return write_beside_at(fd, name, data, **kwargs)
    finally:
        os.close(fd)


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=70_000), replace=st.booleans(), fsync=st.booleans())
def test_a_write_lands_whole_under_its_name_and_leaves_no_temp(tmp_path_factory, data, replace, fsync):
    directory = tmp_path_factory.mktemp("w")
    assert write_at(directory, "out", data, replace=replace, fsync=fsync) is True
    assert (directory / "out").read_bytes() == data
    assert listing(directory) == ["out"]


# A process whose files may not grow past LIMIT bytes: the write fails with EFBIG once the temp
# file holds LIMIT bytes, a real failure in the middle of the data.
LIMIT = 4096
_LIMITED = """
import os, resource, signal, sys
from aim_cli.util.fs import write_beside_at
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
try:
    write_beside_at(fd, "target", b"n" * int(sys.argv[3]), replace=sys.argv[4] == "1")
except OSError as e:
    print(e.errno)
else:
    print("written")
"""


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("existing", [b"old bytes", None])
def test_a_write_failing_midway_leaves_no_temp_and_no_half_target(tmp_path, replace, existing):
    if existing is not None:
        write_file(tmp_path / "target", existing)
    size = 10 * LIMIT
    res = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(tmp_path), str(LIMIT), str(size), "1" if replace else "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(errno.EFBIG)
    if existing is None:
        assert listing(tmp_path) == []
    else:
        assert listing(tmp_path) == ["target"] and (tmp_path / "target").read_bytes() == existing
    # The same write without the limit succeeds: the failure was the limit's.
    res = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(tmp_path), str(2 * size), str(size), "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.stdout.strip() == "written" and (tmp_path / "target").read_bytes() == b"n" * size


def test_a_commit_that_fails_removes_the_written_temp(tmp_path):
    (tmp_path / "target").mkdir()
    write_file(tmp_path / "target" / "inside", b"keep")  # a non-empty directory: rename fails
    with pytest.raises(OSError) as caught:
        write_at(tmp_path, "target", b"x" * 100_000)
    assert caught.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert listing(tmp_path) == ["target"] and listing(tmp_path / "target") == ["inside"]


def test_a_read_only_directory_gets_nothing(tmp_path):
    """Run as a user would be (root obeys permissions without its DAC capabilities)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    write_file(directory / "target", b"old")
    directory.chmod(0o555)
    script = (
        "import os, sys\n"
        "from aim_cli.util.fs import write_beside_at\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "try:\n"
        "    write_beside_at(fd, 'target', b'new')\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    try:
        res = subprocess.run(
            [*drop_dac_caps(), sys.executable, "-c", script, str(directory)], capture_output=True, text=True, timeout=60
        )
    finally:
        directory.chmod(0o755)
    assert res.stdout.strip() == "refused", res.stderr
    assert listing(directory) == ["target"] and (directory / "target").read_bytes() == b"old"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_link_at_the_target_is_replaced_never_followed(tmp_path, dangling):
    victim = tmp_path / "victim"
    if not dangling:
        write_file(victim, b"precious", 0o600)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "out").symlink_to(victim)
    assert write_at(tmp_path / "d", "out", b"new") is True
    assert not (tmp_path / "d" / "out").is_symlink() and (tmp_path / "d" / "out").read_bytes() == b"new"
    assert victim.exists() is not dangling and (dangling or victim.read_bytes() == b"precious")
    assert listing(tmp_path / "d") == ["out"]


@pytest.mark.parametrize("dangling", [False, True])
def test_replace_false_refuses_anything_at_the_target_a_link_included(tmp_path, dangling):
    victim = tmp_path / "victim"
    if not dangling:
        write_file(victim, b"precious")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "lock").symlink_to(victim)
    write_file(tmp_path / "d" / "taken", b"first")
    assert write_at(tmp_path / "d", "lock", b"mine", replace=False) is False
    assert write_at(tmp_path / "d", "taken", b"second", replace=False) is False
    assert (tmp_path / "d" / "lock").is_symlink() and victim.exists() is not dangling
    assert dangling or victim.read_bytes() == b"precious"
    assert (tmp_path / "d" / "taken").read_bytes() == b"first"
    assert listing(tmp_path / "d") == ["lock", "taken"]  # no temp file left
    assert write_at(tmp_path / "d", "free", b"mine", replace=False) is True
    assert (tmp_path / "d" / "free").read_bytes() == b"mine" and os.stat(tmp_path / "d" / "free").st_nlink == 1


@pytest.mark.parametrize("replace", [True, False])
def test_a_link_planted_at_the_temp_name_is_never_written_through(tmp_path, monkeypatch, replace):
    import secrets

    victim = write_file(tmp_path / "victim", b"precious")
    (tmp_path / "d").mkdir()
    names = iter(["0" * 16, "1" * 16])
    monkeypatch.setattr(secrets, "token_hex", lambda _n: next(names))
    planted = tmp_path / "d" / f".out.{'0' * 16}.aim-tmp"
    planted.symlink_to(victim)
    assert TEMP_NAME.fullmatch(planted.name)
    assert write_at(tmp_path / "d", "out", b"mine", replace=replace) is True
    assert victim.read_bytes() == b"precious" and planted.is_symlink()
    assert (tmp_path / "d" / "out").read_bytes() == b"mine"
    assert listing(tmp_path / "d") == sorted(["out", planted.name])


def test_permission_bits_are_those_replaced_else_the_mode_less_the_umask(tmp_path):
    write_file(tmp_path / "kept", b"old", 0o640)
    write_at(tmp_path, "kept", b"new", mode=0o644)
    assert stat.S_IMODE(os.stat(tmp_path / "kept").st_mode) == 0o640
    old = os.umask(0o027)
    try:
        write_at(tmp_path, "fresh", b"new", mode=0o666)
        write_at(tmp_path, "lock", b"new", mode=0o644, replace=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "lock").st_mode) == 0o640


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\x00b"])
def test_a_name_that_is_not_one_file_name_is_refused(tmp_path, name):
    with pytest.raises(OSError) as caught:
        write_at(tmp_path, name, b"x")
    assert caught.value.errno == errno.EINVAL and listing(tmp_path) == []


def test_the_temp_tries_are_bounded(tmp_path, monkeypatch):
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda _n: "f" * 16)
    (tmp_path / f".out.{'f' * 16}.aim-tmp").symlink_to(tmp_path / "victim")
    with pytest.raises(FileExistsError):
        write_at(tmp_path, "out", b"x")
    assert not (tmp_path / "victim").exists() and not (tmp_path / "out").exists()
    assert fsmod._TEMP_TRIES > 1


# -- its users: the chunk cache ------------------------------------------------------------------------
def test_the_cache_writes_no_entry_through_a_link_in_a_shards_place(tmp_path, caplog):
    import blake3

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = ChunkCache(tmp_path / "cache")
    first = b"first chunk"
    cache.put(blake3.blake3(first).hexdigest(), first)  # the marker, and a shard
    data = b"x" * 1000
    digest = blake3.blake3(data).hexdigest()
    if digest[:2] == blake3.blake3(first).hexdigest()[:2]:  # pragma: no cover - 1 in 256
        data = b"y" * 1000
        digest = blake3.blake3(data).hexdigest()
    (tmp_path / "cache" / digest[:2]).symlink_to(elsewhere)
    cache.put(digest, data)
    assert listing(elsewhere) == []
    assert any("not writing to the chunk cache" in r.getMessage() for r in caplog.records)


def test_cache_prune_removes_stale_temp_files_of_both_namings_only(tmp_path):
    import blake3

    cache = ChunkCache(tmp_path)
    data = b"an entry"
    digest = blake3.blake3(data).hexdigest()
    cache.put(digest, data)
    shard = tmp_path / digest[:2]
    old = os.path.getmtime(shard / digest) - STALE_TMP_SECONDS - 10
    stale = [shard / f".{digest}.{'a' * 16}.aim-tmp", shard / f".tmp-{digest}.0123456789ab"]
    fresh = shard / f".{digest}.{'b' * 16}.aim-tmp"
    foreign = shard / f".notes.{'c' * 16}.aim-tmp"  # not an entry's temp name
    for path in [*stale, fresh, foreign]:
        write_file(path, b"partial")
    for path in [*stale, foreign]:
        os.utime(path, (old, old))
    cache.prune(10**9)
    assert listing(shard) == sorted([digest, fresh.name, foreign.name])
    assert cache.get(digest, len(data)) == data
