"""aim_cli.leases: shared push leases, the exclusive gc lease, refresh, staleness, take-over.

Leases are planted by writing their JSON under ``locks/`` as another process would; no test
sleeps to synchronise: waiting tests poll a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from aim_cli import gc, leases
from aim_cli import push as pushmod
from aim_cli.errors import LockHeldError, StorageError
from aim_cli.store import Repository
from tests.audit_helpers import make_model, repo  # noqa: F401  (repo is a fixture)


def plant(env, kind: str, *, pid: int, host: str | None = None, age: float = 0.0, lease_id: str = "planted") -> str:
    now = time.time()
    body = {"id": lease_id, "kind": kind, "command": "push" if kind == leases.SHARED else "gc",
            "host": host or socket.gethostname(), "pid": pid, "created": now - age, "refreshed": now - age}
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
def garbage(repo, tmp_path):  # noqa: F811
    """A repository whose only version was deleted: every blob is garbage. Returns (env, digests)."""
    repo.push("m", make_model(tmp_path / "src"), "v1")
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
    result = gc.collect(env.repository, wait=0)  # the holder is gone: its lease is stale at once
    assert result.deleted == len(blobs) and env.blobs() == {}
    assert lease_ids(env) == []


def test_a_lease_of_another_host_blocks_until_it_times_out(garbage, monkeypatch):
    env, blobs = garbage
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "30")
    plant(env, leases.SHARED, pid=1, host="other-host.example", age=5)
    with pytest.raises(LockHeldError, match="other-host.example"):
        gc.collect(env.repository, wait=0)
    assert set(env.blobs()) == blobs
    plant(env, leases.SHARED, pid=1, host="other-host.example", age=31)
    assert gc.collect(env.repository, wait=0).deleted == len(blobs)
    assert lease_ids(env) == []


def test_a_push_waits_for_gc_then_gives_up(repo, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIM_PUSH_WAIT", "0.2")
    plant(repo, leases.EXCLUSIVE, pid=os.getpid())  # a live gc on this host
    src = make_model(tmp_path / "src")
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
        poll(lambda: any(lease.kind == leases.EXCLUSIVE for lease in leases.read_leases(env.repository)),
             "gc to write its lease")
        with pytest.raises(LockHeldError, match="gc by pid"):
            leases.acquire(env.repository, leases.SHARED, "push", wait=0)  # a later push waits for gc
        assert set(env.blobs()) == blobs  # gc has not started deleting while the early push runs
    finally:
        early_push.release()
        thread.join()
    assert "error" not in outcome, outcome
    assert outcome["result"].deleted == len(blobs) and lease_ids(env) == []


def test_two_gcs_exclude_each_other(repo):  # noqa: F811
    with leases.acquire(repo.repository, leases.EXCLUSIVE, "gc", wait=0):
        with pytest.raises(LockHeldError):
            gc.collect(repo.repository, wait=0.1)
    assert lease_ids(repo) == []


class _Faulty:
    """Wraps a backend; ``on_put(key)`` runs before every put and may raise."""

    def __init__(self, inner, on_put):
        self.inner, self.on_put, self.location = inner, on_put, inner.location

    def put(self, key, data):
        self.on_put(key)
        return self.inner.put(key, data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_push_whose_lease_was_removed_does_not_commit(repo, tmp_path):  # noqa: F811
    stolen = []
    once = threading.Lock()

    def steal(key):  # another process judged the lease stale and removed it, mid-push
        with once:
            if key.startswith("blobs/") and not stolen:
                stolen.extend(lease.id for lease in leases.read_leases(repo.repository))
                for lease_id in stolen:
                    repo.repository.backend.delete(leases.lease_key(lease_id))

    faulty = Repository(_Faulty(repo.repository.backend, steal), repo.name)
    with pytest.raises(LockHeldError, match="lost its shared lease"):
        pushmod.push(faulty, "m", "v1", make_model(tmp_path / "src"))
    assert len(stolen) == 1
    assert not repo.repository.has_version("m", "v1")


def test_a_lease_that_cannot_be_refreshed_is_lost(repo, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "0.4")
    writes = []

    def fail_refreshes(key):
        if key.startswith(leases.LOCKS):
            writes.append(key)
            if len(writes) > 1:
                raise StorageError("storage unreachable")

    faulty = Repository(_Faulty(repo.repository.backend, fail_refreshes), repo.name)
    lease = leases.acquire(faulty, leases.SHARED, "push", wait=0)

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


def test_a_held_lease_is_refreshed(repo, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AIM_LEASE_TIMEOUT", "3")
    with leases.acquire(repo.repository, leases.SHARED, "push", wait=0) as lease:
        first = leases.read_leases(repo.repository)[0].refreshed
        poll(lambda: leases.read_leases(repo.repository)[0].refreshed > first, "a refresh")
        lease.check()  # refreshed in time: still ours
        assert [x.id for x in leases.live_leases(repo.repository, 3)] == [lease.id]
    assert lease_ids(repo) == []


def test_an_unreadable_lease_blocks_gc_but_not_push(repo, tmp_path):  # noqa: F811
    repo.repository.backend.put(leases.lease_key("junk"), b"not json")
    with pytest.raises(LockHeldError, match="locks/junk.json"):
        gc.collect(repo.repository, wait=0)
    repo.push("m", make_model(tmp_path / "src"), "v1")
    assert repo.repository.has_version("m", "v1")
