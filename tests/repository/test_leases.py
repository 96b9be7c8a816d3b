"""aim_cli.repository.leases: shared push leases, the exclusive gc lease, refresh, staleness, take-over.

Leases are planted by writing their JSON under ``locks/`` as another process would. Races are
interleaved deterministically: a HookedBackend runs "the other process" (a real gc) at the exact
point of the protocol, and a FakeClock stands for time passing; no test sleeps to synchronise
(the few real-time tests poll a condition with a deadline).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli import push as pushmod
from aim_cli.audit import gc
from aim_cli.errors import LockHeldError, StorageError, UsageError
from aim_cli.repository import Repository, leases
from tests.fakes import FakeClock, HookedBackend
from tests.helpers import LOCAL_ONLY, make_variant_model, one_line_error

#: Nothing here depends on the storage format: no format 1 run of the `repo` fixture (conftest.py).
pytestmark = pytest.mark.format_neutral


def lease_body(
    kind: str,
    *,
    pid: int,
    host: str | None = None,
    age: float = 0.0,
    lease_id: str = "planted",
    timeout: float | None = None,
    now: float | None = None,
) -> dict:
    now = time.time() if now is None else now
    body = {
        "id": lease_id,
        "kind": kind,
        "command": {leases.SHARED: "push", leases.OPTIMIZE: "optimize"}.get(kind, "gc"),
        "host": host or socket.gethostname(),
        "pid": pid,
        "created": now - age,
        "refreshed": now - age,
    }
    if timeout is not None:
        body["timeout"] = timeout
    return body


def plant(env, kind: str, *, lease_id: str = "planted", **fields) -> str:
    body = lease_body(kind, lease_id=lease_id, **fields)
    env.repository.backend.put(leases.lease_key(lease_id), json.dumps(body).encode())
    return lease_id


def lease_ids(env) -> list[str]:
    return sorted(lease.id for lease in leases.read_leases(env.repository))


def poll(condition, what: str, deadline: float = 15.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)  # a pause between polls of a bounded loop, not a synchronisation
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def garbage(repo, tmp_path):
    """A repository whose only version was deleted: every blob is garbage. Returns (env, digests)."""
    repo.push("m", make_variant_model(tmp_path / "src"), "v1")
    repo.repository.delete_version("m", "v1")
    return repo, set(repo.blobs())


def test_a_stale_lease_of_a_killed_process_is_taken_over(garbage):
    env, blobs = garbage
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        plant(env, leases.SHARED, pid=holder.pid)
        with pytest.raises(LockHeldError, match=f"pid {holder.pid}"):
            gc.collect(env.repository, wait=0.2)
        assert set(env.blobs()) == blobs and lease_ids(env) == ["planted"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
    result = gc.collect(env.repository, wait=0)  # the holder is gone: its lease is stale at once
    assert result.deleted == len(blobs) and env.blobs() == {}
    assert lease_ids(env) == []


def test_a_lease_of_another_host_blocks_until_its_own_timeout(garbage, monkeypatch):
    env, blobs = garbage
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "30")
    plant(env, leases.SHARED, pid=1, host="other-host.example", age=5, timeout=30)
    with pytest.raises(LockHeldError, match=re.escape("other-host.example")):
        gc.collect(env.repository, wait=0)
    assert set(env.blobs()) == blobs
    plant(env, leases.SHARED, pid=1, host="other-host.example", age=31, timeout=30)
    assert gc.collect(env.repository, wait=0).deleted == len(blobs)
    assert lease_ids(env) == []


@pytest.mark.parametrize("recorded", [300, None], ids=["recorded-300", "old-lease-default"])
def test_a_lease_is_judged_by_its_recorded_timeout_not_the_reader_s(garbage, monkeypatch, recorded):
    """gc with AIM_LEASE_TIMEOUT=30 meets a push lease last refreshed 40 s ago that runs with 300 s
    (or an old lease without a timeout: the default, 300 s): live. Judged by gc's own 30 s it was
    deleted, and gc freed the blobs the push was about to reference."""
    env, blobs = garbage
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "30")
    plant(env, leases.SHARED, pid=1, host="other-host.example", age=40, timeout=recorded)
    with pytest.raises(LockHeldError, match=re.escape("push by pid 1 on other-host.example")):
        gc.collect(env.repository, wait=0)
    assert set(env.blobs()) == blobs and lease_ids(env) == ["planted"]
    plant(env, leases.SHARED, pid=1, host="other-host.example", age=301, timeout=recorded)
    assert gc.collect(env.repository, wait=0).deleted == len(blobs)


def test_a_lease_records_its_holder_s_timeout(repo, monkeypatch):
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "1234.5")
    with leases.acquire(repo.repository, leases.SHARED, "push", wait=0) as lease:
        stored = json.loads(repo.repository.backend.get(lease.key))
        assert stored["timeout"] == 1234.5
        assert leases.read_leases(repo.repository)[0].timeout == 1234.5


def test_a_push_waits_for_gc_then_gives_up(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("AIM_PUSH_WAIT", "0.2")
    plant(repo, leases.EXCLUSIVE, pid=os.getpid())  # a live gc on this host
    src = make_variant_model(tmp_path / "src")
    with pytest.raises(LockHeldError, match="gc by pid"):
        repo.push("m", src, "v1")
    assert not repo.repository.has_version("m", "v1") and repo.blobs() == {}
    repo.repository.backend.delete(leases.lease_key("planted"))
    repo.push("m", src, "v1")
    assert repo.repository.has_version("m", "v1") and lease_ids(repo) == []


def test_gc_keeps_later_pushes_out_while_it_waits_for_earlier_ones(garbage):
    env, blobs = garbage
    early_push = leases.acquire(env.repository, leases.SHARED, "push", wait=0)
    outcome = {}

    def run_gc():
        try:
            outcome["result"] = gc.collect(env.repository, wait=30)
        except BaseException as e:  # reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=run_gc)
    thread.start()
    try:
        poll(
            lambda: any(lease.kind == leases.EXCLUSIVE for lease in leases.read_leases(env.repository)),
            "gc to write its lease",
        )
        with pytest.raises(LockHeldError, match="gc by pid"):
            leases.acquire(env.repository, leases.SHARED, "push", wait=0)  # a later push waits for gc
        assert set(env.blobs()) == blobs  # gc has not started deleting while the early push runs
    finally:
        early_push.release()
        thread.join()
    assert "error" not in outcome, outcome
    assert outcome["result"].deleted == len(blobs) and lease_ids(env) == []


def test_two_gcs_exclude_each_other(repo):
    with leases.acquire(repo.repository, leases.EXCLUSIVE, "gc", wait=0), pytest.raises(LockHeldError):
        gc.collect(repo.repository, wait=0.1)
    assert lease_ids(repo) == []


def test_a_push_whose_lease_was_removed_does_not_commit(repo, tmp_path):
    stolen = []
    once = threading.Lock()

    def steal(op, key):  # another process judged the lease stale and removed it, mid-push
        with once:
            if op == "put" and key.startswith("blobs/") and not stolen:
                stolen.extend(lease.id for lease in leases.read_leases(repo.repository))
                for lease_id in stolen:
                    repo.repository.backend.delete(leases.lease_key(lease_id))

    hooked = Repository(HookedBackend(repo.repository.backend, before=steal), repo.name)
    with pytest.raises(LockHeldError, match="lost its shared lease"):
        pushmod.push(hooked, "m", "v1", make_variant_model(tmp_path / "src"))
    assert len(stolen) == 1
    assert not repo.repository.has_version("m", "v1")


def test_a_lease_that_cannot_be_refreshed_is_lost(repo, monkeypatch):
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "0.4")
    writes = []

    def fail_refreshes(op, key):
        if op == "put" and key.startswith(leases.LOCKS):
            writes.append(key)
            if len(writes) > 1:
                raise StorageError("storage unreachable")

    hooked = Repository(HookedBackend(repo.repository.backend, before=fail_refreshes), repo.name)
    lease = leases.acquire(hooked, leases.SHARED, "push", wait=0)

    def lost() -> bool:
        try:
            lease.check()
        except LockHeldError as e:
            return "without a refresh" in str(e)
        return False

    try:
        poll(lost, "the lease to count as lost")
    finally:
        lease.release()


def test_lease_writes_are_never_hedged(repo):
    """A hedged copy of a lease write landing after release() would bring the lease back: every
    write of a lease, the first and each refresh, asks the backend for exactly one copy."""
    puts = []

    class Recording(HookedBackend):
        def put(self, key, data, *, hedge=True):
            puts.append((key, hedge))
            return super().put(key, data, hedge=hedge)

    repository = Repository(Recording(repo.repository.backend), repo.name)
    with leases.acquire(repository, leases.SHARED, "push", wait=0) as lease:
        lease.refresh()
    assert [key for key, _ in puts] == [lease.key, lease.key]
    assert [hedge for _, hedge in puts] == [False, False]


def test_taking_a_lease_reads_the_others_never_its_own(repo):
    """Once written, a lease is looked at again for the others written meanwhile; reading its own
    body back would cost every push, gc and optimize a request. Another live lease is read, each
    look, and still keeps an exclusive taker out."""
    reads = []

    class Recording(HookedBackend):
        def get(self, key, max_size=None):
            reads.append(key)
            return super().get(key, max_size)

    repository = Repository(Recording(repo.repository.backend), repo.name)
    with leases.acquire(repository, leases.SHARED, "push", wait=0) as lease:
        assert [key for key in reads if key.startswith(leases.LOCKS)] == []
        with leases.acquire(repository, leases.SHARED, "push", wait=0) as second:
            assert [key for key in reads if key.startswith(leases.LOCKS)] == [lease.key, lease.key]
        reads.clear()
        with pytest.raises(LockHeldError):
            leases.acquire(repository, leases.EXCLUSIVE, "gc", wait=0)
        assert set(reads) == {lease.key}
    assert second.id != lease.id


def test_a_held_lease_is_refreshed(repo, monkeypatch):
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "3")
    with leases.acquire(repo.repository, leases.SHARED, "push", wait=0) as lease:
        first = leases.read_leases(repo.repository)[0].refreshed
        poll(lambda: leases.read_leases(repo.repository)[0].refreshed > first, "a refresh")
        lease.check()  # refreshed in time: still ours
        assert [x.id for x in leases.live_leases(repo.repository)] == [lease.id]
    assert lease_ids(repo) == []


# -- the refresh race, interleaved at its dangerous point ---------------------------------------------
T = 10_000.0  # the holder's timeout: its refresh thread (every T/4 of real time) never runs in a test


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(leases, "_time", fake.time)
    monkeypatch.setattr(leases, "_monotonic", fake.monotonic)
    return fake


def _held_push_lease(env, monkeypatch) -> leases.Lease:
    """A push lease (timeout T) held through a HookedBackend without hooks yet."""
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", f"{T:g}")
    return leases.acquire(Repository(HookedBackend(env.repository.backend), env.name), leases.SHARED, "push", wait=0)


@pytest.mark.parametrize(
    "paused, gc_timeout", [(1.1 * T, T), (1.1 * T, 0.1 * T), (0.3 * T, 0.1 * T), (0.3 * T, 10 * T), (0.6 * T, 0.1 * T)]
)
def test_gc_between_a_refresh_s_exists_and_put_and_the_holder_never_both_go_on(
    garbage, clock, monkeypatch, paused, gc_timeout
):
    """The holder's refresh saw its lease and is about to put it; ``paused`` seconds pass and a gc
    (with its own AIM_LEASE_TIMEOUT) runs to the end right there; then the put lands, re-creating
    the lease if gc deleted it. Whatever the timing: if gc freed the blobs, the holder knows it
    lost its lease (check() fails, now and after any later refresh, which never writes again)."""
    env, blobs = garbage
    holder = _held_push_lease(env, monkeypatch)
    steps = []

    def gc_at_the_dangerous_point(op, key):
        steps.append((op, key))
        if op == "put" and "gc" not in steps:
            steps.append("gc")
            clock.advance(paused)
            monkeypatch.setenv("AIM_LEASE_TIMEOUT", f"{gc_timeout:g}")
            try:
                gc.collect(env.repository, wait=0)
            except LockHeldError:
                steps.append("gc waited")

    holder.repo.backend.before = gc_at_the_dangerous_point
    try:
        still_held = holder.refresh()
        assert steps[:3] == [("exists", holder.key), ("put", holder.key), "gc"]
        gc_freed = env.blobs() == {}
        assert gc_freed != ("gc waited" in steps) and (gc_freed or set(env.blobs()) == blobs)
        if gc_freed:
            assert not still_held
            for _ in range(2):
                writes = steps.count(("put", holder.key))
                assert holder.refresh() is False
                assert steps.count(("put", holder.key)) == writes  # never written again
                with pytest.raises(LockHeldError, match="lost its shared lease"):
                    holder.check()
        if paused < T / 2:  # live by its own timeout, whatever gc's: gc waited, and the push goes on
            assert not gc_freed
            holder.check()
    finally:
        holder.release()


def test_a_slow_reader_judges_a_lease_by_what_it_said_when_read(garbage, clock, monkeypatch):
    """gc read the holder's lease, then took longer than T before judging it, while the holder
    kept refreshing on time. Judged by a clock read after the read, that lease was stale and gc
    deleted it under a live push; judged as of the read, it is live."""
    env, blobs = garbage
    holder = _held_push_lease(env, monkeypatch)
    slowed = []

    def slow_after_reading(op, key):
        if op == "get" and key == holder.key and not slowed:
            slowed.append(key)
            for _ in range(6):  # 1.5 T pass; the holder refreshes every T/4, as it should
                clock.advance(T / 4)
                assert holder.refresh()

    reader = Repository(HookedBackend(env.repository.backend, after=slow_after_reading), env.name)
    try:
        with pytest.raises(LockHeldError, match="push by pid"):
            gc.collect(reader, wait=0)
        assert slowed and set(env.blobs()) == blobs
        holder.check()  # still ours, and still stored
        assert holder.key in {lease.key for lease in leases.read_leases(env.repository)}
    finally:
        holder.release()


# -- what others wrote: unreadable leases, bad settings --------------------------------------------
GARBAGE_LEASES = {
    "not-json": b"not json",
    "non-utf8": b'{"kind": "shared", "host": "\xff\xfe"}',
    "not-an-object": b"[1, 2, 3]",
    "pid-1e400": json.dumps(lease_body("shared", pid=1)).replace('"pid": 1', '"pid": 1e400').encode(),
    "pid-negative": json.dumps(lease_body("shared", pid=-5)).encode(),
    "pid-huge": json.dumps(lease_body("shared", pid=2**70)).encode(),
    "refreshed-nan": json.dumps(lease_body("shared", pid=1) | {"refreshed": math.nan}).encode(),
    "timeout-infinite": json.dumps(lease_body("shared", pid=1) | {"timeout": math.inf}).encode(),
    "host-two-lines": json.dumps(lease_body("shared", pid=1, host="a\nb")).encode(),
    "deep": b"[" * 60_000,
    "ten-megabytes": b"{" + b" " * (10 * 1024 * 1024) + b"}",
}


@pytest.mark.parametrize("content", GARBAGE_LEASES.values(), ids=GARBAGE_LEASES.keys())
def test_an_unreadable_lease_blocks_gc_naming_its_key_but_not_push(repo, tmp_path, content):
    repo.repository.backend.put(leases.lease_key("junk"), content)
    with pytest.raises(LockHeldError, match=re.escape("locks/junk.json")) as e:
        gc.collect(repo.repository, wait=0)
    assert "\n" not in str(e.value) and "delete locks/junk.json" in e.value.hint
    assert [(x.id, x.kind) for x in leases.read_leases(repo.repository)] == [("junk", leases.UNKNOWN)]
    repo.push("m", make_variant_model(tmp_path / "src"), "v1")
    assert repo.repository.has_version("m", "v1")


def test_keys_under_locks_that_aim_cli_never_writes_are_not_leases(repo):
    for key in ("locks/sub/x.json", "locks/x.txt", "locks/bad name.json", "locks/.hidden.json"):
        repo.repository.backend.put(key, b"{}")
    assert leases.read_leases(repo.repository) == []
    gc.collect(repo.repository, wait=0)


@pytest.mark.parametrize(
    "content",
    [GARBAGE_LEASES["non-utf8"], GARBAGE_LEASES["pid-1e400"], GARBAGE_LEASES["ten-megabytes"]],
    ids=["non-utf8", "pid-1e400", "10MB"],
)
def test_cli_gc_blocked_by_an_unreadable_lease_says_which_key_to_delete(repo, content):
    repo.repository.backend.put(leases.lease_key("junk"), content)
    one_line_error(repo.cli("repo", "gc", repo.name, env={"AIM_GC_WAIT": "0"}), 4, "locks/junk.json", "delete")


@LOCAL_ONLY
def test_cli_gc_with_a_shorter_timeout_leaves_a_live_push_lease_alone(repo):
    plant(repo, leases.SHARED, pid=1, host="other-host.example", age=10, timeout=300)
    one_line_error(
        repo.cli("repo", "gc", repo.name, env={"AIM_LEASE_TIMEOUT": "1", "AIM_GC_WAIT": "0"}),
        4,
        "push by pid 1 on other-host.example",
    )
    assert lease_ids(repo) == ["planted"]


@LOCAL_ONLY
@pytest.mark.parametrize("variable", ["AIM_LEASE_TIMEOUT", "AIM_GC_WAIT"])
@pytest.mark.parametrize("value", ["1e400", "infk", "nan", "-5"])
def test_cli_refuses_a_wait_or_timeout_that_is_not_a_number_of_seconds(repo, variable, value):
    one_line_error(repo.cli("repo", "gc", repo.name, env={variable: value}), 2, variable, value)
    assert lease_ids(repo) == []


def test_settings_out_of_range_are_usage_errors(monkeypatch):
    for value in ("0", "1e400", "inf", "nan", "x", "-1", f"{8 * 86400}"):
        monkeypatch.setenv("AIM_LEASE_TIMEOUT", value)
        with pytest.raises(UsageError, match="AIM_LEASE_TIMEOUT"):
            leases.lease_timeout()
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", " ")
    assert leases.lease_timeout() == leases.DEFAULT_TIMEOUT


# -- property: parsing any bytes gives a lease or "unknown", never an exception ----------------------
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
TEXTS = st.one_of(st.text(max_size=300), st.just(socket.gethostname()), NUMBERS)
LEASE_DICTS = st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from([*leases.KINDS, "other"]), NUMBERS)},
    optional={
        "id": TEXTS,
        "command": TEXTS,
        "host": TEXTS,
        "pid": NUMBERS,
        "created": NUMBERS,
        "refreshed": NUMBERS,
        "timeout": NUMBERS,
    },
)


def _check_parsed(info: leases.LeaseInfo) -> None:
    assert info.id == "x"
    info.stale(time.time())
    assert "\n" not in info.describe() and "\r" not in info.describe()
    if info.kind == leases.UNKNOWN:
        return
    assert info.kind in leases.KINDS
    assert 0 < info.pid <= leases.MAX_PID and info.host.isprintable() and len(info.host) <= leases.MAX_NAME
    assert all(math.isfinite(x) for x in (info.created, info.refreshed, info.timeout))
    assert leases.MIN_TIMEOUT <= info.timeout <= leases.MAX_SECONDS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_lease_or_unknown(raw):
    _check_parsed(leases.parse_lease("x", raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LEASE_DICTS)
def test_any_json_object_parses_to_a_lease_or_unknown(d):
    _check_parsed(leases.parse_lease("x", json.dumps(d).encode()))


# -- format 3's optimize lease: one re-encoder at a time, gc waits for it, pushes ignore it ---------
def test_two_optimizers_exclude_each_other(repo):
    with leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0):
        with pytest.raises(LockHeldError, match=r"waiting 0s for the other re-encoder.*optimize by pid"):
            leases.acquire(repo.repository, leases.OPTIMIZE, "push", wait=0)  # push's inline re-encode
        with pytest.raises(LockHeldError, match=r"waiting 0.1s for the other re-encoder"):
            leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0.1)  # waits, bounded
        assert [lease.kind for lease in leases.read_leases(repo.repository)] == [leases.OPTIMIZE]
    with leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0):
        pass
    assert lease_ids(repo) == []


def test_of_two_optimizers_writing_at_once_at_most_one_holds(repo):
    """Optimizer A wrote its lease; before it looks, B writes and looks (and sees A). Write, then
    look: B withdraws, and A, looking last, sees nothing ahead of it and holds."""
    second = []

    def b_between_a_s_write_and_look(op, key):
        if op == "put" and key.startswith("locks/") and not second:
            second.append("B")
            with pytest.raises(LockHeldError, match="the other re-encoder"):
                leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0)
            second.append("B gave up")

    hooked = Repository(HookedBackend(repo.repository.backend, after=b_between_a_s_write_and_look), repo.name)
    with leases.acquire(hooked, leases.OPTIMIZE, "optimize", wait=0) as held:
        assert second == ["B", "B gave up"]
        assert [lease.id for lease in leases.read_leases(repo.repository)] == [held.id]
    assert lease_ids(repo) == []


def test_gc_waits_for_an_optimizer_then_collects(garbage):
    env, blobs = garbage
    optimizer = leases.acquire(env.repository, leases.OPTIMIZE, "optimize", wait=0)
    try:
        with pytest.raises(LockHeldError, match=r"gc in .* waiting 0s for pushes and re-encoders.*optimize by pid"):
            gc.collect(env.repository, wait=0)
        assert set(env.blobs()) == blobs and lease_ids(env) == [optimizer.id]
    finally:
        optimizer.release()
    assert gc.collect(env.repository, wait=0).deleted == len(blobs)


def test_gc_waiting_for_an_optimizer_keeps_a_later_one_out(garbage):
    env, blobs = garbage
    early = leases.acquire(env.repository, leases.OPTIMIZE, "optimize", wait=0)
    outcome = {}

    def run_gc():
        try:
            outcome["result"] = gc.collect(env.repository, wait=30)
        except BaseException as e:  # reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=run_gc)
    thread.start()
    try:
        poll(
            lambda: any(lease.kind == leases.EXCLUSIVE for lease in leases.read_leases(env.repository)),
            "gc to write its lease",
        )
        with pytest.raises(LockHeldError, match="waiting 0s for gc"):
            leases.acquire(env.repository, leases.OPTIMIZE, "optimize", wait=0)
        assert set(env.blobs()) == blobs  # gc has not started while the optimizer runs
    finally:
        early.release()
        thread.join()
    assert "error" not in outcome, outcome
    assert outcome["result"].deleted == len(blobs) and lease_ids(env) == []


def test_an_optimizer_waits_for_gc(repo):
    with leases.acquire(repo.repository, leases.EXCLUSIVE, "gc", wait=0):
        with pytest.raises(LockHeldError, match=r"optimize in .* waiting 0s for gc to finish: gc by pid"):
            leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0)
        assert [lease.kind for lease in leases.read_leases(repo.repository)] == [leases.EXCLUSIVE]


def test_pushes_and_an_optimizer_do_not_block_each_other(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("AIM_PUSH_WAIT", "0")
    monkeypatch.setenv("AIM_OPTIMIZE_WAIT", "0")
    with leases.acquire(repo.repository, leases.OPTIMIZE, "optimize"):
        repo.push("m", make_variant_model(tmp_path / "src"), "v1")  # its shared lease is granted at once
        assert repo.repository.has_version("m", "v1")
    with (
        leases.acquire(repo.repository, leases.SHARED, "push"),
        leases.acquire(repo.repository, leases.OPTIMIZE, "optimize") as optimizer,
    ):
        optimizer.check()
        assert sorted(lease.kind for lease in leases.read_leases(repo.repository)) == [leases.OPTIMIZE, leases.SHARED]
    assert lease_ids(repo) == []


def test_a_stale_optimize_lease_of_another_host_is_taken_over(repo, clock, monkeypatch):
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "30")
    plant(repo, leases.OPTIMIZE, pid=1, host="other-host.example", now=clock.now, timeout=30)
    with pytest.raises(LockHeldError, match=re.escape("optimize by pid 1 on other-host.example")):
        leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0)
    clock.advance(31)  # its holder stopped refreshing: stale by its own recorded timeout
    with leases.acquire(repo.repository, leases.OPTIMIZE, "optimize", wait=0) as mine:
        assert lease_ids(repo) == [mine.id]
