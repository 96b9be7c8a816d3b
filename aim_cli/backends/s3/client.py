"""The boto3 client of an S3 backend: its botocore configuration (timeouts, botocore's own retries,
pool size) and the boto3 sessions it is made from, reused across backends.

boto3 and botocore (~190 ms) are imported when a client is made, never at import time.
"""

from __future__ import annotations

import os
import threading

from aim_cli.backends.s3.resilience import DEFAULT_STALL_SECONDS

#: botocore's attempts per request (standard mode; its backoff starts at 50 ms). With
#: CONNECT_TIMEOUT this bounds how long an unreachable endpoint takes to report: 5 x 5 s < 30 s.
BOTOCORE_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 5
#: Kept for callers that configure a plain boto3 client like ours (benchmarks/s3_bench.py).
READ_TIMEOUT = DEFAULT_STALL_SECONDS

_SESSIONS: dict = {}
_SESSIONS_LOCK = threading.Lock()


def _session(profile: str | None):
    """A boto3 Session per profile and AWS environment, reused: a new one re-reads botocore's
    endpoint and service data (about 0.1 s of JSON per client). Keyed by the AWS_* variables too,
    so a changed environment never sees credentials resolved under the old one."""
    import boto3

    key = (profile, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    session = _SESSIONS.get(key)
    if session is None:
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
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
    """An S3 client. Credentials come only from boto3's own chain (environment, ~/.aws, profile,
    IMDS). Raises botocore's errors, and ValueError for an invalid endpoint_url or region."""
    with _SESSIONS_LOCK:  # a boto3 Session is not safe to create clients from concurrently
        session = _session(profile)
        return session.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
