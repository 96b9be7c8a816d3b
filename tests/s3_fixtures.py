"""S3 test fixtures (a pytest plugin, registered in tests/conftest.py).

By default the S3 tests talk HTTP to moto's standalone server, started once per session as a
subprocess on 127.0.0.1 and a free port. Set ``AIM_TEST_S3_ENDPOINT`` (plus the usual AWS_*
credential variables) to run the same tests against another S3 server instead.

Fixtures:
- ``s3_endpoint`` (session): the endpoint URL. Also puts dummy AWS credentials and region in
  ``os.environ`` (moto only), so CLI subprocesses started by end-to-end tests inherit them.
- ``s3_client`` (session): a plain boto3 client on that endpoint, for test set-up.
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
def s3_endpoint(tmp_path_factory):
    """The URL of an S3 endpoint for the whole session (see the module docstring)."""
    external = os.environ.get(ENDPOINT_ENV)
    if external:
        yield external
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

    log_path = aws_dir / "moto.log"
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
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    """A boto3 client for test set-up (creating buckets, peeking at raw keys)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=s3_region())
    yield client
    client.close()


def _empty_and_remove(client, bucket: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_client):
    """A fresh, empty bucket with a unique name; removed (with its objects) afterwards."""
    name = f"aim-test-{uuid.uuid4().hex[:16]}"
    region = s3_region()
    if region == "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        s3_client.create_bucket(Bucket=name)
    else:
        s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
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
