"""S3 test fixtures (a pytest plugin, registered in tests/conftest.py).

The S3 tests run against two servers, both on 127.0.0.1 and free ports, started once per
session (each pytest-xdist worker is a session of its own): "s3" is moto's standalone server
(a subprocess), "rgw" is Ceph's RADOS Gateway (Debian's packages, a throw-away single-node
cluster: tests/rgw.py). Set ``AIM_TEST_S3_ENDPOINT`` (plus the
usual AWS_* credential variables) to run the "s3" tests against another S3 server instead of moto;
the "rgw" runs then make an RGW user with those same keys. ``pytest -m rgw`` selects the RGW runs,
``-m "not rgw"`` leaves them out. They are never skipped: without the Ceph packages they fail with
one line naming the command that installs them.

Fixtures:
- ``s3_server``: "s3" or "rgw". A test whose fixtures include it (directly or through
  ``s3_endpoint``, ``s3_client``, ``s3_bucket``, ``s3_backend``) runs once per server
  (``pytest_generate_tests``); ``MOTO_ONLY`` keeps a (slow, property-based) test to moto. A
  fixture that asks for ``s3_endpoint`` through ``request.getfixturevalue`` gets moto; one that
  picks its server itself calls ``s3_location(request, server)``.
- ``moto_endpoint`` / ``rgw_endpoint`` (session): each server's URL. The first one to start puts
  the AWS credentials and region in ``os.environ`` (unless ``AIM_TEST_S3_ENDPOINT`` is set), so CLI
  subprocesses started by end-to-end tests inherit them.
- ``s3_endpoint``, ``s3_client``: the URL of, and a plain boto3 client on, the test's server.
- ``s3_bucket``: a fresh, uniquely named, empty bucket; emptied and removed afterwards.
- ``s3_backend``: an ``S3Backend`` on a fresh bucket under the prefix ``repo/``.

End-to-end tests write a repository entry with ``s3_repo_yaml_entry`` / ``s3_repo_yaml``::

    def test_push(tmp_path, s3_endpoint, s3_bucket):
        (tmp_path / "model_repos.yaml").write_text(s3_repo_yaml("team", s3_endpoint, s3_bucket))

This file is also the server launcher: ``python -P tests/s3_fixtures.py --serve`` runs moto's S3
server and prints the port it bound (see ``_serve``).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ENDPOINT_ENV = "AIM_TEST_S3_ENDPOINT"
REGION = "us-east-1"
#: How long the moto server may take to start (importing moto and flask takes ~1-2 s).
STARTUP_DEADLINE = 60.0
#: The servers every S3 test runs against (the ``s3_server`` parameter); "s3" is moto.
S3_SERVERS = ["s3", pytest.param("rgw", marks=pytest.mark.rgw)]
SERVER_NAMES = ("s3", "rgw")
_ENDPOINT_FIXTURE = {"s3": "moto_endpoint", "rgw": "rgw_endpoint"}
#: Keeps a test to the moto server (slow property-based tests: one server is enough).
MOTO_ONLY = pytest.mark.parametrize("s3_server", ["s3"], indirect=True)


def s3_region() -> str:
    """The region the test buckets live in."""
    return os.environ.get("AWS_DEFAULT_REGION") or REGION


def s3_repo_yaml_entry(endpoint: str, bucket: str, prefix: str = "repo") -> dict:
    """The model_repos.yaml entry for an S3 repository on the test server."""
    return {
        "type": "s3",
        "path": f"s3://{bucket}/{prefix}",
        "endpoint_url": endpoint,
        "region": s3_region(),
    }


def s3_repo_yaml(name: str, endpoint: str, bucket: str, prefix: str = "repo") -> str:
    """A whole model_repos.yaml text holding one S3 repository ``name`` on the test server."""
    entry = s3_repo_yaml_entry(endpoint, bucket, prefix)
    # JSON strings are valid YAML double-quoted scalars: safe for URLs with colons.
    fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items())
    return f"repos:\n  {name}: {{{fields}}}\n"


# -- the moto server ---------------------------------------------------------------------------
def _serve() -> None:
    """Run moto's S3 server on 127.0.0.1 and a port chosen by the kernel; print that port.

    Binding port 0 here (instead of picking a free port in the parent and passing it to
    ``moto.server -p``) leaves no window in which another process could take the port.

    moto checks ``If-None-Match: *`` and then stores the object in two separate steps, so two
    concurrent conditional PUTs can both succeed; real S3 decides atomically. We serialise
    conditional PUTs so that the conformance suite tests our code, not moto's race.
    """
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    moto_app = DomainDispatcherApplication(create_backend_app)
    create_lock = threading.Lock()

    def app(environ, start_response):
        if environ.get("REQUEST_METHOD") == "PUT" and environ.get("HTTP_IF_NONE_MATCH") == "*":
            with create_lock:
                return list(moto_app(environ, start_response))
        return moto_app(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.port)
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()
    # Nobody reads our stdout after the port: point it at /dev/null so that a stray print can
    # never fill the pipe and block the server.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    server.serve_forever()


def _read_port(proc: subprocess.Popen, log_path: Path) -> int:
    """The port the server printed, waiting at most STARTUP_DEADLINE."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                if line.strip().isdigit():
                    return int(line)
                if not line:  # EOF: the server died
                    break
    proc.kill()
    raise RuntimeError(f"moto server did not start; its log:\n{log_path.read_text(errors='replace')[-4000:]}")


def _wait_until_answering(url: str, deadline: float) -> None:
    """Poll ``url`` until the server answers an HTTP request (any status)."""
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error status is an answer
        except OSError as e:
            last_error = e
            # Not a synchronisation sleep: a short pause between polls of a bounded loop.
            time.sleep(0.05)
    raise RuntimeError(f"moto server at {url} did not answer: {last_error}")


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound, never listening, held for the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started by the launcher: terminate, kill if it lingers, close its pipe."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory):
    """Dummy AWS credentials and region in ``os.environ`` for the session (none with an external
    endpoint: its AWS_* variables are the caller's); restored at the end."""
    if os.environ.get(ENDPOINT_ENV):
        yield
        return
    saved = dict(os.environ)
    aws_dir = tmp_path_factory.mktemp("aws")
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        # Keep a developer's ~/.aws (profiles, endpoint or addressing overrides) out of the tests.
        AWS_CONFIG_FILE=str(aws_dir / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(aws_dir / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    for var in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(var, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def moto_endpoint(aws_env, tmp_path_factory):
    """The URL of moto's server, or of ``AIM_TEST_S3_ENDPOINT`` when set."""
    external = os.environ.get(ENDPOINT_ENV)
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # -P: do not put tests/ first on sys.path, where a test module could shadow a library.
            [sys.executable, "-P", str(Path(__file__).resolve()), "--serve"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        port = _read_port(proc, log_path)
        url = f"http://127.0.0.1:{port}"
        _wait_until_answering(url + "/moto-api/", time.monotonic() + STARTUP_DEADLINE)
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def rgw_endpoint(aws_env, tmp_path_factory):
    """The URL of a throw-away Ceph RGW (tests/rgw.py) whose S3 user has the session's keys.
    Without the Ceph packages, or if the cluster does not start, each RGW test fails with one
    line saying why (never a skip)."""
    from tests.rgw import RgwUnavailable, start_cluster

    try:
        keys = os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        # Under pytest's temporary directory: the logs of a killed run are cleaned up like the rest.
        cluster = start_cluster(*keys, tmp_path_factory.mktemp("ceph"))
    except RgwUnavailable as e:
        pytest.fail(f"Ceph RGW unavailable: {e}", pytrace=False)
    try:
        yield cluster.endpoint
    finally:
        cluster.stop()


def pytest_generate_tests(metafunc):
    """Run each test that uses ``s3_server`` (often through ``s3_endpoint``) on every server,
    unless the test parametrizes ``s3_server`` itself (``MOTO_ONLY``)."""
    if "s3_server" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "s3_server" in (names.split(",") if isinstance(names, str) else names):
            return
    metafunc.parametrize("s3_server", S3_SERVERS, indirect=True)


@pytest.fixture
def s3_server(request) -> str:
    """ "s3" (moto) or "rgw": the server this test runs against (moto when not parametrized)."""
    return getattr(request, "param", "s3")


@pytest.fixture
def s3_endpoint(request, s3_server) -> str:
    """The URL of the test's S3 server (see the module docstring)."""
    return request.getfixturevalue(_ENDPOINT_FIXTURE[s3_server])


_clients: dict[str, object] = {}


@pytest.fixture(scope="session", autouse=True)
def _close_s3_clients():
    yield
    for client in _clients.values():
        client.close()
    _clients.clear()


def client_for(endpoint: str):
    """A boto3 client on ``endpoint``, made once per session."""
    import boto3

    if endpoint not in _clients:
        _clients[endpoint] = boto3.client("s3", endpoint_url=endpoint, region_name=s3_region())
    return _clients[endpoint]


@pytest.fixture
def s3_client(s3_endpoint):
    """A boto3 client for test set-up (creating buckets, peeking at raw keys)."""
    return client_for(s3_endpoint)


def _empty_and_remove(client, bucket: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def _new_bucket(client) -> str:
    name = f"aim-test-{uuid.uuid4().hex[:16]}"
    region = s3_region()
    if region == "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        client.create_bucket(Bucket=name)
    else:
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def s3_location(request, server: str) -> tuple[str, str]:
    """(endpoint, fresh bucket) on ``server`` ("s3" or "rgw"), the bucket removed after the test:
    for fixtures that choose the server themselves (the ``repo`` fixture, the conformance suite)."""
    endpoint = request.getfixturevalue(_ENDPOINT_FIXTURE[server])
    client = client_for(endpoint)
    bucket = _new_bucket(client)
    request.addfinalizer(lambda: _empty_and_remove(client, bucket))
    return endpoint, bucket


@pytest.fixture
def s3_bucket(s3_client):
    """A fresh, empty bucket with a unique name; removed (with its objects) afterwards."""
    name = _new_bucket(s3_client)
    yield name
    _empty_and_remove(s3_client, name)


@pytest.fixture
def s3_backend(s3_endpoint, s3_bucket):
    """An S3Backend on a fresh bucket, under the prefix ``repo/``."""
    from aim_cli.backends.s3.backend import S3Backend

    backend = S3Backend(s3_bucket, "repo/", endpoint_url=s3_endpoint, region=s3_region(), max_connections=32)
    yield backend
    backend.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        sys.exit(f"usage: {sys.argv[0]} --serve   (runs moto's S3 server, prints its port)")
    _serve()
