"""The access check sent beside a command's first reads (``S3Backend.begin_access_check``,
docs/design.md §13): its round trip overlaps theirs, yet its failure is what the backend reports
(a read's own answer counts only once the check has passed), and no write or delete is sent
before it has passed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from aim_cli.errors import StorageError
from tests.backends.test_s3_faults import new_backend
from tests.backends.test_s3_real_stores import error_xml
from tests.fakes import FaultyProxy

#: What the proxies below answer the access check (a ListObjectsV2, a GET): a policy's refusal.
DENIED = (403, error_xml("AccessDenied", "Access Denied"))


class HoldingProxy(FaultyProxy):
    """Forwards everything, but holds each listing (the access check is one) until ``released``
    is set, at most 30 s (then ``timed_out``); ``arrived`` lists the requests as they came,
    (method, path)."""

    def __init__(self, upstream: str):
        super().__init__(upstream, cut_gets=0, lose_puts=0)
        self.arrived: list[tuple[str, str]] = []
        self.released = threading.Event()
        self.timed_out = False

    def _forward(self, handler) -> None:
        with self._changed:
            self.arrived.append((handler.command, handler.path))
            self._changed.notify_all()
        if handler.command == "GET" and "list-type=2" in handler.path:
            # Bounded: a backend that waits for the check fails the test, it does not hang it.
            self.timed_out |= not self.released.wait(30)
        super()._forward(handler)


def test_the_first_read_is_sent_while_the_check_is_out(s3_endpoint, s3_bucket, s3_client):
    """The check is held by the proxy: the first read goes out meanwhile, and its answer is
    returned once the check has passed."""
    s3_client.put_object(Bucket=s3_bucket, Key="repo/aim-repo.json", Body=b"{}\n")
    proxy = HoldingProxy(s3_endpoint)
    # No hedge of the held check within the test (first-byte bound 12 s, a fifth of the deadline).
    backend = new_backend(s3_bucket, proxy.url, stall_seconds=60, first_byte_seconds=60)
    try:
        backend.begin_access_check()
        with ThreadPoolExecutor(1) as pool:
            size = pool.submit(backend.size, "aim-repo.json")
            assert proxy.wait_until(lambda: len(proxy.arrived) == 2, timeout=20), proxy.arrived
            assert not size.done()  # its answer has come, the check's not yet
            proxy.released.set()
            assert size.result(timeout=60) == 3
        assert sorted(method for method, _ in proxy.arrived) == ["GET", "HEAD"]
        assert not proxy.timed_out  # begin_access_check did not wait for the check's answer
    finally:
        proxy.released.set()
        backend.close()
        proxy.close()


def test_no_write_or_delete_is_sent_before_the_check_passes(s3_endpoint, s3_bucket, s3_client):
    proxy = FaultyProxy(s3_endpoint, cut_gets=0, lose_puts=0, answers={"GET": [DENIED]})
    backend = new_backend(s3_bucket, proxy.url)
    try:
        backend.begin_access_check()
        calls = {
            "put": lambda: backend.put("blobs/ab/x", b"x"),
            "put_if_absent": lambda: backend.put_if_absent("models/m/versions/v1.json", b"x"),
            "delete": lambda: backend.delete("locks/l.json"),
            "delete_many": lambda: backend.delete_many(["a", "b"]),
        }
        for name, call in calls.items():  # each time: the location failed its check
            with pytest.raises(StorageError) as info:
                call()
            assert info.value.message == f"access denied while checking access in s3://{s3_bucket}/repo", name
        [(method, path)] = proxy.seen  # the check alone
        assert method == "GET" and "list-type=2" in path and proxy.requests == 1
    finally:
        backend.close()
        proxy.close()
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket)  # nothing was written


def test_a_read_beside_a_failed_check_reports_the_check(s3_endpoint, s3_bucket, s3_client):
    """The reads below are HEADs, which the server answers (the key's size; 404 above the
    prefix): without the check's failure they would have returned."""
    s3_client.put_object(Bucket=s3_bucket, Key="repo/aim-repo.json", Body=b"{}\n")
    proxy = FaultyProxy(s3_endpoint, cut_gets=0, lose_puts=0, answers={"GET": [DENIED]})
    backend = new_backend(s3_bucket, proxy.url)
    try:
        backend.begin_access_check()
        for call in (
            lambda: backend.size("aim-repo.json"),
            lambda: backend.exists("aim-repo.json"),
            lambda: backend.find_in_parents("aim-repo.json"),
        ):
            with pytest.raises(StorageError) as info:
                call()
            assert info.value.message == f"access denied while checking access in s3://{s3_bucket}/repo"
    finally:
        backend.close()
        proxy.close()


def test_an_unreachable_endpoint_is_reported_by_the_check(closed_port):
    """Every request fails; what the user reads is the check's failure, whichever call met it."""
    endpoint = f"http://127.0.0.1:{closed_port}"
    backend = new_backend("some-bucket", endpoint)
    backend.begin_access_check()
    calls = {
        "size": lambda: backend.size("aim-repo.json"),
        "get": lambda: backend.get("models/m/versions/v1.json", max_size=1000),
        "get_prefix": lambda: backend.get_prefix("blobs/ab/x", 10),
        "list": lambda: list(backend.list("models/")),
        "put": lambda: backend.put("k", b"data"),
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.message == (
            f"cannot reach S3 endpoint {endpoint} while checking access in s3://some-bucket/repo"
        ), name
