"""The S3 backend when things go wrong: broken connections, an unreachable endpoint, a missing
bucket, rejected or absent credentials. Everything talks real HTTP to the session's S3 server
(tests/s3_fixtures.py); faults come from a proxy in front of it, never from mocks or sleeps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aim_cli.backends.s3.backend import S3Backend
from aim_cli.backends.s3.errors import storage_error_from
from aim_cli.config import RepoConfig
from aim_cli.errors import KeyNotFoundError, StorageError
from tests.fakes import FaultyProxy
from tests.s3_fixtures import s3_region

ROOT = Path(__file__).resolve().parents[2]
S3_LOGGER = "aim_cli.backends.s3"


@pytest.fixture
def proxy(s3_endpoint):
    p = FaultyProxy(s3_endpoint)
    yield p
    p.close()


def new_backend(bucket: str, endpoint: str, prefix: str = "repo", **kw) -> S3Backend:
    return S3Backend(bucket, prefix, endpoint_url=endpoint, region=s3_region(), **kw)


def test_gets_and_puts_survive_broken_connections(proxy, s3_bucket, caplog):
    """Every large GET is broken mid-body twice and every PUT loses its first answer; all data
    still arrives byte for byte, thanks to the backend's own retries."""
    caplog.set_level(logging.DEBUG, logger=S3_LOGGER)
    # A long stall deadline: no hedge may add GETs to the proxy's exact counts on a busy machine.
    backend = new_backend(s3_bucket, proxy.url, max_connections=8, stall_seconds=60, first_byte_seconds=60)
    sizes = [10, 1000, 50_000, 200_000, 1_200_000, 1_500_000, 2_000_000, 3_000_000] * 2
    objects = {f"blobs/{i:02x}/{uuid.uuid4().hex}": os.urandom(size) for i, size in enumerate(sizes)}
    large = [key for key, data in objects.items() if len(data) > proxy.cut_after]
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda item: backend.put(*item), objects.items()))
            got = dict(zip(objects, pool.map(backend.get, objects), strict=True))
    finally:
        backend.close()

    assert got == objects
    assert proxy.lost_responses == len(objects)  # each PUT was retried after a lost answer
    assert proxy.cut_bodies == 2 * len(large)
    # Those body cuts were recovered by our retry (botocore does not retry a body read): one
    # retry logged per cut, none for the small objects.
    retried = [r.getMessage() for r in caplog.records if r.name == S3_LOGGER and "retry" in r.getMessage()]
    assert len(retried) == 2 * len(large)
    assert all(msg.startswith("reading blobs/") for msg in retried)
    assert {msg.split()[1] for msg in retried} == set(large)


def test_botocore_alone_does_not_survive_a_cut_body(proxy, s3_endpoint, s3_bucket, s3_client):
    """The control for the test above: a bare boto3 client through the same proxy fails on the
    first cut, which is why S3Backend.get retries the whole request itself."""
    import boto3
    from botocore.exceptions import IncompleteReadError, ResponseStreamingError

    s3_client.put_object(Bucket=s3_bucket, Key="big", Body=b"x" * 500_000)
    client = boto3.client("s3", endpoint_url=proxy.url, region_name=s3_region())
    try:
        response = client.get_object(Bucket=s3_bucket, Key="big")
        with pytest.raises((ResponseStreamingError, IncompleteReadError)):
            response["Body"].read()
    finally:
        client.close()
    assert proxy.cut_bodies == 1


def test_put_if_absent_whose_answer_was_lost(proxy, s3_bucket):
    """The request reaches S3 but the answer is lost; the retry then finds our own object (412).
    Returning False is allowed; what must hold is that the stored object is ours, whole."""
    backend = new_backend(s3_bucket, proxy.url)
    try:
        created = backend.put_if_absent("models/m/versions/v1.json", b"our manifest")
        assert proxy.lost_responses == 1
        assert created in (True, False)
        assert backend.get("models/m/versions/v1.json") == b"our manifest"
        # Now it exists: a second writer loses, and the content stays ours.
        assert backend.put_if_absent("models/m/versions/v1.json", b"theirs") is False
        assert backend.get("models/m/versions/v1.json") == b"our manifest"
    finally:
        backend.close()


# -- storage that cannot be used ---------------------------------------------------------------
def test_unreachable_endpoint_fails_fast_with_storage_error(closed_port):
    endpoint = f"http://127.0.0.1:{closed_port}"
    backend = new_backend("some-bucket", endpoint)
    start = time.monotonic()
    for call in (backend.check_access, lambda: backend.get("blobs/ab/x"), lambda: backend.put("k", b"data")):
        with pytest.raises(StorageError) as info:
            call()
        assert "cannot reach S3 endpoint" in info.value.message
        assert endpoint in info.value.message
        assert "s3://some-bucket/repo" in info.value.message
        assert "endpoint_url" in info.value.hint
        assert info.value.exit_code == 6
    assert time.monotonic() - start < 30


def test_missing_bucket_is_a_storage_error_naming_it(s3_endpoint):
    bucket = f"aim-test-missing-{uuid.uuid4().hex[:12]}"
    backend = new_backend(bucket, s3_endpoint)
    calls = {
        "check_access": backend.check_access,
        "get": lambda: backend.get("blobs/ab/x"),  # must not look like a merely missing key
        "put": lambda: backend.put("blobs/ab/x", b"x"),
        "put_if_absent": lambda: backend.put_if_absent("models/m/versions/v1.json", b"x"),
        "list": lambda: list(backend.list("")),
        "delete_many": lambda: backend.delete_many(["a", "b"]),
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as info:
            call()
        assert not isinstance(info.value, KeyNotFoundError), name
        assert f"bucket {bucket!r} does not exist" in info.value.message, name
        assert "create the bucket" in info.value.hint, name


def test_from_config_uses_bucket_prefix_and_endpoint(s3_endpoint, s3_bucket, s3_client):
    repo = RepoConfig(
        name="team",
        type="s3",
        path=f"s3://{s3_bucket}/team/vision",
        region=s3_region(),
        endpoint_url=s3_endpoint,
        addressing_style="path",
    )
    backend = S3Backend.from_config(repo, max_connections=4)
    try:
        assert backend.location == f"s3://{s3_bucket}/team/vision"
        backend.check_access()
        backend.put("aim-repo.json", b"{}")
    finally:
        backend.close()
    raw = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [obj["Key"] for obj in raw] == ["team/vision/aim-repo.json"]


def test_empty_prefix_stores_keys_at_the_bucket_root(s3_endpoint, s3_bucket, s3_client):
    backend = new_backend(s3_bucket, s3_endpoint, prefix="")
    try:
        assert backend.location == f"s3://{s3_bucket}"
        backend.put("blobs/ab/ab01", b"x")
        assert [info.key for info in backend.list("")] == ["blobs/ab/ab01"]
    finally:
        backend.close()
    assert [obj["Key"] for obj in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["blobs/ab/ab01"]


# -- the error mapping, fed botocore's own exception objects ---------------------------------
def client_error(code: str, status: int, operation: str = "GetObject", message: str = "m"):
    from botocore.exceptions import ClientError

    # The dict botocore's parser makes from an S3 error response.
    return ClientError(
        {
            "Error": {"Code": code, "Message": message, "BucketName": "my-bucket"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
        },
        operation,
    )


def botocore_exception(name: str, **kwargs):
    import botocore.exceptions

    return getattr(botocore.exceptions, name)(**kwargs)


ENDPOINT = "http://s3.example:9000"
# case -> (a botocore exception, a phrase of the message, a phrase of the hint)
MAPPING_CASES = {
    "InvalidAccessKeyId": (
        lambda: client_error("InvalidAccessKeyId", 403),
        "credentials were rejected",
        "AWS_ACCESS_KEY_ID",
    ),
    "SignatureDoesNotMatch": (
        lambda: client_error("SignatureDoesNotMatch", 403),
        "credentials were rejected",
        "AWS_SECRET_ACCESS_KEY",
    ),
    "AccessDenied": (lambda: client_error("AccessDenied", 403), "access denied", "policy"),
    "HeadObject 403": (lambda: client_error("403", 403, "HeadObject", "Forbidden"), "access denied", "policy"),
    "NoSuchBucket": (
        lambda: client_error("NoSuchBucket", 404),
        "bucket 'my-bucket' does not exist",
        "create the bucket",
    ),
    "HeadBucket 404": (
        lambda: client_error("404", 404, "HeadBucket", "Not Found"),
        "bucket 'my-bucket' does not exist",
        "create the bucket",
    ),
    "PermanentRedirect": (lambda: client_error("PermanentRedirect", 301), "wrong region", "region:"),
    "SlowDown": (lambda: client_error("SlowDown", 503), "throttling", "--jobs"),
    "other ClientError": (
        lambda: client_error("InternalError", 500, message="boom"),
        "S3 error InternalError",
        "retry",
    ),
    "NoCredentialsError": (
        lambda: botocore_exception("NoCredentialsError"),
        "no AWS credentials found",
        "~/.aws/credentials",
    ),
    "PartialCredentialsError": (
        lambda: botocore_exception("PartialCredentialsError", provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        "no AWS credentials found",
        "profile:",
    ),
    "EndpointConnectionError": (
        lambda: botocore_exception("EndpointConnectionError", endpoint_url=ENDPOINT),
        f"cannot reach S3 endpoint {ENDPOINT}",
        "endpoint_url",
    ),
    "ConnectTimeoutError": (
        lambda: botocore_exception("ConnectTimeoutError", endpoint_url=ENDPOINT),
        f"cannot reach S3 endpoint {ENDPOINT}",
        "endpoint_url",
    ),
    "ConnectionClosedError": (
        lambda: botocore_exception("ConnectionClosedError", endpoint_url=ENDPOINT),
        f"cannot reach S3 endpoint {ENDPOINT}",
        "network",
    ),
    "ReadTimeoutError": (
        lambda: botocore_exception("ReadTimeoutError", endpoint_url=ENDPOINT),
        "stopped answering",
        "network",
    ),
    "ProfileNotFound": (
        lambda: botocore_exception("ProfileNotFound", profile="ml-team"),
        "AWS profile 'ml-team' not found",
        "~/.aws/config",
    ),
}


@pytest.mark.parametrize("case", list(MAPPING_CASES))
def test_storage_error_from_maps_botocore_exceptions(case):
    make, message_part, hint_part = MAPPING_CASES[case]
    error = storage_error_from(make(), "reading blobs/ab/x", location="s3://my-bucket/repo", bucket="my-bucket")
    assert type(error) is StorageError
    assert error.exit_code == 6
    assert message_part in error.message
    assert hint_part in error.hint
    assert "s3://my-bucket/repo" in error.message
    assert "\n" not in error.message and "\n" not in error.hint
    assert "Traceback" not in error.message


def test_storage_error_from_needs_only_the_exception_and_action():
    from botocore.exceptions import NoCredentialsError

    error = storage_error_from(NoCredentialsError(), "listing")
    assert isinstance(error, StorageError) and "no AWS credentials found while listing" in error.message


# -- no credentials at all ---------------------------------------------------------------------
NO_CREDENTIALS_SCRIPT = """
import json, sys
from aim_cli.backends.s3.backend import S3Backend
from aim_cli.errors import StorageError

bucket, endpoint = sys.argv[1:3]
results = {}
backend = S3Backend(bucket, "repo", endpoint_url=endpoint, region="us-east-1")
for name, call in [("check_access", backend.check_access), ("get", lambda: backend.get("blobs/ab/x"))]:
    try:
        call()
        results[name] = None
    except StorageError as e:
        results[name] = [type(e).__name__, e.exit_code, e.message, e.hint]
try:
    S3Backend(bucket, "repo", endpoint_url=endpoint, region="us-east-1", profile="no-such-profile")
    results["profile"] = None
except StorageError as e:
    results["profile"] = [type(e).__name__, e.exit_code, e.message, e.hint]
print(json.dumps(results))
"""


def test_no_credentials_is_a_storage_error(tmp_path, s3_endpoint, s3_bucket):
    # A fresh process, so that nothing of this process's boto3 state or environment leaks in.
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",  # do not wait for an instance metadata service
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", NO_CREDENTIALS_SCRIPT, s3_bucket, s3_endpoint],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30
    results = json.loads(proc.stdout)
    for name in ("check_access", "get"):
        kind, code, message, hint = results[name]
        assert (kind, code) == ("StorageError", 6)
        assert message.startswith("no AWS credentials found")
        assert f"s3://{s3_bucket}/repo" in message
        assert "AWS_ACCESS_KEY_ID" in hint and "profile:" in hint
    kind, code, message, hint = results["profile"]
    assert (kind, code) == ("StorageError", 6)
    assert "AWS profile 'no-such-profile' not found" in message


# -- start-up cost -----------------------------------------------------------------------------
def test_importing_the_module_does_not_import_boto3():
    modules = ", ".join(f"aim_cli.backends.s3.{name}" for name in ("backend", "resilience", "errors", "client"))
    code = f"import sys, {modules}; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_delete_many_reports_keys_the_server_refused(s3_backend, s3_client):
    """DeleteObjects answers 200 and lists per-key failures in its body: they must not pass
    silently (here a bucket policy forbids deleting under one prefix)."""
    bucket = s3_backend.bucket
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{bucket}/repo/protected/*",
            }
        ],
    }
    keys = ["protected/a", "protected/b", "free/c", "free/d"]
    for key in keys:
        s3_backend.put(key, b"x")
    s3_client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    try:
        with pytest.raises(StorageError) as info:
            s3_backend.delete_many(keys)
    finally:
        s3_client.delete_bucket_policy(Bucket=bucket)
    assert "could not delete 2 of 4 objects" in info.value.message
    assert "protected/" in info.value.message and "AccessDenied" in info.value.message
    assert info.value.exit_code == 6
    assert sorted(o.key for o in s3_backend.list("")) == ["protected/a", "protected/b"]
