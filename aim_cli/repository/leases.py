"""Leases: how `repo gc`, pushes and re-encoders stay out of each other's way (docs/design.md §8).

The danger: a push asks whether a chunk is stored, finds it (left unreferenced by a deleted
version), skips the upload; gc then deletes it as garbage; the push commits a manifest naming a
blob that is gone. Leases order the two, restic-style, with nothing but the Backend contract
(put, exists, list, get, delete), so they work the same on a directory, NFS and S3.

    locks/<id>.json   {"id", "kind": "shared"|"exclusive"|"optimize", "command", "host", "pid",
                       "created", "refreshed", "timeout"}   (times: UNIX seconds, wall clock)

- A push holds a **shared** lease from before it asks which chunks exist until after its commit.
  gc holds the **exclusive** lease from before it reads the manifests until its last delete.
- Acquiring is "write, then look": write our lease, then list the others.
  A shared lease that sees a live exclusive one withdraws (deletes itself) and waits for it to go.
  An exclusive lease that sees another exclusive one withdraws too and retries after a random pause;
  one that sees only shared leases stays written (so that pushes starting later wait for it) and
  waits until every shared lease is gone. Of two processes that write and then look, the second
  to write always sees the first, so gc never reads the manifests while a push it did not see
  could still commit: a push that finished before gc's last look has committed its manifest (which
  gc's listing then shows), a push that writes its lease later sees gc's lease and waits.
- Format 3's re-encoders (`repo optimize`, push's inline re-encode) hold an **optimize** lease
  while they replace stored chunks by deltas. At most one is live: it withdraws, as an exclusive
  one does, when it sees another optimize lease (or gc's), and waits; so two re-encoders never
  pass their cycle checks side by side. gc treats it as a push's shared lease (gc's exclusive
  lease stays written and waits for it to go), and pushes and an optimize lease ignore each other.
- Waits are bounded: gc waits ``AIM_GC_WAIT`` seconds (default 60) for pushes and re-encoders, a
  push waits ``AIM_PUSH_WAIT`` seconds (default 600) for gc, a re-encoder ``AIM_OPTIMIZE_WAIT``
  (default 600) for gc and the other re-encoder (``wait=0``: it gives up at once); then
  LockHeldError (exit 4) naming the holder and its key (an unreadable lease never expires: the
  message says which key to delete).

Staleness. A lease records the timeout T its holder runs with (``AIM_LEASE_TIMEOUT`` when it was
taken, default 300 s) and everyone judges it by that T, never by their own setting (a lease
without one, written by an older aim_cli, by the default). It is **stale** when it was already
more than T old when read (the reader takes its clock *before* it lists, so a reader that is slow
between reading and judging never condemns a lease refreshed meanwhile), or at once when it names
this host and a pid that no longer runs. Stale leases are ignored and deleted by whoever sees them.
Unreadable leases (not JSON, out-of-range numbers, larger than 64 KiB) are never judged: they
keep blocking gc, which names their key.

Refreshing, and why a lease that someone deleted is never acted on. The holder rewrites its lease
every T/4 from a daemon thread: "if it still exists, put it again". The put can land after another
process deleted the lease (the deletion falls between the exists and the put) and re-create it;
a conditional update is not part of the Backend contract. What makes that harmless is that the
holder measures its own gaps: for every write, the time from the *start* of the previous confirmed
write to the *end* of this one. Once a gap reaches T/2 (or T/2 passed since the last confirmed
write started) the lease is **lost for good**: the holder never writes it again, and
``Lease.check()`` fails. aim_cli deletes a lease only when it is stale (or its holder is dead):
a reader saw a lease refreshed at w when the reader's clock said more than w + T, that is (clocks
within T/2) after w + T/2 on the holder's clock, and the holder's next write had not landed then;
so that write ends more than T/2 after w, the holder's gap reaches T/2 and it stops, whether or
not the put re-created the file. ``check()`` also fails if the lease is gone (an operator deleted
it by hand; only such a deletion landing exactly between a refresh's exists and put escapes it).
Push calls ``check()`` right before its commit, gc before each batch of deletes; then the push
aborts with LockHeldError instead of committing (rerun it: it re-uploads what is missing). A lost
lease left behind is no longer refreshed, so it goes stale and others delete it.

Assumptions: hosts' clocks agree to well within T/2; processes that share a host name share a pid
namespace (else a live lease of a container could look dead to its neighbour). A reused pid only
delays the take-over until the timeout. Residual window: a process paused for longer than the
timeout between its final ``check()`` and its single commit (or delete) request; restic has the
same one. The clocks are the module's ``_time`` and ``_monotonic`` (tests drive them).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from aim_cli.errors import KeyNotFoundError, LockHeldError, ObjectTooLargeError, UsageError
from aim_cli.format.layout import LOCKS, lease_id_of, lease_key
from aim_cli.repository.facade import Repository

SHARED = "shared"
EXCLUSIVE = "exclusive"
OPTIMIZE = "optimize"  # format 3's re-encoders: one at a time, shared towards pushes, gc waits for it
KINDS = (SHARED, EXCLUSIVE, OPTIMIZE)
UNKNOWN = "unknown"
DEFAULT_TIMEOUT = 300.0
DEFAULT_GC_WAIT = 60.0
DEFAULT_PUSH_WAIT = 600.0
DEFAULT_OPTIMIZE_WAIT = 600.0
MIN_TIMEOUT = 0.01
MAX_SECONDS = 7 * 86400.0  # a week: the largest timeout or wait anyone means
LEASE_READ_LIMIT = 64 * 1024  # a lease is ~250 bytes; a larger object is not one of ours
MAX_PID = 2**31 - 1  # pid_t
MAX_NAME = 255  # a host name (and a command) as shown in messages
MAX_STAMP = 1e11  # UNIX seconds, year 5138: anything later is garbage

_time = time.time  # wall clock: lease times, compared across hosts
_monotonic = time.monotonic  # the holder's own gaps


def _env_seconds(name: str, default: float, low: float = 0.0) -> float:
    """A number of seconds from the environment, in [low, MAX_SECONDS]; anything else (not a
    number, nan, inf, negative, 1e400) is refused with UsageError rather than silently replaced."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= MAX_SECONDS:
        raise UsageError(
            f"{name}={raw[:40]!r} is not a number of seconds from {low:g} to {MAX_SECONDS:g}",
            f"set {name} to such a number, or unset it for the default ({default:g})",
        )
    return value


def lease_timeout() -> float:
    return _env_seconds("AIM_LEASE_TIMEOUT", DEFAULT_TIMEOUT, MIN_TIMEOUT)


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


# -- parsing what other processes wrote: bounded, never trusted -------------------------------------
def _text(value, limit: int = MAX_NAME) -> str:
    """A string fit for a one-line message; ValueError otherwise."""
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ValueError("not a short printable string")
    return value


def _number(value, low: float, high: float) -> float:
    """A JSON number (not a bool) in [low, high]; ValueError otherwise (nan, 1e400, 10**400)."""
    if type(value) not in (int, float) or not low <= value <= high:
        raise ValueError("number out of range")
    return float(value)


def parse_owner(d) -> tuple[str, int]:
    """(host, pid) of a decoded lock or lease; ValueError/KeyError/TypeError unless both are
    plausible (a printable host name, a pid a kernel can have)."""
    pid = d["pid"]
    if type(pid) is not int or not 0 < pid <= MAX_PID:
        raise ValueError("pid out of range")
    return _text(d["host"]), pid


def decode_json(raw: bytes):
    """JSON from bytes another process wrote; ValueError for anything that is not (non-UTF-8 and
    nesting too deep included)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True)
class LeaseInfo:
    """One lease as stored. ``kind`` is UNKNOWN for a file that cannot be parsed."""

    id: str
    kind: str
    command: str = ""
    host: str = ""
    pid: int = 0
    created: float = 0.0
    refreshed: float = 0.0
    timeout: float = DEFAULT_TIMEOUT  # the holder's, recorded in the lease

    @property
    def key(self) -> str:
        return lease_key(self.id)

    def stale(self, now: float) -> bool:
        """Stale at ``now``, the reader's wall clock taken before the lease was read."""
        if self.kind == UNKNOWN:
            return False  # not ours to judge: keep blocking gc, and name the key in the message
        if owner_is_gone(self.host, self.pid):
            return True
        return now - self.refreshed > self.timeout

    def describe(self) -> str:
        if self.kind == UNKNOWN:
            return f"an unreadable lease {self.key}"
        age = max(0, int(_time() - self.created))
        return f"{self.command or self.kind} by pid {self.pid} on {self.host} (for {age}s, {self.key})"


def parse_lease(lease_id: str, raw: bytes) -> LeaseInfo:
    """The lease stored as ``raw``; an UNKNOWN one for anything malformed. Never raises."""
    try:
        d = decode_json(raw)
        if not isinstance(d, dict) or d["kind"] not in KINDS:
            raise ValueError("not a lease")
        host, pid = parse_owner(d)
        return LeaseInfo(
            lease_id,
            d["kind"],
            _text(d.get("command", "")),
            host,
            pid,
            _number(d["created"], 0, MAX_STAMP),
            _number(d["refreshed"], 0, MAX_STAMP),
            _number(d.get("timeout", DEFAULT_TIMEOUT), MIN_TIMEOUT, MAX_SECONDS),
        )
    except (ValueError, KeyError, TypeError):
        return LeaseInfo(lease_id, UNKNOWN)


def read_leases(repo: Repository, *, skip: str | None = None) -> list[LeaseInfo]:
    """Every lease in ``locks/``, stale or not, but the lease ``skip`` (the caller's own: what it
    says is known, and reading it back would cost a request of each look at the others). Each
    read is bounded (LEASE_READ_LIMIT)."""
    out = []
    for obj in repo.backend.list(LOCKS):
        lease_id = lease_id_of(obj.key)
        if lease_id is None or lease_id == skip:
            continue  # not a name aim_cli writes (no aim_cli process holds it), or ours
        try:
            raw = repo.backend.get(obj.key, max_size=LEASE_READ_LIMIT)
        except KeyNotFoundError:
            continue  # released while we listed
        except ObjectTooLargeError:
            raw = b""  # unknown, named in messages
        out.append(parse_lease(lease_id, raw))
    return out


def live_leases(repo: Repository, *, skip: str | None = None) -> list[LeaseInfo]:
    """The leases that are not stale, but ``skip`` (read_leases); stale ones are deleted on the way."""
    now = _time()  # before reading: judge each lease by what it said when it was read
    live = []
    for lease in read_leases(repo, skip=skip):
        if lease.stale(now):
            repo.backend.delete(lease.key)
        else:
            live.append(lease)
    return live


# -- holding a lease ----------------------------------------------------------------------------------
class Lease:
    """A lease this process holds, refreshed by a daemon thread until ``release()``."""

    def __init__(self, repo: Repository, kind: str, command: str, timeout: float):
        self.repo = repo
        self.kind = kind
        self.command = command
        self.timeout = timeout
        self.id = uuid.uuid4().hex
        self.key = lease_key(self.id)
        self.created = _time()
        self.lost = ""  # why the lease can no longer be trusted; once set, never written again
        self.max_gap = 0.0  # the longest gap between confirmed writes, each counted to its end
        self._confirmed: float | None = None  # when the last confirmed write started (monotonic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        started = _monotonic()
        body = {
            "id": self.id,
            "kind": self.kind,
            "command": self.command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": self.created,
            "refreshed": _time(),
            "timeout": self.timeout,
        }
        # Never hedged: a straggling copy landing after release() would bring the lease back.
        self.repo.backend.put(self.key, json.dumps(body).encode(), hedge=False)
        since = started if self._confirmed is None else self._confirmed
        self.max_gap = max(self.max_gap, _monotonic() - since)
        self._confirmed = started

    def _gap(self) -> float:
        assert self._confirmed is not None  # set by the write that took the lease
        return max(self.max_gap, _monotonic() - self._confirmed)

    def _lose_if_late(self) -> None:
        gap = self._gap()
        if not self.lost and gap >= self.timeout / 2:
            self.lost = f"it went {gap:.1f}s without a refresh (others may judge it stale after {self.timeout:g}s)"

    def refresh(self) -> bool:
        """Rewrite the lease unless it is lost or gone (see the module docstring); return whether it
        is still held. A lost lease is never written again."""
        self._lose_if_late()
        if self.lost:
            return False
        if not self.repo.backend.exists(self.key):
            self.lost = "its lease was removed by another process"
            return False
        self._write()
        self._lose_if_late()  # the put may have landed after a stale-judged deletion
        return not self.lost

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.timeout / 4):
            try:
                if not self.refresh():
                    return
            except Exception:  # the storage is unreachable: the growing gap makes check() fail
                continue

    def start(self) -> Lease:
        self._write()
        self._thread = threading.Thread(target=self._refresh_loop, name=f"aim-lease-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise LockHeldError unless the lease is certainly still ours (see the module docstring)."""
        if not self.lost and not self.repo.backend.exists(self.key):
            self.lost = "its lease was removed by another process"
        self._lose_if_late()  # after the exists: its answer counts only if it came in time
        if self.lost:
            raise LockHeldError(
                f"{self.command} in {self.repo.name!r} lost its {self.kind} lease and stopped: {self.lost}",
                f"run the {self.command} again",
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.repo.backend.delete(self.key)

    def __enter__(self) -> Lease:
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


def _waited_hint(blockers: list[LeaseInfo], timeout: float) -> str:
    unreadable = [lease.key for lease in blockers if lease.kind == UNKNOWN]
    if unreadable:
        return (
            f"an unreadable lease never expires: if no aim_cli process is running against this repository, "
            f"delete {unreadable[0]} from it, then retry"
        )
    return f"retry later; a lease whose process died on another host expires after {timeout:g}s (AIM_LEASE_TIMEOUT)"


def _default_wait(kind: str) -> float:
    if kind == EXCLUSIVE:
        return _env_seconds("AIM_GC_WAIT", DEFAULT_GC_WAIT)
    if kind == OPTIMIZE:
        return _env_seconds("AIM_OPTIMIZE_WAIT", DEFAULT_OPTIMIZE_WAIT)
    return _env_seconds("AIM_PUSH_WAIT", DEFAULT_PUSH_WAIT)


def _conflicts(kind: str, others: list[LeaseInfo]) -> tuple[list[LeaseInfo], list[LeaseInfo]]:
    """(the leases before which ``kind`` may not stay written, those it waits for). gc's exclusive
    lease makes everyone else withdraw; an optimize lease makes the other re-encoders withdraw too.
    gc stays written and waits for every other lease; the others wait for what they withdrew from."""
    ahead = [lease for lease in others if lease.kind == EXCLUSIVE or (kind == OPTIMIZE and lease.kind == OPTIMIZE)]
    return ahead, (others if kind == EXCLUSIVE else ahead)


def _waiting_for(ahead: list[LeaseInfo]) -> str:
    if any(lease.kind == EXCLUSIVE for lease in ahead):
        return "gc"
    return "the other re-encoder" if ahead else "pushes and re-encoders"


def acquire(repo: Repository, kind: str, command: str, *, wait: float | None = None) -> Lease:
    """Take a lease of ``kind`` (SHARED for a push, EXCLUSIVE for gc, OPTIMIZE for a re-encoder),
    waiting at most ``wait`` seconds (default: $AIM_GC_WAIT, $AIM_PUSH_WAIT, $AIM_OPTIMIZE_WAIT)
    for conflicting ones (``_conflicts``)."""
    timeout = lease_timeout()
    if wait is None:
        wait = _default_wait(kind)
    deadline = time.monotonic() + wait
    pause = 0.02
    mine: Lease | None = None
    try:
        while True:
            others = live_leases(repo, skip=None if mine is None else mine.id)
            ahead, blockers = _conflicts(kind, others)
            if mine is None and not ahead:
                mine = Lease(repo, kind, command, timeout).start()
                continue  # look again, now that ours is written
            if mine is not None and ahead:
                mine.release()  # withdraw: a lease we must yield to is (or may be) ahead of us
                mine = None
            if mine is not None and not blockers:
                return mine
            if time.monotonic() >= deadline:
                raise LockHeldError(
                    f"{command} in {repo.name!r} gave up waiting {wait:g}s for {_waiting_for(ahead)} to finish: "
                    f"{_holders(blockers)}",
                    _waited_hint(blockers, timeout),
                )
            time.sleep(min(pause * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 1.0, timeout / 4)
    except BaseException:
        if mine is not None:
            mine.release()
        raise
