"""How many S3 transfers run at once (backends/s3/concurrency.py): the limit grows while
throughput grows, backs off on throttling and on other signs of congestion (and tries the old limit
again after those), never passes the ceiling (--jobs); and through moto, a pull under the gate
completes within it, a 503 SlowDown lowers it, a stall that a hedge fixed keeps it, and a request
whose hedges stalled too lowers it.

The controller's tests drive a fake clock and a model link (throughput = the limit's streams at a
per-stream rate, up to a cap): no sleeps, no threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from aim_cli.backends.s3.backend import S3Backend
from aim_cli.backends.s3.concurrency import (
    FLOOR,
    PROBE_AFTER,
    START,
    TROUBLE_FACTOR,
    WINDOW_SECONDS,
    Concurrency,
    TransferGate,
)
from aim_cli.backends.s3.resilience import HEDGES_OF_CONGESTION
from aim_cli.pull.pipeline import pull
from aim_cli.push import push
from aim_cli.repository import Repository
from tests.backends.test_s3_real_stores import error_xml
from tests.fakes import FakeClock, FaultyProxy
from tests.helpers import assert_same_tree, make_mixed_model, random_bytes
from tests.s3_fixtures import MOTO_ONLY, s3_region

MiB = 1 << 20
CHUNK = 4 * MiB


def run_link(c: Concurrency, clock: FakeClock, windows: int, *, per_stream: float, cap: float) -> list[int]:
    """Let ``c`` move data over a model link for ``windows`` windows: its limit's streams at
    ``per_stream`` bytes/s each, ``cap`` bytes/s at most in all. The limit after each window."""
    limits = []
    for _ in range(windows):
        rate = min(c.limit * per_stream, cap)
        count = max(c.limit, 4)
        step = max(CHUNK / rate, 1.01 * WINDOW_SECONDS / count)
        for _ in range(count):
            clock.advance(step)
            c.completed(int(rate * step))
        limits.append(c.limit)
    return limits


def test_it_grows_from_start_while_throughput_grows_and_settles_where_the_link_is_full():
    clock = FakeClock()
    c = Concurrency(256, clock=clock.monotonic)
    assert c.limit == START
    knee = 4 * START
    limits = run_link(c, clock, 30, per_stream=40e6, cap=knee * 40e6)  # full at the knee's streams
    assert limits[0] > START  # it grew after the first window
    assert max(limits) <= 2 * knee  # one raise past the knee at most, then undone
    assert knee <= limits[-1] <= knee + knee // 4  # settled at the knee, probing a little past it now and then


def test_the_ceiling_is_never_passed():
    clock = FakeClock()
    c = Concurrency(6, clock=clock.monotonic)
    limits = run_link(c, clock, 20, per_stream=40e6, cap=10e9)  # more streams always pay
    assert max(limits) == 6 and limits[-1] == 6
    assert Concurrency(2, clock=clock.monotonic).limit == 2  # the start is below the ceiling too


def test_a_raise_that_does_not_pay_is_undone_and_probed_again_later():
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic)
    full = START * 40e6  # the streams of the start fill the link: the doubling ...
    run_link(c, clock, 1, per_stream=40e6, cap=full)
    assert c.limit == 2 * START
    run_link(c, clock, 1, per_stream=40e6, cap=full)  # ... did not pay: back to the start
    assert c.limit == START
    limits = run_link(c, clock, PROBE_AFTER + 1, per_stream=40e6, cap=full)
    assert limits[: PROBE_AFTER - 1] == [START] * (PROBE_AFTER - 1)  # steady, then a probe
    probe = START + max(1, START // 4)  # a quarter more
    assert limits[PROBE_AFTER - 1] == probe and limits[PROBE_AFTER] == START  # not paying: undone


def test_throttling_halves_the_limit_and_stops_the_growth():
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic)
    run_link(c, clock, 3, per_stream=40e6, cap=10e9)
    grown = c.limit
    assert grown >= 16
    c.throttled()
    assert c.limit == grown // 2
    c.throttled()  # the same congested moment: one back-off per window
    assert c.limit == grown // 2
    clock.advance(WINDOW_SECONDS)
    c.throttled()
    assert c.limit == grown // 4
    run_link(c, clock, 2, per_stream=40e6, cap=10e9)
    assert c.limit <= grown // 4 + max(1, grown // 16)  # grows again, one step at a time, not doubling


def test_signs_of_trouble_in_a_row_take_a_quarter_off_each_down_to_the_floor():
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic, start=16)
    c.troubled()
    assert c.limit == 12 and c.back_offs == 1
    c.troubled()  # the same moment
    assert c.limit == 12 and c.back_offs == 1
    for _ in range(20):
        clock.advance(WINDOW_SECONDS)
        c.troubled()
    assert c.limit == FLOOR


def test_after_trouble_the_old_limit_is_tried_again_and_kept_when_it_pays():
    """A sign of trouble may be chance (a path that loses connections): once a window has measured
    the lowered limit, the old one is tried again, and stays while more streams still pay."""
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic, start=16)
    c.troubled()
    assert c.limit == 12
    limits = run_link(c, clock, 2, per_stream=40e6, cap=10e9)  # every stream pays
    assert limits[0] == 16  # the lowered limit measured: the old one tried again
    assert limits[1] >= 16  # it paid: kept (and probed further)


def test_after_trouble_the_old_limit_is_tried_again_and_undone_when_it_does_not_pay():
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic, start=16)
    c.troubled()
    assert c.limit == 12
    limits = run_link(c, clock, 2 + PROBE_AFTER, per_stream=40e6, cap=480e6)  # 16 do no better than 12
    assert limits[:2] == [16, 12]  # tried, did not pay, undone
    assert limits[2 : 1 + PROBE_AFTER] == [12] * (PROBE_AFTER - 1)  # then the usual pace of probes


def test_trouble_that_keeps_coming_lowers_the_limit_despite_the_tries():
    """A sign in every window: each try of the old limit meets trouble and is undone for good, so
    the limit still falls a quarter every two windows, to the floor."""
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic, start=16)
    seen = []
    for _ in range(16):
        c.troubled()
        seen.append(c.limit)
        run_link(c, clock, 1, per_stream=40e6, cap=10e9)  # more streams would pay, but trouble says no
    assert seen[:4] == [12, 12, 9, 9]  # 16 -> 12; the try of 16 undone; 12 -> 9; the try of 12 undone
    assert seen[-1] == FLOOR and max(seen[4:]) <= 9


def test_the_gate_admits_within_the_limit_and_the_memory_budget():
    gate = TransferGate(Concurrency(8, start=2), budget=10 * MiB)
    with gate.admit(4 * MiB), gate.admit(4 * MiB):
        assert gate.running == 2
        assert not may_start(gate, 1)  # the limit: 2
    gate.concurrency.limit = 8
    with gate.admit(6 * MiB):
        assert not may_start(gate, 6 * MiB)  # the budget: 12 > 10 MiB
        assert may_start(gate, 4 * MiB)
    with gate.admit(64 * MiB):  # larger than the budget: admitted alone
        assert gate.running == 1
    assert gate.running == 0 and gate.most_running == 2


class RecordingConcurrency(Concurrency):
    """A Concurrency that remembers the bytes of every completed transfer it was told of."""

    def __init__(self, ceiling: int):
        super().__init__(ceiling)
        self.moved: list[int] = []

    def completed(self, nbytes: int) -> None:
        self.moved.append(nbytes)
        super().completed(nbytes)


def test_the_gate_counts_what_a_transfer_moved_not_the_most_it_could():
    """A GET is admitted by its bound (a manifest's is 256 MiB): counted as moved, that bound made
    a pull's first window look like 1.2 GB/s, and the doubling after it look as if it had not
    paid. What a transfer says it moved is what counts; its size, when it says nothing."""
    gate = TransferGate(RecordingConcurrency(8))
    with gate.admit(256 * MiB) as admitted:
        admitted.moved = 1234
    with gate.admit(3 * MiB):
        pass
    assert gate.concurrency.moved == [1234, 3 * MiB]


def may_start(gate: TransferGate, size: int) -> bool:
    """Whether a transfer of ``size`` arriving now would start at once."""
    ticket = object()
    gate._queue.append(ticket)
    try:
        return gate._may_start(ticket, size)
    finally:
        gate._queue.remove(ticket)


# -- through moto ----------------------------------------------------------------------------------
def test_a_pull_under_the_gate_completes_within_the_ceiling(s3_endpoint, s3_bucket, tmp_path):
    src = make_mixed_model(tmp_path / "src", weights=6 * MiB)
    backend = S3Backend(s3_bucket, "repo", endpoint_url=s3_endpoint, region=s3_region(), max_connections=3)
    try:
        repo = Repository(backend, "r", jobs=3)
        push(repo, "m", "v1", src)
        put_most = backend.gate.most_running
        backend.gate.most_running = 0
        pull(repo, "m", tmp_path / "dest", tag="v1", jobs=3)
    finally:
        backend.close()
    assert_same_tree(src, tmp_path / "dest")
    assert 1 <= put_most <= 3
    assert 1 <= backend.gate.most_running <= 3
    assert backend.gate.concurrency.ceiling == 3


def test_a_bounded_get_counts_the_bytes_it_read(s3_endpoint, s3_bucket):
    backend = S3Backend(s3_bucket, "repo", endpoint_url=s3_endpoint, region=s3_region(), max_connections=3)
    try:
        backend.gate.concurrency = RecordingConcurrency(3)
        backend.put("small", b"x" * 1000)
        assert backend.get("small", max_size=256 * MiB) == b"x" * 1000
    finally:
        backend.close()
    assert backend.gate.concurrency.moved == [1000, 1000]  # the PUT, then the GET: its bytes, not its bound


@MOTO_ONLY  # the proxy answers the 503 itself
def test_slowdown_lowers_the_limit(s3_endpoint, s3_client, s3_bucket):
    proxy = FaultyProxy(s3_endpoint, cut_gets=0, lose_puts=0)
    backend = S3Backend(s3_bucket, "repo", endpoint_url=proxy.url, region=s3_region(), max_connections=16)
    try:
        s3_client.put_object(Bucket=s3_bucket, Key="repo/k", Body=b"payload")
        assert backend.gate.concurrency.limit == START
        proxy.answers["GET"] = [(503, error_xml("SlowDown", "Please reduce your request rate."))]
        assert backend.get("k", max_size=100) == b"payload"  # botocore retried it
        assert proxy.answered == 1
        assert backend.gate.concurrency.limit == START // 2
    finally:
        backend.close()
        proxy.close()


def test_a_loser_that_reaches_the_deadline_later_is_no_trouble(s3_endpoint, s3_bucket):
    """The first request gets no answer at all: its hedge wins after the first-byte bound, and the
    loser, which cannot be interrupted while it waits for headers, reaches the stall deadline
    later. Nobody waits for it any more: the gate does not back off (nor is a stall counted)."""
    from botocore.exceptions import ReadTimeoutError

    proxy = FaultyProxy(s3_endpoint, cut_gets=0, lose_puts=0, stall_first_requests=1, stall_limit=10.0)
    backend = S3Backend(
        s3_bucket, "repo", endpoint_url=proxy.url, region=s3_region(), stall_seconds=1.0, first_byte_seconds=0.2
    )
    timed_out = threading.Event()

    def after_the_backends_hooks(caught_exception=None, **_):
        if isinstance(caught_exception, ReadTimeoutError):
            timed_out.set()

    backend._client.meta.events.register("needs-retry.s3", after_the_backends_hooks)
    try:
        backend.check_access()
        assert backend.stats.hedges_won == 1
        assert timed_out.wait(10)  # the loser's deadline came, and the backend's hooks heard it
        assert backend.gate.concurrency.back_offs == 0 and backend.stats.stalls == 0
    finally:
        backend.close()
        proxy.close()


# A stall deadline long enough that on a loaded machine no healthy copy looks silent (hedges come
# after 0.04 x it of silence, 0.8 s): every hedge below is for a response the proxy stalled.
PATIENT = 20.0
KiB = 1024


def stalling_backend(s3_endpoint, s3_bucket, keys: list[str]) -> tuple[FaultyProxy, S3Backend, dict]:
    """A backend through a proxy, with ``keys`` stored (300 KiB each) and the pace of a GET here
    known (no first-byte bound). The proxy stalls nothing until the test sets stall_first_gets:
    then the first GETs of each key but the one already read stop after 64 KiB of body."""
    proxy = FaultyProxy(s3_endpoint, cut_gets=0, lose_puts=0, stall_after=64 * KiB, stall_limit=10.0)
    backend = S3Backend(
        s3_bucket, "repo", endpoint_url=proxy.url, region=s3_region(), max_connections=8, stall_seconds=PATIENT
    )
    objects = {key: random_bytes(300 * KiB, seed=n) for n, key in enumerate(["warm", *keys])}
    for key, data in objects.items():
        backend.put(key, data)
    assert backend.get("warm") == objects["warm"]  # the pace of a GET
    return proxy, backend, objects


def test_stalls_that_a_hedge_fixed_keep_the_limit(s3_endpoint, s3_bucket):
    """Every first GET of a blob stops mid-body; each one's hedge, on a fresh connection,
    completes: a fault of those connections, not congestion. The gate does not back off."""
    keys = [f"blobs/3{i}/once" for i in range(6)]
    proxy, backend, objects = stalling_backend(s3_endpoint, s3_bucket, keys)
    try:
        proxy.stall_first_gets = 1
        with ThreadPoolExecutor(3) as pool:  # as many as there are hedge slots (8 // 4 + 1)
            got = list(pool.map(lambda key: backend.get(key, max_size=300 * KiB), keys))
        assert got == [objects[key] for key in keys]
        stats = backend.stats
        assert proxy.stalled == 6 and stats.hedges_mid_body == 6 and stats.hedges_won == 6
        assert backend.gate.concurrency.back_offs == 0
        assert backend.gate.concurrency.limit >= min(START, backend.gate.concurrency.ceiling)
    finally:
        backend.close()
        proxy.close()


def test_a_request_whose_hedges_stall_too_lowers_the_limit(s3_endpoint, s3_bucket):
    """A GET's first copy stops mid-body and so do its hedges until the last one needed: fresh
    connections did not fix it. That one delivers, and the gate takes a quarter off."""
    proxy, backend, objects = stalling_backend(s3_endpoint, s3_bucket, ["blobs/40/again"])
    try:
        proxy.stall_first_gets = HEDGES_OF_CONGESTION  # the first copy and all but the last hedge
        before = backend.gate.concurrency.limit
        assert backend.get("blobs/40/again", max_size=300 * KiB) == objects["blobs/40/again"]
        assert proxy.stalled == HEDGES_OF_CONGESTION and backend.stats.hedges_mid_body == HEDGES_OF_CONGESTION
        assert backend.gate.concurrency.back_offs == 1
        assert backend.gate.concurrency.limit == int(before * TROUBLE_FACTOR)
    finally:
        backend.close()
        proxy.close()
