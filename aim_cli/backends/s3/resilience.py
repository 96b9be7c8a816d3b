"""How the S3 backend survives links that break, go silent or straggle: the stall deadline from the
environment, retries with backoff, and hedged requests (``RequestRunner``).

Retries. botocore retries every request ("standard" mode) when the connection fails or the server
answers 5xx, but only until the response headers arrive: a connection that breaks while a GET's body
is being read surfaces as an exception from ``Body.read()`` and is never retried by botocore. So
every request but deletes (``get``, ``put``, ``put_if_absent``, HEADs and LISTs) goes through one
retry helper (``RequestRunner.run``) that repeats the whole request when its connection broke, with
jittered backoff. Connection
*establishment* failures (refused, connect timeout) and headers that never came (botocore already
retried those) are not retried a second time: an unreachable endpoint must be reported within
seconds, not minutes.

Stalls. A hung proxy or load balancer can keep a connection open and silent mid-body; botocore's
default 60 s read timeout then holds a whole pull. Two layers deal with it:
- Silence: the socket read timeout is the stall deadline (``AIM_S3_STALL_SECONDS``, default 5 s).
  A slow link that keeps moving is never cut; a connection silent past the deadline is closed
  (never returned to the pool) and the request retried on a fresh one. The deadline is a floor,
  not a multiple of the observed throughput: a moving TCP stream delivers a segment every few
  milliseconds at any useful speed, so seconds of silence mean a dead peer.
- Stragglers: ``get``, ``put``, the HEADs of ``size`` and ``find_in_parents``, and every LIST
  (``list``'s pages and ``check_access``) run as hedged requests. When one has taken much longer than
  recent requests of its size (``HEDGE_FACTOR`` x the time the throughput observed so far by this
  backend predicts, and at least a tenth of the stall deadline), an identical request starts on
  another connection (and a third if that one straggles too); the first copy to complete wins and
  the others are closed. So one stalled request costs a fraction of a second instead of the stall
  deadline. At most ``max_connections // 4 + 1`` requests have hedges at once (``copies.Race``),
  so a slow endpoint never sees its load doubled. A copy whose body went silent (below) needs no
  slot: when none is free it is closed and a fresh copy takes its place, which adds no load (with
  a slot, it is raced instead: its bytes may yet come).
- Answers that stop: a copy whose answer has begun (headers, then each piece of the body as the
  socket delivers it) is also a straggler once it has been silent for HEDGE_FACTOR x the time a
  small request (``Pace.PACE_MIN_BYTES``) takes at the observed pace, and at least
  SILENCE_FLOOR_SHARE x the stall deadline (0.2 s by default): bytes that were flowing and stopped,
  while other requests complete at the observed pace, mean a hung peer, whatever the share of the
  body already read. This floor is lower than the hedge floor because it only starts once the
  server has answered: the server's own latency (time to the headers) is not in it. A copy
  whose answer has not begun is looked at again within that bound, not only at the hedge floor:
  a body that stops right after its headers costs the silence bound (0.2 s), not 0.5 s. When
  MAX_COPIES copies already run, the one silent the longest past that bound is closed to make
  room, so a request whose hedges stall too still gets a fresh copy (MAX_STARTS in all) instead
  of waiting for the stall deadline; at most MAX_COPIES copies of a request run at once.
- No pace yet: before a request of its kind has completed here (the first requests of a command:
  the access check, the first listing, the read of the repository's metadata, the first manifest),
  there is nothing to compare with, and these are the requests every later one waits for. So a
  fixed bound decides instead: the first-byte bound (FIRST_BYTE_ENV, ``AIM_S3_FIRST_BYTE_SECONDS``,
  default 0.5 s, never above UNPACED_SILENCE_SHARE x the stall deadline). A request that sends
  little (a GET, HEAD or LIST, a PUT of at most ``Pace.PACE_MIN_BYTES``) and has had no answer
  for that long is a straggler, and so is an answer that began and then stayed silent that long,
  or for less once a read of another kind has completed here: silence after an answer began is
  the link's, whatever the request, so the slowest read kind's pace gives the silence bound
  (the first manifest's GET, after the access check's LIST: 0.2 s by default, not 0.5 s).
  A large PUT with no pace to compare with has only the stall deadline: its time to the answer
  grows with its size and the link's unknown speed. A losing copy still waiting for its answer
  cannot be interrupted: it runs on a daemon thread until its deadline, holding no one.
Only requests that are safe to repeat are hedged: reads (GET, HEAD, a LIST page: the access check's
included), and a plain PUT (idempotent: the same bytes under the same key). Each kind has its own
pace. ``put_if_absent`` (a conditional PUT, the commit of a tag or a lock) is never
hedged: it still gets the silence deadline and the retry, whose second answer (412 for our own
object) its callers already handle. A key that must not be written twice concurrently (a lease)
must not go through a hedged ``put`` (``put(..., hedge=False)``). Deletes are left to botocore's
retries and the deadline, never hedged: a late twin of a delete could remove an object written
after it (a new lease). ``stats`` counts what happened (stalls, abandoned requests, hedges).
A request that needed HEDGES_OF_CONGESTION hedges, its first hedges having straggled too, is told
to the caller (``run``'s ``congested``): fresh connections did not fix it, which the S3 backend's
concurrency gate counts as congestion; a straggler that a hedge fixed is not (concurrency.py).

botocore is imported only by ``Failures.load``, never at import time.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from aim_cli.backends.s3.copies import Attempt, Pace, Race
from aim_cli.errors import ConfigError, StorageError

# One logger for the whole S3 backend, whichever of its modules logs.
log = logging.getLogger("aim_cli.backends.s3")

#: The stall deadline: seconds of silence after which a connection is abandoned (the socket read
#: timeout). Read from STALL_ENV; tests lower it to keep stalls short.
STALL_ENV = "AIM_S3_STALL_SECONDS"
DEFAULT_STALL_SECONDS = 5.0
STALL_SECONDS_RANGE = (0.1, 600.0)
#: The first-byte bound: seconds a request with no pace to compare with (see the module docstring)
#: may go without an answer, or stay silent after its answer began, before it is hedged.
FIRST_BYTE_ENV = "AIM_S3_FIRST_BYTE_SECONDS"
DEFAULT_FIRST_BYTE_SECONDS = 0.5
FIRST_BYTE_SECONDS_RANGE = (0.01, 600.0)
#: A request is a straggler, and gets a hedge, after HEDGE_FACTOR x its expected time, and never
#: before HEDGE_FLOOR_SHARE x the stall deadline (0.5 s by default): below that, latency noise of
#: a busy machine or endpoint would start hedges that only add load.
HEDGE_FACTOR = 4.0
HEDGE_FLOOR_SHARE = 0.1
#: Copies of one request at most (the first and two hedges): with 15% of responses stalling, all
#: three stall for 0.3% of requests, which then wait for the stall deadline.
MAX_COPIES = 3
#: Copies of one request started at most, silent ones that were closed included.
MAX_STARTS = 6
#: A request that needs this many hedges (its first two hedges straggled too) tells its caller the
#: trouble is more than one connection's (``run``'s ``congested``; concurrency.py). By chance, with
#: a share s of responses stalling, 1 request in 1/s^3 needs it: 1 in 300 at 15% (issue 17's
#: hostile link). Two hedges would be 1 in 44, a few times per 96 MiB pull, each a back-off.
HEDGES_OF_CONGESTION = 3
#: A body that has begun to arrive and then stays silent this share of the stall deadline (and
#: HEDGE_FACTOR x the time of a small request here) is a straggler (see the module docstring).
SILENCE_FLOOR_SHARE = 0.04
#: The first-byte bound is never above this share of the stall deadline (1 s by default): a lowered
#: deadline lowers it too.
UNPACED_SILENCE_SHARE = 0.2
#: The kinds of hedged requests that read: how long one of them takes says how long the link
#: may be silent once an answer has begun (``RequestRunner._silence_limit``).
READ_KINDS = ("GET", "HEAD", "LIST")
#: Our own attempts around a whole get/put whose connection broke (see the module docstring).
ATTEMPTS = 5
BACKOFF_START = 0.1
BACKOFF_CAP = 2.0


def backoff(attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential from BACKOFF_START, with jitter
    so that parallel workers that failed together do not retry together."""
    return min(BACKOFF_CAP, BACKOFF_START * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def stall_seconds_from_env() -> float:
    """The stall deadline from STALL_ENV (default DEFAULT_STALL_SECONDS); ConfigError (exit 7)
    for anything but a number of seconds in STALL_SECONDS_RANGE."""
    return _seconds_from_env(STALL_ENV, DEFAULT_STALL_SECONDS, STALL_SECONDS_RANGE, "10")


def first_byte_seconds_from_env() -> float:
    """The first-byte bound from FIRST_BYTE_ENV (default DEFAULT_FIRST_BYTE_SECONDS); ConfigError
    (exit 7) for anything but a number of seconds in FIRST_BYTE_SECONDS_RANGE."""
    return _seconds_from_env(FIRST_BYTE_ENV, DEFAULT_FIRST_BYTE_SECONDS, FIRST_BYTE_SECONDS_RANGE, "1")


def _seconds_from_env(name: str, default: float, bounds: tuple[float, float], example: str) -> float:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    low, high = bounds
    if not low <= value <= high:  # also refuses nan and inf
        from aim_cli.util.quoting import quoted

        raise ConfigError(
            f"{name}={quoted(raw, 10)} is not a number of seconds from {low:g} to {high:g}",
            f"unset {name} (default {default:g}) or set it to a number of seconds such as {example}",
        )
    return value


T = TypeVar("T")


@dataclass(frozen=True)
class TransferStats:
    """What the stall handling did, since the backend was made (``S3Backend.stats``)."""

    #: requests that went silent past the stall deadline: their connection was closed and the
    #: request retried (botocore's retries of headers that never came included)
    stalls: int = 0
    #: requests given up before they finished: stalled ones, and those a hedge beat
    abandoned: int = 0
    #: second requests started for stragglers, and how many of them finished first
    hedges: int = 0
    hedges_won: int = 0
    #: hedges started because a body had begun to arrive and then stopped (counted in ``hedges``)
    hedges_mid_body: int = 0
    #: copies closed because their body went silent, to make room for a fresh one (counted in
    #: ``abandoned``)
    silent_closed: int = 0


class Retryable(Exception):
    """A failure that deserves a whole new request (a body cut or silent mid-read, a 409 from a
    concurrent conditional write): carries botocore's exception for the final message."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


@dataclass(frozen=True)
class Failures:
    """The exception classes that decide what happens to a failed request."""

    #: every botocore failure we map; raised by client calls
    errors: tuple[type[BaseException], ...]
    #: a connection that broke after it was established: worth a whole new attempt
    broken: tuple[type[BaseException], ...]
    #: reading a GET's body: botocore never retried it, so a read timeout is worth one too
    broken_body: tuple[type[BaseException], ...]
    #: a socket read that waited past the stall deadline: botocore's (headers) and urllib3's (a
    #: body read straight from urllib3's response)
    read_timeouts: tuple[type[BaseException], ...]

    @classmethod
    def load(cls) -> Failures:
        from botocore import exceptions as bx
        from urllib3.exceptions import HTTPError as Urllib3HTTPError
        from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

        # Connect failures (EndpointConnectionError, ConnectTimeoutError) are deliberately absent
        # from ``broken``.
        broken = (
            bx.ConnectionClosedError,
            bx.ResponseStreamingError,
            bx.IncompleteReadError,
            Urllib3HTTPError,
            ConnectionError,  # the builtin: ConnectionResetError and friends
            Retryable,
        )
        timeouts = (bx.ReadTimeoutError, Urllib3ReadTimeoutError)
        return cls((bx.BotoCoreError, bx.ClientError), broken, (*broken, *timeouts), timeouts)


#: The attempt the current thread runs, for the before-send hook.
_CURRENT = threading.local()


class RequestRunner:
    """Runs the requests of one backend: retried while their connection breaks, hedged when they
    straggle, counted in ``stats``. ``error`` maps a failure of ``action`` to the StorageError to
    raise; ``location`` names the backend in log lines.

    ``max_connections`` is what callers run at once; hedges need up to ``extra_connections`` more,
    which the client's connection pool must allow for. ``first_byte_seconds`` is the first-byte
    bound (see the module docstring).
    """

    #: The kinds of hedged requests, each with its own pace.
    KINDS = ("GET", "HEAD", "LIST", "PUT")

    def __init__(
        self,
        location: str,
        stall_seconds: float,
        max_connections: int,
        failures: Failures,
        error: Callable[[BaseException, str], StorageError],
        first_byte_seconds: float = DEFAULT_FIRST_BYTE_SECONDS,
    ):
        self.location = location
        self.stall_seconds = stall_seconds
        self._failures = failures
        self._error = error
        self._hedge_floor = HEDGE_FLOOR_SHARE * stall_seconds
        self._silence_floor = SILENCE_FLOOR_SHARE * stall_seconds
        self.first_byte_seconds = min(first_byte_seconds, UNPACED_SILENCE_SHARE * stall_seconds)
        hedge_limit = max_connections // 4 + 1
        self._hedge_slots = threading.BoundedSemaphore(hedge_limit)
        self.extra_connections = (MAX_COPIES - 1) * hedge_limit  # copies beyond one per caller, at most
        self._paces = {kind: Pace() for kind in self.KINDS}
        self._stats = TransferStats()
        self._stats_lock = threading.Lock()
        self._closed = False

    @property
    def stats(self) -> TransferStats:
        """A snapshot of the stall and hedge counters."""
        with self._stats_lock:
            return self._stats

    def close(self) -> None:
        """Stop starting copies; requests still racing are not waited for."""
        self._closed = True

    def _submit(self, copy: Callable[[], T]) -> Future[T]:
        """Run one copy of a hedged request on a daemon thread of its own: the caller returns with
        the first copy to complete, and a loser that cannot be interrupted never holds the
        process's exit until the stall deadline (as a pool's worker would)."""
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(StorageError(f"{self.location} is closed", "open the repository again"))
            return future

        def run() -> None:
            try:
                future.set_result(copy())
            except BaseException as e:  # the caller gets it from the future, as from a pool's
                future.set_exception(e)

        threading.Thread(target=run, name="aim-s3-copy", daemon=True).start()
        return future

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            self._stats = replace(self._stats, **{k: getattr(self._stats, k) + n for k, n in increments.items()})

    def _retry_or_raise(self, exc: BaseException, attempt: int, action: str) -> None:
        """Sleep before the next attempt, or raise the mapped error after the last one."""
        if attempt >= ATTEMPTS:
            raise self._error(exc, action) from None
        if isinstance(exc, Retryable):
            exc = exc.cause
        delay = backoff(attempt)
        log.debug(
            "%s in %s failed (%r); retry %d/%d in %.2fs", action, self.location, exc, attempt, ATTEMPTS - 1, delay
        )
        time.sleep(delay)

    def run(
        self,
        action: str,
        request: Callable[[Attempt], T],
        *,
        hedged: str | None = None,
        size: int | None = None,
        congested: Callable[[], None] | None = None,
    ) -> T:
        """``request`` (one HTTP request; ``size`` is its body's size when known), repeated while
        its connection breaks, at most ATTEMPTS times; botocore's errors become StorageError.
        ``hedged`` (one of KINDS) races stragglers against a twin: only for requests that are
        safe to repeat (see the module docstring). ``congested`` is called when a race needs
        HEDGES_OF_CONGESTION hedges: a straggler that fresh connections did not fix."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if hedged is None:
                    return request(Attempt(size))
                small = hedged != "PUT" or (size or 0) <= Pace.PACE_MIN_BYTES
                return self._hedged(request, self._paces[hedged], size, action, small, congested)
            except self._failures.broken as e:
                self._retry_or_raise(e, attempt, action)
            except self._failures.errors as e:
                raise self._error(e, action) from None
        raise AssertionError("unreachable")  # the last attempt returns or raises

    # -- stalls and hedges ---------------------------------------------------------------------
    def refuse_cancelled(self, **kwargs) -> None:
        """botocore's before-send hook: a request whose twin won is not sent (nor re-sent)."""
        attempt = getattr(_CURRENT, "attempt", None)
        if attempt is not None:
            attempt.check()

    @staticmethod
    def abandoned_here() -> bool:
        """True in a copy given up already (its twin won, or it was closed as silent): what
        happens to it later is nobody's business. It was counted as abandoned then: a copy still
        waiting for its answer cannot be interrupted, and reaches the deadline after the command
        has moved on."""
        attempt = getattr(_CURRENT, "attempt", None)
        return attempt is not None and attempt.cancelled

    def notice_stall(self, caught_exception=None, **kwargs) -> None:
        """botocore's needs-retry hook: count the read timeouts that botocore itself retries
        (headers that never came) but in abandoned copies; the retry decision stays botocore's."""
        if self.abandoned_here():
            return
        if isinstance(caught_exception, self._failures.read_timeouts):
            self.stalled(f"{getattr(kwargs.get('operation'), 'name', 'a')} request")

    def stalled(self, what: str) -> None:
        """Count a request that went silent past the stall deadline and was abandoned."""
        self._count(stalls=1, abandoned=1)
        log.debug("%s in %s went silent for %gs: abandoned", what, self.location, self.stall_seconds)

    def _run_copy(self, request: Callable[[Attempt], T], attempt: Attempt, pace: Pace) -> T:
        """One copy of a hedged request, on a pool thread; its time feeds ``pace``."""
        _CURRENT.attempt = attempt
        started = time.monotonic()
        try:
            result = request(attempt)
        finally:
            _CURRENT.attempt = None
        if not attempt.cancelled:
            pace.observe(attempt.size or 0, time.monotonic() - started)
        return result

    def _silence_limit(self, pace: Pace) -> float:
        """Seconds an answer that has begun (headers, then body) may stay silent before its copy
        is a straggler: HEDGE_FACTOR x a small request at the observed pace and at least the
        silence floor. While this backend has not seen a request of its kind complete, the pace
        of the other reads stands in (the slowest of them: silence after the answer began is
        the link's, whatever the kind), never above the first-byte bound, which decides alone
        while no read has completed (nothing to compare with)."""
        expected = pace.expected(None)  # a small request: latency and one piece of body
        if expected is None:
            others = [p.expected(None) for kind, p in self._paces.items() if kind in READ_KINDS]
            known = [e for e in others if e is not None]
            if not known:
                return self.first_byte_seconds
            return min(self.first_byte_seconds, max(self._silence_floor, HEDGE_FACTOR * max(known)))
        return max(self._silence_floor, HEDGE_FACTOR * expected)

    def _until_straggler(self, pace: Pace, attempt: Attempt, small: bool) -> float | None:
        """Seconds left before ``attempt`` becomes a straggler (<= 0: it is one): its whole request
        took too long for its size at the observed pace, or (no pace yet, a ``small`` request) had
        no answer within the first-byte bound, or its answer began and then went silent. None
        while none of these can happen (a large PUT, no pace observed yet and no answer)."""
        now, left = time.monotonic(), None
        expected = pace.expected(attempt.size)
        if expected is not None:
            left = attempt.started + max(self._hedge_floor, HEDGE_FACTOR * expected) - now
        elif small and attempt.moved is None:  # once the answer began, its silence decides
            left = attempt.started + self.first_byte_seconds - now
        if attempt.moved is not None:  # the server answered: silence counts from then on
            quiet = attempt.moved + self._silence_limit(pace) - now
            left = quiet if left is None else min(left, quiet)
        return left

    def _room_for_a_copy(self, copies: dict[Future, Attempt], pace: Pace) -> bool:
        """True if another copy may start: fewer than MAX_COPIES run, or one of them has been
        silent past the silence limit and is closed now."""
        return len(copies) < MAX_COPIES or self._close_silent(copies, pace)

    def _close_silent(self, copies: dict[Future, Attempt], pace: Pace) -> bool:
        """Close the copy whose answer began and has been silent the longest, if that is past the
        silence limit; False if no copy is silent so long."""
        silence, now = self._silence_limit(pace), time.monotonic()
        silent = [(a.moved, n, f) for n, (f, a) in enumerate(copies.items()) if a.moved and now - a.moved >= silence]
        if not silent:
            return False
        future = min(silent)[2]
        attempt = copies.pop(future)  # its end (Cancelled or a broken read) is nobody's business now
        attempt.cancel()
        self._count(abandoned=1, silent_closed=1)
        return True

    def _start_copy(self, race: Race, copies: dict, request: Callable[[Attempt], T], size, pace: Pace) -> Attempt:
        attempt = Attempt(size)
        race.add(copies, self._submit(partial(self._run_copy, request, attempt, pace)), attempt)
        return attempt

    def _hedged(
        self,
        request: Callable[[Attempt], T],
        pace: Pace,
        size: int | None,
        action: str,
        small: bool,
        congested: Callable[[], None] | None,
    ) -> T:
        """Run ``request``; each time its newest copy straggles and a hedge slot is free, start
        another copy on a fresh connection (MAX_COPIES at once, MAX_STARTS in all: a hedge may
        stall too). The first copy to succeed wins and the others are cancelled. A copy whose
        connection broke or went silent waits for the others; any other failure (not found, too
        large) is final at once. ``congested`` hears of a race that needed HEDGES_OF_CONGESTION hedges."""
        race = Race(self._hedge_slots)
        copies: dict[Future, Attempt] = {}
        first = newest = self._start_copy(race, copies, request, size, pace)
        try:
            while copies:
                timeout = None
                if race.started < MAX_STARTS:
                    left = self._until_straggler(pace, newest, small)
                    # A straggler gets a hedge if a slot is free; without one, a copy whose body
                    # went silent is replaced (closed, and a fresh one started): no load is added.
                    if (
                        left is not None
                        and left <= 0
                        and (
                            (race.take_slot() and self._room_for_a_copy(copies, pace))
                            or self._close_silent(copies, pace)
                        )
                    ):
                        mid_body = int(newest.moved is not None)
                        newest = self._start_copy(race, copies, request, first.size, pace)
                        self._count(hedges=1, hedges_mid_body=mid_body)
                        log.debug(
                            "%s in %s: %s after %.2fs: hedged (copy %d)",
                            action,
                            self.location,
                            "body stopped" if mid_body else "no answer",
                            newest.started - first.started,
                            race.started,
                        )
                        left = self._until_straggler(pace, newest, small)
                        if congested is not None and race.started == 1 + HEDGES_OF_CONGESTION:
                            congested()
                    # Not a straggler yet, or no room: look again then, or after a silence floor.
                    timeout = left if left is not None and left > 0 else self._silence_floor
                    if newest.moved is None:  # its answer may begin, and stop, before then
                        timeout = min(timeout, self._silence_limit(pace))
                done, _ = wait(copies, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    attempt = copies.pop(future)
                    error = future.exception()
                    if error is None:
                        if attempt is not first:
                            self._count(hedges_won=1)
                        return future.result()
                    if not copies or not isinstance(error, self._failures.broken_body):
                        raise error
                    # Its connection broke or went silent: another copy may still complete.
            raise AssertionError("unreachable")  # the last copy to end returns or raises
        finally:
            for attempt in copies.values():  # the losers, or every copy when we leave on an error
                attempt.cancel()
                self._count(abandoned=1)
            race.close()
