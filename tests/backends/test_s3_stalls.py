"""The S3 backend on links that go silent (issue 8): a stalled request is abandoned within the
stall deadline and retried, a straggler is raced against a hedge on a fresh connection, a slow
link that keeps moving is left alone, a conditional PUT is never hedged, and a server that lies
about a body's length cannot make a bounded read hold more than it allows.

Faults come from the request-aware proxy of test_s3_faults.py in front of the session's S3
server. The assertions are about what happened (the backend's counters, what the proxy saw),
never about how long a command took; the stall deadline is lowered so that each test takes seconds.
One test bounds how long the proxy held a stall, between bounds 2.5x apart (what it cost).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aim_cli.backends.s3.copies import Pace
from aim_cli.backends.s3.resilience import (
    FIRST_BYTE_ENV,
    HEDGE_FLOOR_SHARE,
    MAX_COPIES,
    MAX_STARTS,
    SILENCE_FLOOR_SHARE,
    STALL_ENV,
    STALL_SECONDS_RANGE,
    TransferStats,
    stall_seconds_from_env,
)
from aim_cli.errors import ConfigError, ObjectTooLargeError
from tests.backends.test_s3_faults import new_backend
from tests.fakes import FaultyProxy
from tests.helpers import assert_same_tree, base_env, make_mixed_model, ok, one_line_error, random_bytes, run
from tests.s3_fixtures import s3_repo_yaml_entry

KiB = 1024


@pytest.fixture
def make_proxy(s3_endpoint):
    """A FaultyProxy with no resets unless asked (``make_proxy(stall_first_gets=1, ...)``). A stall
    ends after 10 s at the latest: a backend that failed to abandon it sees a broken connection
    then (and the stall is counted as ended by the limit), rather than hanging the test."""
    proxies = []

    def make(**faults) -> FaultyProxy:
        proxies.append(FaultyProxy(s3_endpoint, **{"cut_gets": 0, "lose_puts": 0, "stall_limit": 10.0, **faults}))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def backends():
    """Backends to close at the end of the test, before the proxies (fixtures unwind in reverse)."""
    made = []
    yield made
    for backend in made:
        backend.close()


def path_of(bucket: str, key: str) -> str:
    """The request path the proxy sees for ``key`` of a backend under the prefix ``repo``."""
    return f"/{bucket}/repo/{key}"


def all_stalls_closed_by_client(proxy: FaultyProxy) -> bool:
    """Every stall the proxy held was ended by the client closing the connection (none waited for
    the proxy's limit or its teardown)."""
    return proxy.wait_until(lambda: proxy.stall_ends["client"] == proxy.stalled) and set(proxy.stall_ends) <= {"client"}


def test_a_get_that_stops_mid_body_is_hedged_before_any_pace_is_known(make_proxy, backends, s3_bucket):
    """The first GET of a backend (nothing to compare with yet) stops after part of its body: it
    is hedged once it has been silent for a share of the stall deadline, long before the deadline
    itself; the hedge delivers every byte and the silent connection is closed."""
    proxy = make_proxy(stall_first_gets=1, stall_after=100 * KiB)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=8.0)  # below the proxy's 10 s limit
    backends.append(backend)
    data = random_bytes(300 * KiB, seed=1)
    backend.put("blobs/aa/stalled", data)

    assert backend.get("blobs/aa/stalled", max_size=len(data)) == data
    assert backend.stats == TransferStats(abandoned=1, hedges=1, hedges_won=1, hedges_mid_body=1)
    assert proxy.stall_points == [(path_of(s3_bucket, "blobs/aa/stalled"), 100 * KiB, 300 * KiB)]
    assert proxy.seen["GET", path_of(s3_bucket, "blobs/aa/stalled")] == 2
    assert all_stalls_closed_by_client(proxy)


def test_a_body_that_stops_right_after_its_headers_costs_the_silence_bound_not_the_hedge_floor(
    make_proxy, backends, s3_bucket
):
    """With the pace of a GET known, a body that stops after its first bytes is hedged once it
    has been silent for the silence bound (SILENCE_FLOOR_SHARE x the deadline), not when the
    whole request reaches the hedge floor (HEDGE_FLOOR_SHARE x the deadline), 2.5 times later:
    the runner looks again before the answer can have begun and stopped. What the proxy held is
    what the stall cost."""
    stall_seconds = 30.0  # silence bound 1.2 s, hedge floor 3 s: far apart on any machine
    proxy = make_proxy(stall_after=64 * KiB)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=stall_seconds)
    backends.append(backend)
    data = random_bytes(300 * KiB, seed=2)
    backend.put("blobs/ac/stalled", data)
    assert backend.get("blobs/ac/stalled") == data  # the pace of a GET
    proxy.stall_first_gets = 2  # its second GET stalls (the first was the one above)

    assert backend.get("blobs/ac/stalled", max_size=len(data)) == data
    assert backend.stats.hedges_mid_body == 1 and backend.stats.hedges_won == 1
    assert all_stalls_closed_by_client(proxy)
    [(_, _, held, _, _)] = proxy.stall_log
    assert SILENCE_FLOOR_SHARE * stall_seconds <= held < 0.8 * HEDGE_FLOOR_SHARE * stall_seconds


def test_a_first_get_whose_body_stops_is_judged_by_the_pace_of_the_reads_before_it(make_proxy, backends, s3_bucket):
    """No GET has completed here yet, but listings have: a GET whose body stops after its first
    bytes is hedged once silent for the silence bound their pace gives (at least
    SILENCE_FLOOR_SHARE x the deadline), not only after the first-byte bound, 2.5 times longer."""
    stall_seconds, first_byte = 30.0, 3.0  # silence floor 1.2 s
    proxy = make_proxy(stall_after=64 * KiB)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=stall_seconds, first_byte_seconds=first_byte)
    backends.append(backend)
    data = random_bytes(300 * KiB, seed=3)
    backend.put("blobs/ad/stalled", data)  # a PUT's pace says nothing of reads
    for _ in range(2):  # the pace of a LIST
        assert [info.key for info in backend.list("blobs/")] == ["blobs/ad/stalled"]
    proxy.stall_first_gets = 1  # the first GET of the blob (a listing's answer is too short)

    assert backend.get("blobs/ad/stalled", max_size=len(data)) == data
    assert backend.stats.hedges_mid_body == 1 and backend.stats.hedges_won == 1
    assert all_stalls_closed_by_client(proxy)
    [(_, _, held, _, _)] = proxy.stall_log
    assert SILENCE_FLOOR_SHARE * stall_seconds <= held < 0.8 * first_byte


def test_when_every_copy_stalls_silent_ones_make_room_and_the_deadline_is_the_backstop(make_proxy, backends, s3_bucket):
    """The first MAX_STARTS GETs of a key all stop mid-body: copies that went silent are closed to
    make room for fresh ones (never more than MAX_COPIES at once), and when every copy the race may
    start has stalled, the stall deadline ends the last ones and a new request delivers."""
    proxy = make_proxy(stall_first_gets=MAX_STARTS, stall_after=64 * KiB)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=2.0)
    backends.append(backend)
    data = random_bytes(300 * KiB, seed=4)
    backend.put("blobs/ab/stalled", data)

    assert backend.get("blobs/ab/stalled", max_size=len(data)) == data
    stats = backend.stats
    assert proxy.seen["GET", path_of(s3_bucket, "blobs/ab/stalled")] == MAX_STARTS + 1
    # Mostly bodies that stopped; a copy whose headers are slow to come is hedged too (no pace).
    assert stats.hedges >= MAX_COPIES and stats.hedges_mid_body >= MAX_COPIES - 1
    assert stats.silent_closed >= 1 and stats.stalls >= 1  # room was made; the deadline ended the rest
    assert stats.abandoned == MAX_STARTS
    assert all_stalls_closed_by_client(proxy)


def test_stalls_at_random_points_of_bodies_are_all_hedged(make_proxy, backends, s3_bucket):
    """A third of the GET responses stop at a random point of their body (before the first byte
    included; seeded): once the backend knows the pace of a GET, every one is hedged and none
    waits for the stall deadline."""
    proxy = make_proxy(stall_anywhere=True, stall_after=0, seed=17)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=8.0, max_connections=8)
    backends.append(backend)
    objects = {f"blobs/2{i:x}/mid": random_bytes(600 * KiB, seed=20 + i) for i in range(16)}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: backend.put(*item), objects.items()))
        assert list(pool.map(backend.get, list(objects)[:4])) == list(objects.values())[:4]  # the pace
        proxy.stall_rate = 0.33
        got = list(pool.map(lambda key: backend.get(key, max_size=len(objects[key])), objects))

    assert got == list(objects.values())
    points = [point for _, point, _ in proxy.stall_points]
    assert len(points) >= 4 and any(0 < point < 600 * KiB // 2 for point in points)
    stats = backend.stats
    assert stats.stalls == 0  # no request waited for the deadline
    assert stats.hedges_mid_body >= 1 and stats.hedges_won >= 1
    assert stats.abandoned >= len(points)
    assert all_stalls_closed_by_client(proxy)


def test_straggling_gets_are_hedged_and_the_losers_closed(make_proxy, backends, s3_bucket):
    """Once the backend knows how long a GET takes here, a GET that stalls is raced against a
    hedge, which wins; the stalled connection is closed, not left to its deadline."""
    proxy = make_proxy()
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=3.0, max_connections=8)
    backends.append(backend)
    warm = {f"blobs/0{i}/warm": random_bytes(200 * KiB, seed=i) for i in range(6)}
    objects = {f"blobs/1{i}/cold": random_bytes(300 * KiB, seed=10 + i) for i in range(8)}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: backend.put(*item), {**warm, **objects}.items()))
        assert list(pool.map(backend.get, warm)) == list(warm.values())  # the pace of a GET here
        proxy.stall_first_gets = 1  # from now on, the first GET of every path stalls
        got = list(pool.map(lambda key: backend.get(key, max_size=len(objects[key])), objects))

    assert got == list(objects.values())
    assert proxy.stalled >= len(objects)
    stats = backend.stats
    assert stats.hedges_won >= 1
    # Every stalled request was beaten by its hedge or abandoned at the deadline, and closed.
    assert stats.hedges_won + stats.stalls >= len(objects)
    assert stats.abandoned >= len(objects)
    assert all_stalls_closed_by_client(proxy)


def test_a_slow_but_moving_body_is_not_abandoned(make_proxy, backends, s3_bucket):
    """A link that trickles 8 KiB every 0.05 s takes longer than the stall deadline for the
    body, but it keeps moving: nothing is abandoned, retried or hedged, neither before the backend
    knows the pace of a GET (silence alone decides then) nor after."""
    proxy = make_proxy(trickle=(8 * KiB, 0.05))
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=1.0)
    backends.append(backend)
    data = random_bytes(300 * KiB, seed=2)
    backend.put("blobs/bb/slow", data)

    for _ in range(2):  # the second one has the first one's pace to compare with
        assert backend.get("blobs/bb/slow", max_size=len(data)) == data
    assert backend.stats == TransferStats()
    assert proxy.seen["GET", path_of(s3_bucket, "blobs/bb/slow")] == 2


@pytest.mark.parametrize("size", [100 * KiB, 300 * KiB])
def test_a_put_that_stalls_is_retried(size, make_proxy, backends, s3_bucket, s3_client):
    """The first PUT is swallowed by a silent link (never forwarded), before any PUT has set the
    pace. A small one (at most Pace.PACE_MIN_BYTES) is hedged after the first-byte bound; a large
    one, whose time to the answer grows with its size, is abandoned at the deadline and retried.
    Either way the object is stored, by a second request."""
    proxy = make_proxy(stall_first_puts=1)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=1.0)
    backends.append(backend)
    data = random_bytes(size, seed=3)

    backend.put("blobs/cc/put", data)
    assert s3_client.get_object(Bucket=s3_bucket, Key="repo/blobs/cc/put")["Body"].read() == data
    small = size <= Pace.PACE_MIN_BYTES
    assert (backend.stats.hedges, backend.stats.stalls) == ((1, 0) if small else (0, 1))
    assert proxy.seen["PUT", path_of(s3_bucket, "blobs/cc/put")] == 2
    assert all_stalls_closed_by_client(proxy)


def test_put_if_absent_is_never_hedged(make_proxy, backends, s3_bucket, s3_client):
    """A server slow to answer the first PUT of each key (for longer than the hedge delay, less
    than the stall deadline; the proxy answers early once a hedge arrives): a plain PUT is
    hedged, a conditional one never is."""
    proxy = make_proxy()
    # Hedges from 1 s on once the pace is known; the first PUTs have 2 s to answer (no pace yet).
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=10.0, first_byte_seconds=2.0)
    backends.append(backend)
    for i in range(4):  # the pace of a PUT here
        backend.put(f"blobs/0{i}/warm", random_bytes(64 * KiB, seed=i))
    proxy.slow_puts = 2.5

    backend.put("blobs/dd/plain", b"plain bytes")
    assert backend.stats.hedges == 1  # the control: the delay does start a hedge
    assert proxy.seen["PUT", path_of(s3_bucket, "blobs/dd/plain")] == 2

    assert backend.put_if_absent("models/m/versions/v1.json", b"manifest") is True
    assert proxy.conditional_puts[path_of(s3_bucket, "models/m/versions/v1.json")] == 1
    assert backend.stats.hedges == 1
    raw = s3_client.get_object(Bucket=s3_bucket, Key="repo/models/m/versions/v1.json")["Body"].read()
    assert raw == b"manifest"

    # A lease write (put with hedge=False) is sent once, like a conditional one.
    backend.put("locks/l1.json", b"lease", hedge=False)
    assert proxy.seen["PUT", path_of(s3_bucket, "locks/l1.json")] == 1
    assert backend.stats.hedges == 1


def test_a_bounded_get_stops_reading_a_server_that_lies(make_proxy, backends, s3_bucket):
    """The server sends no Content-Length and an endless body: get(key, max_size) refuses the
    object after max_size + 1 bytes and closes the connection instead of reading on."""
    flood = 64 * 1024 * KiB
    proxy = make_proxy(flood_gets=flood)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=5.0)
    backends.append(backend)

    with pytest.raises(ObjectTooLargeError) as info:
        backend.get("blobs/ee/liar", max_size=1000)
    assert (info.value.key, info.value.limit) == ("blobs/ee/liar", 1000)
    assert proxy.wait_until(lambda: proxy.floods == 1)
    assert proxy.flood_sent < flood // 4  # socket buffers, not the body the server offered


# -- the stall deadline's setting --------------------------------------------------------------
@given(st.text(max_size=60).filter(lambda t: "\0" not in t))
@example("\U000e0001" * 60)  # escapes to 10 characters each: the message must stay short anyway
def test_the_stall_setting_is_a_bounded_number_or_a_one_line_error(text):
    low, high = STALL_SECONDS_RANGE
    with pytest.MonkeyPatch.context() as env:
        env.setenv(STALL_ENV, text)
        try:
            value = stall_seconds_from_env()
        except ConfigError as e:
            assert e.exit_code == 7 and STALL_ENV in e.message
            assert "\n" not in e.message and len(e.message) < 200
        else:
            assert low <= value <= high
            assert value == (float(text) if text.strip() else 5.0)


def test_cli_refuses_a_bad_stall_setting(tmp_path, s3_endpoint, s3_bucket):
    (tmp_path / "model_repos.yaml").write_text(
        json.dumps({"repos": {"team": s3_repo_yaml_entry(s3_endpoint, s3_bucket)}})
    )
    for bad in ("soon", "nan", "1e400", "-1", "0"):
        res = run(["model", "list", "team"], cwd=tmp_path, env=base_env(**{STALL_ENV: bad}))
        one_line_error(res, 7, STALL_ENV)


# -- the whole pull pipeline, through the console script ---------------------------------------
def test_cli_pull_through_a_link_that_stalls_every_first_get(tmp_path, make_proxy, s3_endpoint, s3_bucket):
    """`aim_cli model pull` from a repository behind a proxy that stalls the first GET of every
    blob mid-body: the pull completes and verifies, and every stalled connection was closed by
    the client (abandoned), none left to hang."""
    proxy = make_proxy(stall_first_gets=1, stall_after=16 * KiB)
    repos = {
        "direct": s3_repo_yaml_entry(s3_endpoint, s3_bucket),
        "stalling": s3_repo_yaml_entry(proxy.url, s3_bucket),
    }
    (tmp_path / "model_repos.yaml").write_text(json.dumps({"repos": repos}))
    src = make_mixed_model(tmp_path / "src", seed=5)
    ok(run(["model", "push", "direct", "m", src, "--tag", "v1", "--quiet"], cwd=tmp_path))

    env = base_env(**{STALL_ENV: "1"})
    ok(
        run(
            ["model", "pull", "stalling", "m", tmp_path / "dest", "--tag", "v1", "--quiet", "--jobs", "4"],
            cwd=tmp_path,
            env=env,
        )
    )
    assert_same_tree(src, tmp_path / "dest")
    # Every blob larger than 16 KiB stalled once; another GET (a retry or a hedge) delivered it.
    stalled = proxy.stalled_paths
    assert len(stalled) >= 3 and all("/blobs/" in path for path in stalled)
    assert all(proxy.seen["GET", path] > n for path, n in stalled.items())
    assert all_stalls_closed_by_client(proxy)


def test_cli_push_through_a_link_that_stalls_every_first_put(tmp_path, make_proxy, s3_endpoint, s3_bucket):
    """`aim_cli model push` to a repository behind a proxy that swallows the first PUT of every key
    (blobs, the manifest's conditional PUT, leases): every one is abandoned at the deadline and
    sent again, the version commits once, and a pull from the server itself gives the files back."""
    proxy = make_proxy(stall_first_puts=1)
    repos = {
        "direct": s3_repo_yaml_entry(s3_endpoint, s3_bucket),
        "stalling": s3_repo_yaml_entry(proxy.url, s3_bucket),
    }
    (tmp_path / "model_repos.yaml").write_text(json.dumps({"repos": repos}))
    src = make_mixed_model(tmp_path / "src", seed=6)

    env = base_env(**{STALL_ENV: "1"})
    ok(run(["model", "push", "stalling", "m", src, "--tag", "v1", "--quiet", "--jobs", "4"], cwd=tmp_path, env=env))
    stalled = proxy.stalled_paths
    manifest = path_of(s3_bucket, "models/m/versions/v1.json")
    assert any("/blobs/" in path for path in stalled) and manifest in stalled
    assert all(proxy.seen["PUT", path] >= 2 for path in stalled)  # swallowed once, then sent again
    assert proxy.conditional_puts[manifest] == 2  # the swallowed one and its retry: never a hedge
    assert all_stalls_closed_by_client(proxy)
    ok(run(["model", "pull", "direct", "m", tmp_path / "dest", "--tag", "v1", "--quiet"], cwd=tmp_path))
    assert_same_tree(src, tmp_path / "dest")


def test_a_listing_that_stalls_is_hedged(make_proxy, backends, s3_bucket):
    """A LIST answer that goes silent mid-body (a hung load balancer does not care which request
    it holds): the page is requested again once it straggles, and the listing completes long
    before the stall deadline would have ended it."""
    proxy = make_proxy(stall_after=0)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=3.0)
    backends.append(backend)
    keys = [f"blobs/3{i}/listed" for i in range(40)]
    for key in keys[:4]:  # the pace of a request here
        backend.put(key, b"x" * 100)
        assert backend.get(key) == b"x" * 100
    for key in keys[4:]:
        backend.put(key, b"x" * 100)
    proxy.stall_first_gets = 1  # the first GET of every path: the LIST's below

    assert sorted(info.key for info in backend.list("blobs/")) == sorted(keys)
    lists = [(path, n) for (method, path), n in proxy.seen.items() if method == "GET" and "list-type=2" in path]
    # The stalled page and its hedge; on a loaded machine the hedge may straggle too and be
    # hedged in turn, so "at least" (without hedging the page would wait out the 3 s deadline).
    assert len(lists) == 1 and lists[0][1] >= 2
    assert backend.stats.hedges >= 1 and backend.stats.hedges_won >= 1
    assert all_stalls_closed_by_client(proxy)  # the abandoned page's connection is closed too


# -- the first requests, before any pace is known ------------------------------------------------
def first_requests(backend, bucket: str):
    """The first request of a command, by kind, and what it must return: the access check and the
    first listing (LIST), the HEADs of ``size`` and ``find_in_parents``, a GET."""
    return {
        "check_access": (backend.check_access, None),
        "list": (lambda: [info.key for info in backend.list("blobs/")], ["blobs/f0/first"]),
        "size": (lambda: backend.size("blobs/f0/first"), len(b"first bytes")),
        "find_in_parents": (lambda: backend.find_in_parents("outer-marker"), f"s3://{bucket}"),
        "get": (lambda: backend.get("blobs/f0/first", max_size=100), b"first bytes"),
    }


@pytest.mark.parametrize("first", ["check_access", "list", "size", "find_in_parents", "get"])
def test_a_first_request_that_never_answers_is_hedged_after_the_first_byte_bound(
    first, make_proxy, backends, s3_bucket, s3_client
):
    """The very first request of a backend (no pace to compare with) gets no answer at all, not
    even a status line: it is hedged once the first-byte bound has passed, and the hedge's answer
    is the result. The stall deadline (30 s) is longer than the proxy holds a stall (10 s), so
    without the hedge the proxy would have cut the stall and botocore retried: no hedge counted."""
    s3_client.put_object(Bucket=s3_bucket, Key="repo/blobs/f0/first", Body=b"first bytes")
    s3_client.put_object(Bucket=s3_bucket, Key="outer-marker", Body=b"{}")
    proxy = make_proxy(stall_first_requests=1)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=30.0, first_byte_seconds=0.2)
    backends.append(backend)

    call, expected = first_requests(backend, s3_bucket)[first]
    assert call() == expected
    # On a loaded machine the hedge itself may pass the 0.2 s bound and be hedged in turn: every
    # copy but the winner is abandoned, and only the first request was held by the proxy.
    stats = backend.stats
    assert stats.hedges >= 1 and stats.hedges_won == 1 and stats.abandoned == stats.hedges
    assert stats == TransferStats(hedges=stats.hedges, hedges_won=1, abandoned=stats.hedges)
    assert proxy.stalled == 1 and proxy.requests == 1 + stats.hedges  # the silent request and its hedges
    assert proxy.stall_log == []  # the silent copy is still held: the hedge did not wait for it


def test_a_first_conditional_put_that_never_answers_is_retried_not_hedged(make_proxy, backends, s3_bucket, s3_client):
    """The first-byte bound never applies to a conditional PUT (a commit): a silent one is
    abandoned at the stall deadline and sent again, once, never raced against a twin."""
    proxy = make_proxy(stall_first_requests=1)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=1.0, first_byte_seconds=0.05)
    backends.append(backend)

    assert backend.put_if_absent("models/m/versions/v1.json", b"manifest") is True
    assert proxy.conditional_puts[path_of(s3_bucket, "models/m/versions/v1.json")] == 2
    assert backend.stats.hedges == 0 and backend.stats.stalls == 1
    assert s3_client.get_object(Bucket=s3_bucket, Key="repo/models/m/versions/v1.json")["Body"].read() == b"manifest"
    assert all_stalls_closed_by_client(proxy)


def test_cli_pull_whose_first_request_never_answers(tmp_path, make_proxy, s3_endpoint, s3_bucket):
    """`aim_cli model pull` through a link that never answers the command's first request (its
    access check, or a read sent beside it): the request is hedged after the first-byte bound, not
    left to the stall deadline. The deadline (30 s) is longer than the proxy holds a stall (10 s):
    had the pull waited for it, the proxy would have ended the stall itself, before any twin was
    sent. The process exits without waiting for the silent copy: the client's exit closes it."""
    proxy = make_proxy(stall_first_requests=1)
    repos = {
        "direct": s3_repo_yaml_entry(s3_endpoint, s3_bucket),
        "stalling": s3_repo_yaml_entry(proxy.url, s3_bucket),
    }
    (tmp_path / "model_repos.yaml").write_text(json.dumps({"repos": repos}))
    src = make_mixed_model(tmp_path / "src", seed=7)
    ok(run(["model", "push", "direct", "m", src, "--tag", "v1", "--quiet"], cwd=tmp_path))

    env = base_env(**{STALL_ENV: "30", FIRST_BYTE_ENV: "0.3"})
    ok(run(["model", "pull", "stalling", "m", tmp_path / "dest", "--tag", "v1", "--quiet"], cwd=tmp_path, env=env))
    assert_same_tree(src, tmp_path / "dest")
    assert proxy.wait_until(lambda: proxy.stall_log)
    [(method, path, _held, end, seen)] = proxy.stall_log
    # The access check (a one-key listing), or the manifest or aim-repo.json read beside it: the
    # first of the three to reach the proxy.
    first_reads = ("/repo/models/m/versions/v1.json", "/repo/aim-repo.json")
    assert method == "GET" and ("list-type=2" in path or path.endswith(first_reads)), path
    assert end == "client" and seen == 2  # its twin was sent while it was held; the exit closed it


def test_cli_refuses_a_bad_first_byte_setting(tmp_path, s3_endpoint, s3_bucket):
    (tmp_path / "model_repos.yaml").write_text(
        json.dumps({"repos": {"team": s3_repo_yaml_entry(s3_endpoint, s3_bucket)}})
    )
    for bad in ("soon", "nan", "-1", "0", "1e9"):
        res = run(["model", "list", "team"], cwd=tmp_path, env=base_env(**{FIRST_BYTE_ENV: bad}))
        one_line_error(res, 7, FIRST_BYTE_ENV)


def test_a_body_that_stops_is_replaced_when_no_hedge_slot_is_free(make_proxy, backends, s3_bucket, s3_client):
    """With one hedge slot (max_connections=1), taken by a race whose silent loser cannot be
    interrupted (a GET that never got its headers runs on to the deadline), a later GET whose
    body stops needs no slot: its silent copy is closed and a fresh one takes its place, so it
    waits neither for the slot nor for the stall deadline."""
    first, second = random_bytes(300 * KiB, seed=30), random_bytes(300 * KiB, seed=31)
    s3_client.put_object(Bucket=s3_bucket, Key="repo/blobs/a0/first", Body=first)
    s3_client.put_object(Bucket=s3_bucket, Key="repo/blobs/b0/second", Body=second)
    # The first request gets no answer at all; the first GET of the second key stops mid-body.
    proxy = make_proxy(stall_first_requests=1, stall_first_gets=1, stall_after=64 * KiB)
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=8.0, first_byte_seconds=0.2, max_connections=1)
    backends.append(backend)

    assert backend.get("blobs/a0/first", max_size=len(first)) == first
    # On a loaded machine the first hedge may itself pass the 0.2 s bound and be hedged again.
    n = backend.stats.hedges
    assert n >= 1 and backend.stats == TransferStats(hedges=n, hedges_won=1, abandoned=n)  # the slot stays taken
    assert backend.get("blobs/b0/second", max_size=len(second)) == second
    assert backend.stats == TransferStats(
        hedges=n + 1, hedges_won=2, hedges_mid_body=1, abandoned=n + 1, silent_closed=1
    )  # no stall: nothing waited for the deadline
    second_path = path_of(s3_bucket, "blobs/b0/second")
    assert proxy.seen["GET", second_path] == 2
    assert proxy.wait_until(lambda: any(path == second_path for _, path, *_ in proxy.stall_log))
    # Closed by the client: a replacement (silent_closed above), not a race, where the silent copy
    # would run on beside its twin. Whether the proxy's thread holding it sees that close before its
    # other thread counts the replacement is up to the scheduler: on a loaded machine it may not
    # (CI, 4 workers: seen 2), so the count at the close is not asserted.
    assert [end for _, path, _, end, _ in proxy.stall_log if path == second_path] == ["client"]
