"""What real object stores do that moto does not, on both test servers (moto and Ceph RGW 16).

RGW 16 compares ``If-Match`` with the ETag without its quotes, ignores ``If-None-Match: *`` on
CompleteMultipartUpload (an existing key is overwritten) and answers that request with an empty
ETag. aim_cli relies on none of these: its conditional create is one PutObject, whatever the size,
and it never sends If-Match, never uploads in parts and never reads an ETag. Real stores also
answer 503 SlowDown, 500 InternalError, and errors whose XML has no Message: the FaultyProxy
(tests/fakes.py) sends those in front of the real server.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aim_cli.backends.s3.backend import S3Backend
from aim_cli.errors import StorageError
from tests.fakes import FaultyProxy
from tests.s3_fixtures import MOTO_ONLY, s3_region

WRITERS = 16
KEYS = 40
SOURCE = Path(__file__).resolve().parents[2] / "aim_cli"


def error_xml(code: str, message: str | None = None) -> bytes:
    text = f"<Code>{code}</Code>" + (f"<Message>{message}</Message>" if message is not None else "")
    return f'<?xml version="1.0" encoding="UTF-8"?><Error>{text}<RequestId>tx1</RequestId></Error>'.encode()


@pytest.fixture
def proxy(s3_endpoint):
    """A proxy that forwards everything untouched unless a test gives it answers of its own."""
    p = FaultyProxy(s3_endpoint, cut_gets=0, lose_puts=0)
    yield p
    p.close()


@pytest.fixture
def proxied(proxy, s3_bucket):
    backend = S3Backend(s3_bucket, "repo", endpoint_url=proxy.url, region=s3_region())
    yield backend
    backend.close()


def test_the_conditional_create_is_one_put_object_even_for_a_large_object(proxy, proxied, s3_bucket):
    """No multipart upload (whose If-None-Match RGW ignores): one PUT with If-None-Match, no POST."""
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB: above boto3's multipart threshold (8 MiB)
    assert proxied.put_if_absent("big", data)
    assert not proxied.put_if_absent("big", b"other")
    path = f"/{s3_bucket}/repo/big"
    assert proxy.conditional_puts[path] == 2
    assert [m for (m, p) in proxy.seen if m in ("PUT", "POST")] == ["PUT"]
    assert all("upload" not in p for (_m, p) in proxy.seen)
    assert proxied.get("big") == data


def test_many_writers_per_key_give_exactly_one_winner(s3_backend):
    """40 keys x 16 writers released together per key: one creates it, 15 see it exists, and the
    stored bytes are the winner's."""
    barriers = [threading.Barrier(WRITERS, timeout=60) for _ in range(KEYS)]

    def write(key: int, writer: int) -> bool:
        barriers[key].wait()
        return s3_backend.put_if_absent(f"k/{key}", f"key {key} writer {writer}".encode())

    with ThreadPoolExecutor(WRITERS) as pool:
        futures = {(k, w): pool.submit(write, k, w) for k in range(KEYS) for w in range(WRITERS)}
        won = {kw: f.result() for kw, f in futures.items()}
    for key in range(KEYS):
        winners = [w for w in range(WRITERS) if won[key, w]]
        assert len(winners) == 1, (key, winners)
        assert s3_backend.get(f"k/{key}") == f"key {key} writer {winners[0]}".encode()


def test_no_code_path_uses_if_match_multipart_or_etags():
    """The three RGW 16 quirks cannot bite code that never takes those paths."""
    forbidden = re.compile(
        r"IfMatch|If-Match|multipart|upload_part|upload_file|upload_fileobj|copy_object|ETag", re.IGNORECASE
    )
    hits = [
        f"{path.relative_to(SOURCE)}:{n}"
        for path in SOURCE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert hits == []


@MOTO_ONLY  # the proxy answers these itself: the server behind it does not matter
def test_slowdown_is_retried_then_reported_as_throttling(proxy, proxied, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="repo/k", Body=b"payload")
    proxy.answers["GET"] = [(503, error_xml("SlowDown", "Please reduce your request rate."))] * 2
    assert proxied.get("k") == b"payload"
    assert proxy.answered == 2

    proxy.answers["GET"] = [(503, error_xml("SlowDown", "Please reduce your request rate."))] * 100
    with pytest.raises(StorageError) as info:
        proxied.get("k")
    assert "throttling" in str(info.value) and "\n" not in str(info.value)
    assert "lower --jobs" in info.value.hint


@MOTO_ONLY  # the proxy answers these itself: the server behind it does not matter
def test_internal_error_on_a_put_is_retried_and_the_object_stored_once(proxy, proxied):
    proxy.answers["PUT"] = [(500, error_xml("InternalError", "We encountered an internal error."))]
    assert proxied.put_if_absent("tag", b"manifest")
    assert proxy.answered == 1
    assert proxied.get("tag") == b"manifest"
    assert not proxied.put_if_absent("tag", b"another")


@MOTO_ONLY  # the proxy answers these itself: the server behind it does not matter
@pytest.mark.parametrize("status", [400, 500])
def test_an_error_without_a_message_reads_as_one_line_without_none(proxy, proxied, status):
    """RGW often leaves the Message out (InvalidBucketName, PreconditionFailed)."""
    proxy.answers["GET"] = [(status, error_xml("InvalidArgument"))] * 100
    with pytest.raises(StorageError) as info:
        proxied.get("k")
    text = str(info.value)
    assert "InvalidArgument" in text and "None" not in text and "\n" not in text


# -- the cluster itself (tests/rgw.py) ------------------------------------------------------------
def test_missing_ceph_packages_are_one_line_naming_the_install_command(tmp_path, monkeypatch):
    from tests.rgw import RgwUnavailable, start_cluster

    monkeypatch.setenv("PATH", str(tmp_path))  # no Ceph program can be found
    with pytest.raises(RgwUnavailable) as info:
        start_cluster("key", "secret", tmp_path / "ceph")
    assert "apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd" in str(info.value)
    assert "\n" not in str(info.value)


def _gone(pid: int) -> bool:
    """No such process, or a zombie (killed, not yet reaped by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.rgw
def test_a_killed_test_run_leaves_no_daemon_behind(tmp_path):
    """A killed run runs no teardown: the parent-death signal takes the daemons down with it."""
    root = Path(__file__).resolve().parents[2]
    script = (
        f"import sys; sys.path.insert(0, {str(root)!r}); from pathlib import Path; "
        "from tests.rgw import start_cluster; "
        "c = start_cluster('key', 'secret', Path(sys.argv[1])); "
        "print(*[p.pid for p in c.procs], flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", script, str(tmp_path / "ceph")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and not any(_gone(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # a bounded poll of the process table, not a synchronisation sleep
    assert all(_gone(p) for p in pids)
