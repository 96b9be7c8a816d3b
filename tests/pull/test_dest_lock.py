"""aim_cli.pull.dest_lock: one pull at a time per DEST; stale locks taken over by exactly one pull;
nothing but a regular file ever opened; every lock file parsed with bounds.

Races are interleaved deterministically: ``_step`` is where another process may act, and a test
runs a second DestLock's whole acquire() right there.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.errors import LockHeldError, UsageError
from aim_cli.pull import dest_lock
from aim_cli.pull.dest_lock import LOCK_NAME, TAKEOVER_NAME, DestLock, LockOwner, parse_lock
from tests.helpers import LOCAL_ONLY, dead_pid, files_of, make_variant_model, ok, one_line_error, work_files


def lock_bytes(pid: int, host: str | None = None) -> bytes:
    return json.dumps({"pid": pid, "host": host or socket.gethostname()}).encode()


def plant(dest: Path, name: str, content: bytes) -> Path:
    path = dest / ".aim" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def owner_of(dest: Path) -> LockOwner | None:
    """Who holds DEST's lock, by its file alone."""
    return parse_lock((dest / ".aim" / LOCK_NAME).read_bytes())


class Interleaved(DestLock):
    """A DestLock that runs ``other`` (another pull's acquire) once, when it reaches ``point``."""

    def __init__(self, dest: Path, point: str, other):
        super().__init__(dest)
        self.point, self.other, self.ran = point, other, []

    def _step(self, point: str) -> None:
        if point == self.point and not self.ran:
            self.ran.append(point)
            self.other()


def outcome(lock: DestLock) -> str:
    try:
        lock.acquire()
    except LockHeldError as e:
        return f"refused: {e}"
    return "holds"


def test_a_lock_is_exclusive_and_released(tmp_path):
    first, second = DestLock(tmp_path), DestLock(tmp_path)
    first.acquire()
    assert owner_of(tmp_path) == LockOwner(socket.gethostname(), os.getpid())
    with pytest.raises(LockHeldError, match=f"another pull into {tmp_path} is running"):
        second.acquire()
    first.release()
    assert os.listdir(tmp_path / ".aim") == []  # no temp or takeover file left behind
    second.acquire()
    second.release()


@pytest.mark.parametrize("point", ["judged", "takeover"])
def test_two_pulls_taking_over_one_stale_lock_exactly_one_holds(tmp_path, point):
    """Both pulls judge the dead owner's lock stale. With "read, unlink, create", the second
    unlinked the first's fresh lock and both held DEST. Here the other pull runs its whole
    acquire right after the first judged the lock stale ("judged"), or while the first holds the
    takeover lock ("takeover"): exactly one of them holds DEST, the other is refused."""
    plant(tmp_path, LOCK_NAME, lock_bytes(dead_pid()))
    b = DestLock(tmp_path)
    results = {}
    a = Interleaved(tmp_path, point, lambda: results.setdefault("b", outcome(b)))
    results["a"] = outcome(a)
    assert a.ran == [point]
    assert sorted(r.split(":")[0] for r in results.values()) == ["holds", "refused"], results
    holder = a if results["a"] == "holds" else b
    assert holder.held and owner_of(tmp_path) == LockOwner(socket.gethostname(), os.getpid())
    assert not (tmp_path / ".aim" / TAKEOVER_NAME).exists()
    holder.release()
    assert os.listdir(tmp_path / ".aim") == []


def test_a_takeover_in_progress_is_waited_for_and_one_left_by_a_dead_pull_is_named(tmp_path):
    plant(tmp_path, LOCK_NAME, lock_bytes(dead_pid()))
    plant(tmp_path, TAKEOVER_NAME, lock_bytes(os.getpid()))  # a live pull is taking over
    with pytest.raises(LockHeldError, match="is taking over the stale lock"):
        DestLock(tmp_path).acquire()
    takeover = plant(tmp_path, TAKEOVER_NAME, lock_bytes(dead_pid()))
    with pytest.raises(LockHeldError, match=f"{takeover} was left by a pull that died") as e:
        DestLock(tmp_path).acquire()
    assert f"delete {takeover}" in e.value.hint
    takeover.unlink()
    lock = DestLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    path = plant(tmp_path, LOCK_NAME, lock_bytes(1, "other-host.example"))
    with pytest.raises(LockHeldError, match=re.escape("pid 1 on other-host.example")) as e:
        DestLock(tmp_path).acquire()
    assert f"delete {path}" in e.value.hint and path.read_bytes() == lock_bytes(1, "other-host.example")


def test_release_removes_only_its_own_lock(tmp_path):
    lock = DestLock(tmp_path)
    lock.acquire()
    (tmp_path / ".aim" / LOCK_NAME).unlink()  # removed by hand, then taken by another pull
    plant(tmp_path, LOCK_NAME, lock_bytes(1, "other-host.example"))
    lock.release()
    assert owner_of(tmp_path) == LockOwner("other-host.example", 1)


GARBAGE_LOCKS = {
    "empty": b"",
    "empty-object": b"{}",
    "not-json": b"pid=12",
    "non-utf8": b'{"pid": 1, "host": "\xff"}',
    "not-an-object": b"[1]",
    "pid-1e400": b'{"pid": 1e400, "host": "%s"}' % socket.gethostname().encode(),
    "pid-infk": b'{"pid": "infk", "host": "h"}',
    "pid-nan": b'{"pid": NaN, "host": "h"}',
    "pid-negative": lock_bytes(-5),
    "pid-huge": lock_bytes(2**64),
    "pid-true": b'{"pid": true, "host": "h"}',
    "host-two-lines": lock_bytes(1, "a\nb"),
    "deep": b"[" * 60_000,
    "ten-megabytes": b"{" + b" " * (10 * 1024 * 1024) + b"}",
}


@pytest.mark.parametrize("content", GARBAGE_LOCKS.values(), ids=GARBAGE_LOCKS.keys())
def test_a_lock_file_that_is_not_a_lock_is_taken_over(tmp_path, content):
    """Locks are written whole (link of a complete file), so such a file is no live pull's."""
    plant(tmp_path, LOCK_NAME, content)
    lock = DestLock(tmp_path)
    lock.acquire()
    assert owner_of(tmp_path) == LockOwner(socket.gethostname(), os.getpid())
    lock.release()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink(path: Path) -> None:
    target = path.parent.parent.parent / "elsewhere"  # beside DEST
    target.write_bytes(lock_bytes(dead_pid()))
    path.symlink_to(target)


def _directory(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("make", [_fifo, _symlink, _directory], ids=["fifo", "symlink", "directory"])
@pytest.mark.parametrize("name", [LOCK_NAME, TAKEOVER_NAME])
def test_a_lock_that_is_not_a_regular_file_is_refused_unopened(tmp_path, make, name):
    dest = tmp_path / "dest"
    (dest / ".aim").mkdir(parents=True)
    if name == TAKEOVER_NAME:
        plant(dest, LOCK_NAME, lock_bytes(dead_pid()))
    make(dest / ".aim" / name)
    with pytest.raises(UsageError, match=f"{dest / '.aim' / name} is not a regular file"):
        DestLock(dest).acquire()
    if make is _symlink:
        assert (tmp_path / "elsewhere").exists()  # never followed, never removed


def test_a_symlink_in_place_of_the_work_directory_is_refused(tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "dest" / ".aim").symlink_to(tmp_path / "outside")
    with pytest.raises(UsageError, match="is not a directory"):
        DestLock(tmp_path / "dest").acquire()
    assert list((tmp_path / "outside").iterdir()) == []


# -- through the console script ----------------------------------------------------------------------
@pytest.fixture
def pushed(repo, tmp_path):
    src = make_variant_model(tmp_path / "src")
    repo.push("m", src, "v1")
    return repo, src


@LOCAL_ONLY
@pytest.mark.parametrize("make", [_fifo, _symlink], ids=["fifo", "symlink"])
def test_cli_pull_with_a_fifo_or_symlink_as_its_lock_exits_2(pushed, tmp_path, make):
    env, _ = pushed
    dest = tmp_path / "dest"
    (dest / ".aim").mkdir(parents=True)
    make(dest / ".aim" / LOCK_NAME)
    res = env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", timeout=60)  # a FIFO once hung here
    one_line_error(res, 2, str(dest / ".aim" / LOCK_NAME), "not a regular file")
    assert files_of(dest) == {}


@LOCAL_ONLY
@pytest.mark.parametrize(
    "content",
    [GARBAGE_LOCKS["pid-1e400"], GARBAGE_LOCKS["non-utf8"], GARBAGE_LOCKS["ten-megabytes"]],
    ids=["pid-1e400", "non-utf8", "10MB"],
)
def test_cli_pull_takes_over_a_lock_file_that_is_not_a_lock(pushed, tmp_path, content):
    env, src = pushed
    dest = tmp_path / "dest"
    plant(dest, LOCK_NAME, content)
    ok(env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1", "-q"))
    assert files_of(dest) == files_of(src) and work_files(dest) == []


@LOCAL_ONLY
def test_cli_pull_refuses_a_dest_locked_from_another_host(pushed, tmp_path):
    env, _ = pushed
    dest = tmp_path / "dest"
    path = plant(dest, LOCK_NAME, lock_bytes(7, "other-host.example"))
    one_line_error(
        env.cli("model", "pull", env.name, "m", str(dest), "--tag", "v1"),
        4,
        "another pull",
        "pid 7 on other-host.example",
        f"delete {path}",
    )


# -- property: any bytes are a lock owner or "not a lock", never an exception ------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.fixed_dictionaries(
            {},
            optional={
                "pid": st.one_of(
                    st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.booleans(), st.text(max_size=4)
                ),
                "host": st.one_of(st.text(max_size=300), st.just(socket.gethostname()), st.integers()),
            },
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_any_bytes_parse_to_an_owner_or_none(raw):
    owner = parse_lock(raw)
    if owner is not None:
        assert 0 < owner.pid <= 2**31 - 1 and owner.host.isprintable() and len(owner.host) <= 255
    assert dest_lock.is_stale(owner) in (True, False)
