"""How many S3 transfers run at once: as many as the link rewards, within ``--jobs`` and a memory
budget (docs/design.md §6, item 8). ``Concurrency`` decides (pure logic on an injected clock);
``TransferGate`` admits the backend's GETs and PUTs of data under its limit, in arrival order.

Why adapt. A distant store gives each stream a round trip per request and a rate of its own:
aggregate throughput grows with the streams until the link, the server or this machine is full,
and past that point more streams only add memory and the server's load. The right number depends
on the link, unknown beforehand, so it is found as hf_xet finds its own (it grows from 4 up to 64
streams; this gate starts higher, START says why):

- Start at START (or ``--jobs`` if lower). Throughput is measured over windows: a window ends
  once it has seen at least as many completed transfers as the limit (and WINDOW_MIN_TRANSFERS),
  and at least WINDOW_SECONDS.
- Grow while throughput grows: after a window at a raised limit whose throughput beat the window
  before by GROWTH, raise again (doubling at first, as TCP's slow start; then by a quarter). A
  raise that did not pay is undone, and the next probe waits PROBE_AFTER windows.
- Back off at once on congestion (below), at most once per window: a throttling answer (503
  SlowDown, 429) halves the limit; the other signs take a quarter off. Either ends the growth
  phase. After throttling the next probe waits PROBE_AFTER windows: the server said what it
  wants. After another sign, the limit it took off is tried again once a window has measured
  the lowered one, as a raise (kept only if it paid): those signs can be chance on a path that
  loses connections, and the measurement decides. Such a sign during the try undoes it, with no
  second try, so signs that keep coming still take the limit down a quarter every two windows.
- Never above the ceiling (``--jobs``: the threads of the transfer pools), never below FLOOR.

What counts as congestion. Fewer streams help only when the link or the server is full, and a
full link shows on every stream, fresh ones included. So the signs are those fewer streams would
ease: the server asking for less (throttling); a connection that broke; a read that waited for
the stall deadline; a request whose hedges, on fresh connections, straggled too (it needed a
third hedge: resilience.py's HEDGES_OF_CONGESTION). A body that went silent and whose hedge
then completed at the normal pace is not one: the link carried the hedge as fast as the
others, so the fault was that connection's or its peer's (a hung proxy, a lost flow), and one
stream fewer would not have saved it. Counting those took a quarter off per stall: with 15% of
responses stalling, the limit fell to FLOOR within a second and a 96 MiB pull was serialized,
the stalled bodies hedged one after the other (``benchmarks/stall_bench.py --runs 7``: 6.5x the
clean pull). A request needs three hedges by chance far less often (the cube of the share of
connections that stall: 1 request in 300 at 15%; a second hedge, 1 in 44, came a few times per
pull and cost more than the stalls), and the try after the back-off gives the stream back when
more streams still pay.

A fall of throughput is judged where it can be blamed on the limit: after a raise, which is
undone when it did not pay. At a steady limit a window's throughput also falls with stalled
connections (each holds a stream and moves nothing until its hedge), a busy CPU or another
tenant of the link; fewer streams would restore none of these, and with stalls they make it
worse, so such a fall is not a back-off.

The gate also bounds the bytes of the transfers it admits (MEMORY_BUDGET, by their largest size):
a transfer is admitted when the limit and the budget allow, and always when none runs.
Admission is first come, first served: the pools submit a file's chunks in order, so they are
fetched in that order and each file fills from its start, contiguous for the writer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Streams at the start. hf_xet starts at 4; 16 cost nothing measurable where the link is the
#: limit and save the doubling windows before the link is full: a cold pull of 256 MiB through
#: `benchmarks/s3_bench.py --link` (30 ms to first byte, 40 MB/s per connection, Ceph RGW) took
#: 1.22 s from 16 against 1.43 s from 4 (3 alternating runs each; 8: 1.27 s). Memory does not
#: grow: the budget bounds the bytes in flight whatever the limit. A store that wants fewer says
#: so (throttling halves the limit at once), and ``--jobs`` below 16 starts at ``--jobs``.
START = 16
#: Streams at the least, after any number of back-offs.
FLOOR = 1
#: A window lasts at least this long and this many transfers, and as many as the limit.
WINDOW_SECONDS = 0.2
WINDOW_MIN_TRANSFERS = 4
#: A raise pays when the window after it moved this much more than the window before it.
GROWTH = 1.1
#: Windows at a steady limit before the next probe of one more stream.
PROBE_AFTER = 4
#: What one back-off leaves of the limit: throttling asks for less load than the other signs.
THROTTLE_FACTOR = 0.5
TROUBLE_FACTOR = 0.75
#: Bytes of the transfers in flight at once, by their largest size: well under the 200 MB of
#: peak RSS a pull may take, which the interpreter, boto3 and the writer's buffers share.
MEMORY_BUDGET = 96 * 1024 * 1024


class Concurrency:
    """The limit on transfers at once, from what they showed (see the module docstring).
    ``clock`` is time.monotonic unless a test drives it. Not thread-safe: ``TransferGate`` holds
    its lock around every call."""

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic, start: int = START):
        self.ceiling = max(1, ceiling)
        self.limit = max(FLOOR, min(start, self.ceiling))
        self._clock = clock
        self._growing = True  # still doubling: no raise has failed, no back-off has come
        self._raised_from: int | None = None  # the limit before this window's raise, if any
        self._last_rate: float | None = None  # bytes/s of the window before
        self._steady_windows = 0
        self._backed_off_at: float | None = None
        self._retry_limit: int | None = None  # the limit before a back-off on trouble, to try again
        self._retrying = False  # this window's raise is that try
        self.back_offs = 0  # back-offs applied (signals within a window of one count once)
        self._start_window(clock())

    def _start_window(self, now: float) -> None:
        self._window_start, self._window_bytes, self._window_count = now, 0, 0

    def completed(self, nbytes: int) -> None:
        """A transfer of ``nbytes`` completed."""
        self._window_bytes += nbytes
        self._window_count += 1
        now = self._clock()
        elapsed = now - self._window_start
        if self._window_count >= max(self.limit, WINDOW_MIN_TRANSFERS) and elapsed >= WINDOW_SECONDS:
            self._end_window(self._window_bytes / elapsed)
            self._start_window(now)

    def _end_window(self, rate: float) -> None:
        last, self._last_rate = self._last_rate, rate
        if self._raised_from is not None:  # this window tried more streams
            before, self._raised_from, self._retrying = self._raised_from, None, False
            if last is not None and rate < last * GROWTH:  # they did not pay: undo, probe later
                self.limit, self._growing, self._steady_windows = before, False, 0
                self._last_rate = last
                return
        elif self._retry_limit is not None:  # the limit a trouble took off, tried again now
            self._raised_from, self.limit, self._retry_limit = self.limit, self._retry_limit, None
            self._retrying, self._steady_windows = True, 0
            return
        elif not self._growing:
            self._steady_windows += 1
            if self._steady_windows < PROBE_AFTER:
                return
        self._raise()

    def _raise(self) -> None:
        if self.limit >= self.ceiling:
            return
        step = self.limit if self._growing else max(1, self.limit // 4)
        self._raised_from, self._steady_windows = self.limit, 0
        self.limit = min(self.ceiling, self.limit + step)

    def throttled(self) -> None:
        """The server asked for less load (503 SlowDown, or another throttling answer)."""
        self._back_off(THROTTLE_FACTOR, trouble=False)

    def troubled(self) -> None:
        """A sign of congestion other than throttling: a connection broke, a read waited for the
        stall deadline, or a request's hedge straggled too (see the module docstring)."""
        self._back_off(TROUBLE_FACTOR, trouble=True)

    def _back_off(self, factor: float, *, trouble: bool) -> None:
        now = self._clock()
        if self._backed_off_at is not None and now - self._backed_off_at < WINDOW_SECONDS:
            return  # one back-off per window: the signals of one congested moment come together
        self._backed_off_at = now
        self.back_offs += 1
        if trouble and self._retrying and self._raised_from is not None:  # the try met trouble too
            self.limit, self._retry_limit = self._raised_from, None
        else:
            before, self.limit = self.limit, max(FLOOR, int(self.limit * factor))
            self._retry_limit = before if trouble and self.limit < before else None
        self._retrying = False
        self._growing, self._raised_from, self._steady_windows = False, None, 0
        self._last_rate = None  # the next window measures the new limit afresh
        self._start_window(now)


class Admitted:
    """A transfer the gate let through. ``moved``: the bytes it moved, for the throughput the
    limit follows. A GET is admitted by the most it may read: a manifest's bound is 256 MiB,
    and counting that as moved made the first window of a pull look like 1.2 GB/s, so the
    doubling that followed looked as if it had not paid, was undone, and the pull stayed at 4
    streams of a link that rewarded 16 (`benchmarks/s3_bench.py --link`)."""

    __slots__ = ("moved",)

    def __init__(self, size: int):
        self.moved = size


class TransferGate:
    """Admits transfers under ``concurrency``'s limit and the memory budget, first come first
    served; feeds it what they showed. Thread-safe."""

    def __init__(self, concurrency: Concurrency, budget: int = MEMORY_BUDGET):
        self.concurrency = concurrency
        self.budget = budget
        self.running = 0
        self.most_running = 0  # the highest number of transfers admitted at once
        self._bytes = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    def _may_start(self, ticket: object, size: int) -> bool:
        if self._queue[0] is not ticket or self.running >= self.concurrency.limit:
            return False
        return self.running == 0 or self._bytes + size <= self.budget

    @contextmanager
    def admit(self, size: int) -> Iterator[Admitted]:
        """Hold a place among the transfers running while the block runs: waits for its turn.
        ``size`` is the most the transfer may move (what the budget reserves); a block that
        completes counts the bytes it says it moved (``Admitted.moved``, ``size`` unless set)."""
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            try:
                self._changed.wait_for(lambda: self._may_start(ticket, size))
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()  # the next in line may start too
            self.running += 1
            self._bytes += size
            self.most_running = max(self.most_running, self.running)
        admitted, done = Admitted(size), False
        try:
            yield admitted
            done = True
        finally:
            with self._changed:
                self.running -= 1
                self._bytes -= size
                if done:
                    self.concurrency.completed(admitted.moved)
                self._changed.notify_all()

    def throttled(self) -> None:
        with self._changed:
            self.concurrency.throttled()

    def troubled(self) -> None:
        with self._changed:
            self.concurrency.troubled()
