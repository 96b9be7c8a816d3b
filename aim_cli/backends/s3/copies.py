"""The copies of one hedged request (resilience.py's ``RequestRunner`` runs them): ``Attempt`` is
one copy, which a twin may cancel mid-body; ``Race`` holds the hedge slot its copies share;
``Pace`` is how long requests of one kind take here, which says when a copy straggles.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future


class Cancelled(Exception):
    """Raised in a request whose twin already completed: nobody waits for its result."""


class Pace:
    """How long requests of one kind (GET or PUT) take here, recently: an exponentially weighted
    mean of seconds per byte. A request shorter than PACE_MIN_BYTES counts as that size, because
    its time is mostly latency; so the expected time of any size is never below one such request.
    """

    PACE_MIN_BYTES = 256 * 1024
    WEIGHT = 0.25  # of the newest observation

    def __init__(self) -> None:
        self._seconds_per_byte: float | None = None
        self._lock = threading.Lock()

    def observe(self, size: int, seconds: float) -> None:
        rate = seconds / max(size, self.PACE_MIN_BYTES)
        with self._lock:
            old = self._seconds_per_byte
            self._seconds_per_byte = rate if old is None else old + self.WEIGHT * (rate - old)

    def expected(self, size: int | None) -> float | None:
        """Seconds a request of ``size`` bytes should take, or None before any observation."""
        with self._lock:
            per_byte = self._seconds_per_byte
        return None if per_byte is None else per_byte * max(size or 0, self.PACE_MIN_BYTES)


class Attempt:
    """One HTTP request of a get or put, which a twin may race. ``cancel`` stops it: a GET whose
    body is being read has its socket shut down (the blocked read returns at once, and the
    connection is closed rather than pooled); a request not yet sent is refused by the
    ``before-send`` hook, which also stops botocore from retrying a cancelled request."""

    def __init__(self, size: int | None):
        self.size = size  # bytes moved: the body's, once known
        self.cancelled = False
        self.started = time.monotonic()
        #: when the server's answer last moved (headers, then each piece of the body); None while
        #: no answer has come
        self.moved: float | None = None
        self.received = 0  # body bytes so far
        self._body = None
        self._lock = threading.Lock()

    def progress(self, received: int) -> None:
        """Record that the answer moved: ``received`` body bytes so far (0: the headers came)."""
        self.received = received
        self.moved = time.monotonic()

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled()

    def reading(self, body) -> None:
        """Record the body being read, so that ``cancel`` can interrupt the read."""
        with self._lock:
            self.check()
            self._body = body
        self.progress(0)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            body, self._body = self._body, None
        if body is not None:
            _shut_down(body)


def _shut_down(body) -> None:
    """Unblock a read of ``body`` running in another thread; the reader then fails, and closes the
    connection. Both directions are shut, not only reads (urllib3's ``shutdown``): a read that
    ends at the shut-down (``read1``) may hand the connection back to the pool, and a socket
    shut in both directions is closed for the server at once and never reused (urllib3 drops
    connections it finds closed)."""
    raw = getattr(body, "_raw_stream", None)  # botocore's StreamingBody wraps urllib3's response
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        elif raw is not None:
            raw.shutdown()
    except (AttributeError, ValueError, RuntimeError, OSError):
        pass  # already released or closed: there is no read left to interrupt


class Race:
    """The copies of one hedged request. A race takes one hedge slot for all its hedges, and gives
    it back only when every copy has ended (a cancelled copy not reading a body may run on until
    its answer or its deadline): at most ``slots`` requests have hedges at once, each at most
    MAX_COPIES - 1 (resilience.py), so a slow endpoint never carries more than that many extra
    requests. One slot per race rather than per hedge lets a request whose hedge stalled too
    start its third copy at once: when stalls come in bursts, slots taken per hedge ran out and
    left requests waiting for the deadline."""

    def __init__(self, slots: threading.BoundedSemaphore):
        self.started = 0
        self._slots = slots
        self._held = 0
        self._running = 0
        self._closed = False
        self._lock = threading.Lock()

    def take_slot(self) -> bool:
        """True if this race holds a hedge slot (taking one now if there is one free)."""
        with self._lock:
            if self._held:
                return True
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._held += 1
        return True

    def add(self, copies: dict, future: Future, attempt: Attempt) -> None:
        copies[future] = attempt
        with self._lock:
            self.started += 1
            self._running += 1
        future.add_done_callback(self._ended)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._release_if_over()

    def _ended(self, _future: Future) -> None:
        with self._lock:
            self._running -= 1
        self._release_if_over()

    def _release_if_over(self) -> None:
        with self._lock:
            held = self._held if self._closed and self._running == 0 else 0
            self._held -= held
        for _ in range(held):
            self._slots.release()
