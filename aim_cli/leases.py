"""Leases: how `repo gc` and pushes stay out of each other's way (DESIGN.md section 6).

The danger: a push asks whether a chunk is stored, finds it (left unreferenced by a deleted
version), skips the upload; gc then deletes it as garbage; the push commits a manifest naming a
blob that is gone. Leases order the two, restic-style, with nothing but the Backend contract
(put, exists, list, get, delete), so they work the same on a directory, NFS and S3.

    locks/<id>.json   {"id", "kind": "shared"|"exclusive", "command", "host", "pid",
                       "created", "refreshed"}          (times: UNIX seconds, wall clock)

- A push holds a **shared** lease from before it asks which chunks exist until after its commit.
  gc holds the **exclusive** lease from before it reads the manifests until its last delete.
- Acquiring is "write, then look": write our lease, then list the others.
  A shared lease that sees a live exclusive one withdraws (deletes itself) and waits for it to go.
  An exclusive lease that sees another exclusive one withdraws too and retries after a random pause;
  one that sees only shared leases stays written (so that pushes starting later wait for it) and
  waits until every shared lease is gone. Of two processes that write and then list, the second
  to write always sees the first, so gc never reads the manifests while a push it did not see
  could still commit: a push that finished before gc's last look has committed its manifest (which
  gc's listing then shows), a push that writes its lease later sees gc's lease and waits.
- Waits are bounded: gc waits ``AIM_GC_WAIT`` seconds (default 60) for pushes, a push waits
  ``AIM_PUSH_WAIT`` seconds (default 600) for gc; then LockHeldError (exit 4) naming the holder.
- A holder refreshes its lease from a daemon thread every ``timeout/4``. A lease is **stale** when
  it was not refreshed for ``AIM_LEASE_TIMEOUT`` seconds (default 300), or at once when it names
  this host and a pid that no longer runs. Stale leases are ignored and deleted by whoever sees them.
- A holder that could have been judged stale must not act on its lease: ``Lease.check()`` fails if
  the lease file is gone (someone removed it) or if the longest gap between two successful
  refreshes reached ``timeout/2`` (the process was paused or the storage unreachable). Push calls
  it right before the commit, gc before each batch of deletes; then the push aborts with
  LockHeldError instead of committing (rerun it: it re-uploads what is missing).
- Assumptions: hosts' clocks agree to well within ``timeout/2``; processes that share a host
  name share a pid namespace (else a live lease of a container could look dead to its neighbour).
  A reused pid only delays the take-over until the timeout. Residual window: a process paused for
  longer than the timeout between its final ``check()`` and its single commit (or delete) request;
  restic has the same one.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from aim_cli.errors import KeyNotFoundError, LockHeldError
from aim_cli.store import Repository

LOCKS = "locks/"
SHARED = "shared"
EXCLUSIVE = "exclusive"
DEFAULT_TIMEOUT = 300.0
DEFAULT_GC_WAIT = 60.0
DEFAULT_PUSH_WAIT = 600.0


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return max(0.0, value)


def lease_timeout() -> float:
    return max(0.01, _env_seconds("AIM_LEASE_TIMEOUT", DEFAULT_TIMEOUT))


def lease_key(lease_id: str) -> str:
    return f"{LOCKS}{lease_id}.json"


def owner_is_gone(host: str, pid: int) -> bool:
    """True when a lock or lease names this host and a process that no longer exists."""
    return host == socket.gethostname() and (pid <= 0 or not _pid_alive(pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LeaseInfo:
    """One lease as stored. ``kind`` is "unknown" for a file that cannot be parsed."""

    id: str
    kind: str
    command: str = ""
    host: str = ""
    pid: int = 0
    created: float = 0.0
    refreshed: float = 0.0

    def stale(self, timeout: float) -> bool:
        if self.kind == "unknown":
            return False  # not ours to judge: keep blocking gc, and name the key in the message
        if owner_is_gone(self.host, self.pid):
            return True
        return time.time() - self.refreshed > timeout

    def describe(self) -> str:
        if self.kind == "unknown":
            return f"an unreadable lease {lease_key(self.id)}"
        age = max(0, int(time.time() - self.created))
        return f"{self.command or self.kind} by pid {self.pid} on {self.host} (for {age}s)"


def read_leases(repo: Repository) -> list[LeaseInfo]:
    """Every lease in ``locks/``, stale or not."""
    out = []
    for obj in repo.backend.list(LOCKS):
        name = obj.key[len(LOCKS):]
        if "/" in name or not name.endswith(".json"):
            continue
        lease_id = name[: -len(".json")]
        try:
            d = json.loads(repo.backend.get(obj.key))
            out.append(LeaseInfo(lease_id, str(d["kind"]), str(d.get("command", "")), str(d["host"]),
                                 int(d["pid"]), float(d["created"]), float(d["refreshed"])))
        except KeyNotFoundError:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError):
            out.append(LeaseInfo(lease_id, "unknown"))
    return out


def live_leases(repo: Repository, timeout: float) -> list[LeaseInfo]:
    """The leases that are not stale; stale ones are deleted on the way."""
    live = []
    for lease in read_leases(repo):
        if lease.stale(timeout):
            repo.backend.delete(lease_key(lease.id))
        else:
            live.append(lease)
    return live


class Lease:
    """A lease this process holds, refreshed by a daemon thread until ``release()``."""

    def __init__(self, repo: Repository, kind: str, command: str, timeout: float):
        self.repo = repo
        self.kind = kind
        self.command = command
        self.timeout = timeout
        self.id = uuid.uuid4().hex
        self.key = lease_key(self.id)
        self.created = time.time()
        self.lost = ""  # why the lease can no longer be trusted
        self.max_gap = 0.0
        self._last_ok = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        stamp = time.monotonic()
        body = {"id": self.id, "kind": self.kind, "command": self.command, "host": socket.gethostname(),
                "pid": os.getpid(), "created": self.created, "refreshed": time.time()}
        self.repo.backend.put(self.key, json.dumps(body).encode())
        if self._last_ok:
            self.max_gap = max(self.max_gap, stamp - self._last_ok)
        self._last_ok = stamp

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.timeout / 4):
            try:
                if not self.repo.backend.exists(self.key):
                    self.lost = "its lease was removed by another process"
                    return
                self._write()
            except Exception:  # the storage is unreachable: the growing gap makes check() fail
                continue

    def start(self) -> "Lease":
        self._write()
        self._thread = threading.Thread(target=self._refresh_loop, name=f"aim-lease-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise LockHeldError unless the lease is certainly still ours (see the module docstring)."""
        gap = max(self.max_gap, time.monotonic() - self._last_ok)
        why = self.lost
        if not why and gap >= self.timeout / 2:
            why = f"it went {gap:.1f}s without a refresh (stale after {self.timeout:g}s)"
        if not why and not self.repo.backend.exists(self.key):
            why = "its lease was removed by another process"
        if why:
            raise LockHeldError(
                f"{self.command} in {self.repo.name!r} lost its {self.kind} lease and stopped: {why}",
                f"run the {self.command} again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.repo.backend.delete(self.key)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except Exception:
            if exc is None:
                raise
            # Already failing: keep that error. The lease left behind goes stale on its own.


def _holders(leases: list[LeaseInfo]) -> str:
    shown = "; ".join(lease.describe() for lease in leases[:3])
    return shown + (f" and {len(leases) - 3} more" if len(leases) > 3 else "")


def acquire(repo: Repository, kind: str, command: str, *, wait: float | None = None) -> Lease:
    """Take a lease of ``kind`` (SHARED for a push, EXCLUSIVE for gc), waiting at most ``wait``
    seconds (default: $AIM_GC_WAIT for exclusive, $AIM_PUSH_WAIT for shared) for conflicting ones."""
    timeout = lease_timeout()
    if wait is None:
        wait = (_env_seconds("AIM_GC_WAIT", DEFAULT_GC_WAIT) if kind == EXCLUSIVE
                else _env_seconds("AIM_PUSH_WAIT", DEFAULT_PUSH_WAIT))
    deadline = time.monotonic() + wait
    pause = 0.02
    mine: Lease | None = None
    try:
        while True:
            others = [lease for lease in live_leases(repo, timeout) if mine is None or lease.id != mine.id]
            exclusive = [lease for lease in others if lease.kind == EXCLUSIVE]
            blockers = others if kind == EXCLUSIVE else exclusive
            if mine is None and not exclusive:
                mine = Lease(repo, kind, command, timeout).start()
                continue  # look again, now that ours is written
            if mine is not None and exclusive:
                mine.release()  # withdraw: an exclusive lease is (or may be) ahead of us
                mine = None
            if mine is not None and not blockers:
                return mine
            if time.monotonic() >= deadline:
                waiting_for = "gc" if exclusive else "pushes"
                raise LockHeldError(
                    f"{command} in {repo.name!r} gave up waiting {wait:g}s for {waiting_for} to finish: "
                    f"{_holders(blockers)}",
                    "retry later; a lease whose process died on another host expires after "
                    f"{timeout:g}s (AIM_LEASE_TIMEOUT)")
            time.sleep(min(pause * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 1.0, timeout / 4)
    except BaseException:
        if mine is not None:
            mine.release()
        raise
