"""The S3 client of an S3 backend: its botocore configuration (timeouts, botocore's own retries,
pool size) and the botocore sessions it is made from, reused across backends.

botocore (~150 ms of CPU) is imported when a client is made, never at import time. The client is
botocore's own: boto3 adds resources and transfer helpers (s3transfer, 65 more modules, ~25 ms)
that aim_cli does not use, and no credentials of its own (a boto3 Session resolves them with
botocore's chain, the one used here). Making the first client of a process (importing botocore,
parsing its S3 model and endpoint data: ~100 ms of CPU) leaves some 70,000 objects that live as
long as the process, so the cyclic garbage collector is paused meanwhile (``import_botocore``,
``new_client``): its passes over them found nothing to collect, 34 ms of CPU, against one
young-generation pass as the collector comes back on, 15 ms (docs/design.md §13).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aim_cli.backends.s3.resilience import DEFAULT_STALL_SECONDS

#: botocore's attempts per request (standard mode; its backoff starts at 50 ms). With
#: CONNECT_TIMEOUT this bounds how long an unreachable endpoint takes to report: 5 x 5 s < 30 s.
BOTOCORE_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 5
#: Kept for callers that configure a plain boto3 client like ours (benchmarks/s3_bench.py).
READ_TIMEOUT = DEFAULT_STALL_SECONDS

_SESSIONS: dict = {}
_SESSIONS_LOCK = threading.Lock()


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block (unless it was off already): for making a
    client, which allocates much and frees little. Only a collector found on is turned back on,
    so nested or concurrent blocks leave it on at the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: What botocore imports only to take the standard library's SSLContext from it, when pyOpenSSL is
#: installed (docs/design.md §13).
_PYOPENSSL = "urllib3.contrib.pyopenssl"


def import_botocore() -> None:
    """Import what an S3 client needs of botocore and urllib3, with the collector paused and
    without pyOpenSSL (``without_pyopenssl``)."""
    with gc_paused(), without_pyopenssl():
        for name in ("botocore.session", "botocore.config", "botocore.exceptions", "urllib3.exceptions"):
            importlib.import_module(name)


@contextmanager
def without_pyopenssl() -> Iterator[None]:
    """``urllib3.contrib.pyopenssl`` cannot be imported in the block, unless it already was.

    botocore's ``httpsession`` imports it, when pyOpenSSL is installed, only for the name
    ``orig_util_SSLContext``: the standard library's SSLContext as urllib3 held it before any
    pyOpenSSL injection. Otherwise (ImportError) it takes ``urllib3.util.ssl_.SSLContext``, the
    same class while nobody injected pyOpenSSL, which only an import of that module can do, and
    then the module is loaded and left alone here. The import cost every S3 command 20-40 ms of
    CPU (pyOpenSSL, then cryptography's X.509 modules). A ``None`` in ``sys.modules`` is how an
    import is refused; it is taken out again at the end of the block."""
    if _PYOPENSSL in sys.modules:
        yield
        return
    sys.modules[_PYOPENSSL] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(_PYOPENSSL, 0) is None:
            del sys.modules[_PYOPENSSL]


def _session(profile: str | None):
    """A botocore Session per profile and AWS environment, reused: a new one re-reads botocore's
    endpoint and service data (about 0.1 s of JSON per client). Keyed by the AWS_* variables too,
    so a changed environment never sees credentials resolved under the old one."""
    import botocore.session

    key = (profile, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    session = _SESSIONS.get(key)
    if session is None:
        session = botocore.session.Session(profile=profile)
        _SESSIONS[key] = session
    return session


def client_config(*, read_timeout: float, max_pool_connections: int, addressing_style: str | None = None):
    """The botocore Config of our clients; ``read_timeout`` is the stall deadline."""
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": BOTOCORE_MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        # S3-compatible servers (MinIO, Ceph, R2 ...) reject or mishandle the CRC checksums
        # that botocore >= 1.36 adds by default; integrity is checked above by BLAKE3 anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": addressing_style} if addressing_style else None,
    )


def new_client(profile: str | None, region: str | None, endpoint_url: str | None, config):
    """An S3 client. Credentials come only from botocore's chain, boto3's and the AWS CLI's
    (environment, ~/.aws, profile, container and instance roles). Raises botocore's errors, and
    ValueError for an invalid endpoint_url or region."""
    with _SESSIONS_LOCK, gc_paused():  # a botocore Session is not safe to create clients from concurrently
        session = _session(profile)
        return session.create_client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
