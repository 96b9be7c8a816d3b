"""How many S3 transfers run at once (backends/s3/concurrency.py): the limit grows while
throughput grows, backs off on throttling, stalls and errors, never passes the ceiling (--jobs);
and through moto, a pull under the gate completes within it and a 503 SlowDown lowers it.

The controller's tests drive a fake clock and a model link (throughput = the limit's streams at a
per-stream rate, up to a cap): no sleeps, no threads."""

from __future__ import annotations

import pytest

from aim_cli.backends.s3.backend import S3Backend
from aim_cli.backends.s3.concurrency import (
    FLOOR,
    PROBE_AFTER,
    START,
    WINDOW_SECONDS,
    Concurrency,
    TransferGate,
)
from aim_cli.pull.pipeline import pull
from aim_cli.push import push
from aim_cli.repository import Repository
from tests.backends.test_s3_real_stores import error_xml
from tests.fakes import FakeClock, FaultyProxy
from tests.helpers import assert_same_tree, make_mixed_model
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
    c = Concurrency(64, clock=clock.monotonic)
    assert c.limit == START
    limits = run_link(c, clock, 30, per_stream=40e6, cap=640e6)  # full at 16 streams
    assert limits[0] > START  # it grew after the first window
    assert max(limits) <= 32  # one raise past the knee at most, then undone
    assert 16 <= limits[-1] <= 20  # settled at the knee, probing a little past it now and then


def test_the_ceiling_is_never_passed():
    clock = FakeClock()
    c = Concurrency(6, clock=clock.monotonic)
    limits = run_link(c, clock, 20, per_stream=40e6, cap=10e9)  # more streams always pay
    assert max(limits) == 6 and limits[-1] == 6
    assert Concurrency(2, clock=clock.monotonic).limit == 2  # the start is below the ceiling too


def test_a_raise_that_does_not_pay_is_undone_and_probed_again_later():
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic)
    run_link(c, clock, 1, per_stream=40e6, cap=160e6)  # 4 streams fill the link: the raise to 8 ...
    assert c.limit == 2 * START
    run_link(c, clock, 1, per_stream=40e6, cap=160e6)  # ... did not pay: back to 4
    assert c.limit == START
    limits = run_link(c, clock, PROBE_AFTER + 1, per_stream=40e6, cap=160e6)
    assert limits[: PROBE_AFTER - 1] == [START] * (PROBE_AFTER - 1)  # steady, then one more stream
    assert limits[PROBE_AFTER - 1] == START + 1 and limits[PROBE_AFTER] == START  # not paying: undone


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


@pytest.mark.parametrize("signal", ["troubled"])
def test_a_stall_or_an_error_takes_a_quarter_off_down_to_the_floor(signal):
    clock = FakeClock()
    c = Concurrency(64, clock=clock.monotonic, start=16)
    getattr(c, signal)()
    assert c.limit == 12
    for _ in range(20):
        clock.advance(WINDOW_SECONDS)
        getattr(c, signal)()
    assert c.limit == FLOOR


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
