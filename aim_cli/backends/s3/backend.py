"""An S3 bucket (or S3-compatible server) under a key prefix, on boto3.

Importing this module must stay cheap: boto3 and botocore (~190 ms) are imported by the
constructor, so that ``aim_cli --help`` and local-only commands never pay for them.

Atomicity comes from S3 itself: a PUT is all-or-nothing and read-after-write consistent, and
``put_if_absent`` is a conditional PUT (``If-None-Match: *``) that S3 resolves atomically.

Retries. botocore retries every request ("standard" mode) when the connection fails or the server
answers 5xx, but only until the response headers arrive: a connection that breaks while a GET's body
is being read surfaces as an exception from ``Body.read()`` and is never retried by botocore. So
``get``, ``put`` and ``put_if_absent`` go through one retry helper (``_retrying``) that repeats the
whole request when its connection broke, with jittered backoff. Connection *establishment* failures
(refused, connect timeout) and headers that never came (botocore already retried those) are not
retried a second time: an unreachable endpoint must be reported within seconds, not minutes.

Stalls. A hung proxy or load balancer can keep a connection open and silent mid-body; botocore's
default 60 s read timeout then holds a whole pull. Two layers deal with it:
- Silence: the socket read timeout is the stall deadline (``AIM_S3_STALL_SECONDS``, default 5 s).
  Progress means bytes arriving, so a slow link that keeps moving is never cut, however long one
  object takes; a connection silent past the deadline is closed (never returned to the pool) and
  the request retried on a fresh one. The deadline is a floor and not a multiple of the observed
  throughput because a moving TCP stream delivers a segment every few milliseconds at any useful
  speed: seconds of silence mean a dead peer, whatever the link's throughput.
- Stragglers: ``get`` and ``put`` run as hedged requests. When one has taken much longer than
  recent requests of its size (``HEDGE_FACTOR`` x the time the throughput observed so far by this
  backend predicts, and at least a tenth of the stall deadline), an identical request starts on
  another connection (and a third if that one straggles too); the first copy to complete wins and
  the others are closed. So one stalled request costs a fraction of a second instead of the stall
  deadline. At most ``max_connections // 4 + 1`` requests have hedges at once (see ``_Race``), so
  a slow endpoint never sees its load doubled.
Only requests that are safe to repeat are hedged: a GET, and a plain PUT (idempotent: the same bytes
under the same key). ``put_if_absent`` (a conditional PUT, the commit of a tag or a lock) is never
hedged: it still gets the silence deadline and the retry, whose second answer (412 for our own
object) its callers already handle. A key that must not be written twice concurrently (a lease)
must not go through ``put``. ``stats`` counts what happened (stalls, abandoned requests, hedges).

Every call to S3 goes through ``storage_error_from``, which turns botocore's exceptions into a
one-line ``StorageError`` naming the location and the next step; no botocore traceback escapes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TypeVar

from aim_cli.backends.base import Bytes, ObjectInfo
from aim_cli.errors import ConfigError, KeyNotFoundError, ObjectTooLargeError, StorageError

log = logging.getLogger(__name__)

#: botocore's attempts per request (standard mode; its backoff starts at 50 ms). With
#: CONNECT_TIMEOUT this bounds how long an unreachable endpoint takes to report: 5 x 5 s < 30 s.
BOTOCORE_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 5
#: The stall deadline: seconds of silence after which a connection is abandoned (the socket read
#: timeout). Read from STALL_ENV; tests lower it to keep stalls short.
STALL_ENV = "AIM_S3_STALL_SECONDS"
DEFAULT_STALL_SECONDS = 5.0
STALL_SECONDS_RANGE = (0.1, 600.0)
#: Kept for callers that configure a plain boto3 client like ours (benchmarks/s3_bench.py).
READ_TIMEOUT = DEFAULT_STALL_SECONDS
#: A request is a straggler, and gets a hedge, after HEDGE_FACTOR x its expected time, and never
#: before HEDGE_FLOOR_SHARE x the stall deadline (0.5 s by default): below that, latency noise of
#: a busy machine or endpoint would start hedges that only add load.
HEDGE_FACTOR = 4.0
HEDGE_FLOOR_SHARE = 0.1
#: Copies of one request at most (the first and two hedges): with 15% of responses stalling, all
#: three stall for 0.3% of requests, which then wait for the stall deadline.
MAX_COPIES = 3
#: Bodies are read in pieces of this size: memory stays bounded by max_size whatever the server
#: claims, and a request whose hedge won stops between pieces.
PIECE = 256 * 1024
#: Our own attempts around a whole get/put whose connection broke (see the module docstring).
ATTEMPTS = 5
BACKOFF_START = 0.1
BACKOFF_CAP = 2.0
#: DeleteObjects accepts at most 1000 keys per request.
DELETE_BATCH = 1000

CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, configure ~/.aws/credentials, "
    "or set `profile:` for this repository in model_repos.yaml"
)
# Error codes that mean "these credentials are not valid here" (as opposed to "not allowed").
_BAD_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
_ACCESS_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
_WRONG_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


def _backoff(attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential from BACKOFF_START, with jitter
    so that parallel workers that failed together do not retry together."""
    return min(BACKOFF_CAP, BACKOFF_START * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def stall_seconds_from_env() -> float:
    """The stall deadline from STALL_ENV (default DEFAULT_STALL_SECONDS); ConfigError (exit 7)
    for anything but a number of seconds in STALL_SECONDS_RANGE."""
    raw = os.environ.get(STALL_ENV, "")
    if not raw.strip():
        return DEFAULT_STALL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    low, high = STALL_SECONDS_RANGE
    if not low <= value <= high:  # also refuses nan and inf
        from aim_cli.util.quoting import quoted

        raise ConfigError(
            f"{STALL_ENV}={quoted(raw, 10)} is not a number of seconds from {low:g} to {high:g}",
            f"unset {STALL_ENV} (default {DEFAULT_STALL_SECONDS:g}) or set it to a number of seconds such as 10",
        )
    return value


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _as_bytes(data: Bytes) -> bytes:
    # botocore's parameter validation accepts bytes and bytearray but not memoryview; a copy of
    # one chunk (a few MiB) is cheap next to sending it.
    return data if isinstance(data, bytes) else bytes(data)


def storage_error_from(
    exc: BaseException,
    action: str,
    *,
    location: str = "S3",
    endpoint: str | None = None,
    bucket: str | None = None,
    profile: str | None = None,
) -> StorageError:
    """Map a botocore exception raised while ``action`` (a phrase such as "reading blobs/ab/..")
    to a one-line StorageError that names the location and says what to do next.

    ``location`` is ``s3://bucket/prefix``; ``endpoint``, ``bucket`` and ``profile`` make the
    message precise when the exception itself does not carry them.
    """
    from botocore import exceptions as bx
    from urllib3.exceptions import HTTPError as Urllib3HTTPError

    if isinstance(exc, StorageError):
        return exc
    where = f"while {action} in {location}"
    # The configured endpoint, not botocore's request URL (which carries the bucket and query).
    endpoint = endpoint or (getattr(exc, "kwargs", None) or {}).get("endpoint_url") or "the S3 endpoint"

    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return StorageError(f"no AWS credentials found {where}", CREDENTIALS_HINT)
    if isinstance(exc, bx.CredentialRetrievalError):
        return StorageError(f"could not load AWS credentials {where}: {exc}", CREDENTIALS_HINT)
    if isinstance(exc, bx.ProfileNotFound):
        name = exc.kwargs.get("profile") or profile
        return StorageError(
            f"AWS profile {name!r} not found (for {location})",
            "define it in ~/.aws/config or ~/.aws/credentials, or fix `profile:` in model_repos.yaml",
        )
    if isinstance(exc, bx.SSLError):
        return StorageError(
            f"TLS connection to S3 endpoint {endpoint} failed {where}",
            "check endpoint_url in model_repos.yaml (http:// vs https://) and the server's certificate "
            "(AWS_CA_BUNDLE)",
        )
    # bx.ConnectionError covers EndpointConnectionError, ConnectTimeoutError and ProxyConnectionError.
    if isinstance(exc, (bx.ConnectionError, bx.ConnectionClosedError)):
        return StorageError(
            f"cannot reach S3 endpoint {endpoint} {where}",
            "check your network, and endpoint_url/region for this repository in model_repos.yaml",
        )
    if isinstance(exc, bx.ReadTimeoutError):
        return StorageError(
            f"S3 endpoint {endpoint} stopped answering {where}",
            "check your network and retry; a lower --jobs may help on a slow link",
        )
    if isinstance(exc, (bx.ResponseStreamingError, bx.IncompleteReadError, Urllib3HTTPError, ConnectionError)):
        return StorageError(
            f"the connection to S3 endpoint {endpoint} kept breaking {where}",
            "check your network and retry; a lower --jobs may help on a flaky link",
        )
    if isinstance(exc, bx.ClientError):
        code = _error_code(exc)
        status = _http_status(exc)
        message = exc.response.get("Error", {}).get("Message") or ""
        if code in _BAD_CREDENTIAL_CODES:
            return StorageError(
                f"the AWS credentials were rejected ({code}) {where}",
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile's keys "
                "(and the system clock: signatures expire)",
            )
        if code == "NoSuchBucket" or (exc.operation_name == "HeadBucket" and code in _NOT_FOUND_CODES):
            name = exc.response.get("Error", {}).get("BucketName") or bucket
            return StorageError(
                f"bucket {name!r} does not exist ({location})",
                "create the bucket, or fix `path:` (and endpoint_url) for this repository in model_repos.yaml",
            )
        if exc.operation_name in ("HeadObject", "HeadBucket") and code in ("403", "Forbidden", "400", "BadRequest"):
            # A HEAD response has no body: a refused policy, rejected keys and an expired session
            # token all look alike here.
            return StorageError(
                f"access denied or credentials rejected {where}",
                "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile, an expired "
                "session token) and that their IAM or bucket policy lets them read and write this bucket and prefix",
            )
        if code in _ACCESS_DENIED_CODES or status == 403:
            return StorageError(
                f"access denied {where}",
                "check that these credentials may list, read, write and delete objects in this "
                "bucket and prefix (IAM or bucket policy)",
            )
        if code in _WRONG_REGION_CODES or status == 301:
            return StorageError(
                f"wrong region for the bucket ({code or status}) {where}",
                "set `region:` for this repository in model_repos.yaml to the bucket's region",
            )
        if code in ("SlowDown", "503") or status == 503:
            return StorageError(f"S3 is throttling requests (SlowDown) {where}", "retry later, or lower --jobs")
        detail = f": {message}" if message else ""
        return StorageError(
            f"S3 error {code or status} {where}{detail}",
            "retry; if it persists, check the bucket's configuration",
        )
    if isinstance(exc, bx.BotoCoreError):
        return StorageError(f"S3 request failed {where}: {exc}", "check the repository's configuration and retry")
    return StorageError(f"S3 request failed {where}: {exc!r}", "retry; if it persists, please report it")


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


T = TypeVar("T")


@dataclass(frozen=True)
class TransferStats:
    """What the stall handling did, since the backend was made (``S3Backend.stats``)."""

    #: requests that went silent past the stall deadline: their connection was closed and the
    #: request retried (botocore's retries of headers that never came included)
    stalls: int = 0
    #: requests given up before they finished: stalled ones, and those a hedge beat
    abandoned: int = 0
    #: second requests started for stragglers, and how many of them finished first
    hedges: int = 0
    hedges_won: int = 0


class _Cancelled(Exception):
    """Raised in a request whose twin already completed: nobody waits for its result."""


class _Retryable(Exception):
    """A failure that deserves a whole new request (a body cut or silent mid-read, a 409 from a
    concurrent conditional write): carries botocore's exception for the final message."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


class _Pace:
    """How long requests of one kind (GET or PUT) take here, recently: an exponentially weighted
    mean of seconds per byte. A request shorter than PACE_MIN_BYTES counts as that size, because
    its time is mostly latency; so the expected time of any size is never below one such request.
    """

    PACE_MIN_BYTES = 256 * 1024
    WEIGHT = 0.25  # of the newest observation

    def __init__(self) -> None:
        self._seconds_per_byte: float | None = None
        self._lock = threading.Lock()

    def observe(self, size: int, seconds: float) -> None:
        rate = seconds / max(size, self.PACE_MIN_BYTES)
        with self._lock:
            old = self._seconds_per_byte
            self._seconds_per_byte = rate if old is None else old + self.WEIGHT * (rate - old)

    def expected(self, size: int | None) -> float | None:
        """Seconds a request of ``size`` bytes should take, or None before any observation."""
        with self._lock:
            per_byte = self._seconds_per_byte
        return None if per_byte is None else per_byte * max(size or 0, self.PACE_MIN_BYTES)


class _Attempt:
    """One HTTP request of a get or put, which a twin may race. ``cancel`` stops it: a GET whose
    body is being read has its socket shut down (the blocked read returns at once, and the
    connection is closed rather than pooled); a request not yet sent is refused by the
    ``before-send`` hook, which also stops botocore from retrying a cancelled request."""

    def __init__(self, size: int | None):
        self.size = size  # bytes moved: the body's, once known
        self.cancelled = False
        self._body = None
        self._lock = threading.Lock()

    def check(self) -> None:
        if self.cancelled:
            raise _Cancelled()

    def reading(self, body) -> None:
        """Record the body being read, so that ``cancel`` can interrupt the read."""
        with self._lock:
            self.check()
            self._body = body

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            body, self._body = self._body, None
        if body is not None:
            _shut_down(body)


def _shut_down(body) -> None:
    """Unblock a read of ``body`` running in another thread (urllib3's documented way); the reader
    then fails, and closes the connection."""
    raw = getattr(body, "_raw_stream", None)  # botocore's StreamingBody wraps urllib3's response
    try:
        raw.shutdown()
    except (AttributeError, ValueError, RuntimeError, OSError):
        pass  # already released or closed: there is no read left to interrupt


class _Race:
    """The copies of one hedged request. A race takes one hedge slot for all its hedges, and gives
    it back only when every copy has ended (a cancelled PUT may run on until its answer or its
    deadline): at most ``slots`` requests have hedges at once, each at most MAX_COPIES - 1, so a
    slow endpoint never carries more than that many extra requests. One slot per race rather than
    per hedge lets a request whose hedge stalled too start its third copy at once: when stalls
    come in bursts, slots taken per hedge ran out and left requests waiting for the deadline."""

    def __init__(self, slots: threading.BoundedSemaphore):
        self.started = 0
        self._slots = slots
        self._held = 0
        self._running = 0
        self._closed = False
        self._lock = threading.Lock()

    def take_slot(self) -> bool:
        """True if this race holds a hedge slot (taking one now if there is one free)."""
        with self._lock:
            if self._held:
                return True
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self._held += 1
        return True

    def add(self, copies: dict, future: Future, attempt: _Attempt) -> None:
        copies[future] = attempt
        with self._lock:
            self.started += 1
            self._running += 1
        future.add_done_callback(self._ended)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._release_if_over()

    def _ended(self, _future: Future) -> None:
        with self._lock:
            self._running -= 1
        self._release_if_over()

    def _release_if_over(self) -> None:
        with self._lock:
            held = self._held if self._closed and self._running == 0 else 0
            self._held -= held
        for _ in range(held):
            self._slots.release()


#: The attempt the current thread runs, for the before-send hook.
_CURRENT = threading.local()


class S3Backend:
    """Objects ``<prefix>/<key>`` in one bucket. ``location`` is ``s3://bucket/prefix``.

    Thread-safe: one boto3 client is shared by every worker thread, with a connection pool of at
    least ``max_connections`` (plus room for hedges) so that ``--jobs`` parallel transfers never
    wait for a connection. ``stall_seconds`` is the stall deadline (default: from STALL_ENV).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        addressing_style: str | None = None,
        max_connections: int = 16,
        stall_seconds: float | None = None,
    ):
        self.stall_seconds = stall_seconds_from_env() if stall_seconds is None else stall_seconds

        from botocore import exceptions as bx
        from botocore.config import Config
        from urllib3.exceptions import HTTPError as Urllib3HTTPError

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.profile = profile
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._endpoint = endpoint_url
        self._key_base = f"{self.prefix}/" if self.prefix else ""

        # Every botocore failure we map; raised by client calls.
        self._errors = (bx.BotoCoreError, bx.ClientError)
        # A connection that broke after it was established: worth a whole new attempt. Connect
        # failures (EndpointConnectionError, ConnectTimeoutError) are deliberately absent.
        self._broken = (
            bx.ConnectionClosedError,
            bx.ResponseStreamingError,
            bx.IncompleteReadError,
            Urllib3HTTPError,
            ConnectionError,  # the builtin: ConnectionResetError and friends
            _Retryable,
        )
        self._read_timeout = bx.ReadTimeoutError
        # Reading a GET's body: botocore never retried it, so a read timeout is worth one too.
        self._broken_body = (*self._broken, bx.ReadTimeoutError)

        self._hedge_floor = HEDGE_FLOOR_SHARE * self.stall_seconds
        hedge_limit = max_connections // 4 + 1
        self._hedge_slots = threading.BoundedSemaphore(hedge_limit)
        extra = (MAX_COPIES - 1) * hedge_limit  # copies beyond one per caller, at most
        self._paces = {"GET": _Pace(), "PUT": _Pace()}
        self._stats = TransferStats()
        self._stats_lock = threading.Lock()
        # Hedged requests run here, so that the caller can return with the first copy to complete
        # while the other is being stopped. Threads start only when needed.
        self._pool = ThreadPoolExecutor(2 * max_connections + extra, thread_name_prefix="aim-s3")

        config = Config(
            retries={"mode": "standard", "max_attempts": BOTOCORE_MAX_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=self.stall_seconds,
            max_pool_connections=max(max_connections + extra, 10),
            # S3-compatible servers (MinIO, Ceph, R2 ...) reject or mishandle the CRC checksums
            # that botocore >= 1.36 adds by default; integrity is checked above by BLAKE3 anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": addressing_style} if addressing_style else None,
        )
        try:
            # Credentials come only from boto3's own chain (environment, ~/.aws, profile, IMDS).
            with _SESSIONS_LOCK:  # a boto3 Session is not safe to create clients from concurrently
                session = _session(profile)
                self._client = session.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
        except self._errors as e:
            raise self._error(e, "connecting") from None
        except ValueError as e:  # botocore: invalid endpoint_url or region
            raise ConfigError(
                f"invalid S3 settings for {self.location}: {e}",
                "fix endpoint_url/region for this repository in model_repos.yaml",
            ) from None
        if self._endpoint is None:
            self._endpoint = self._client.meta.endpoint_url
        self._client.meta.events.register("before-send.s3", self._refuse_cancelled)
        self._client.meta.events.register("needs-retry.s3", self._notice_stall)

    @classmethod
    def from_config(cls, repo, max_connections: int = 16) -> S3Backend:
        """The backend for a ``config.RepoConfig`` of type s3."""
        return cls(
            repo.bucket,
            repo.prefix,
            region=repo.region,
            endpoint_url=repo.endpoint_url,
            profile=repo.profile,
            addressing_style=repo.addressing_style,
            max_connections=max_connections,
        )

    @property
    def stats(self) -> TransferStats:
        """A snapshot of the stall and hedge counters."""
        with self._stats_lock:
            return self._stats

    # -- helpers -------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        # The same rule as the local backend, so a key valid on one is valid on the other.
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self._key_base + key

    def _error(self, exc: BaseException, action: str) -> StorageError:
        if isinstance(exc, _Retryable):
            exc = exc.cause
        return storage_error_from(
            exc, action, location=self.location, endpoint=self._endpoint, bucket=self.bucket, profile=self.profile
        )

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            self._stats = replace(self._stats, **{k: getattr(self._stats, k) + n for k, n in increments.items()})

    def _retry_or_raise(self, exc: BaseException, attempt: int, action: str) -> None:
        """Sleep before the next attempt, or raise the mapped error after the last one."""
        if attempt >= ATTEMPTS:
            raise self._error(exc, action) from None
        if isinstance(exc, _Retryable):
            exc = exc.cause
        delay = _backoff(attempt)
        log.debug(
            "%s in %s failed (%r); retry %d/%d in %.2fs", action, self.location, exc, attempt, ATTEMPTS - 1, delay
        )
        time.sleep(delay)

    def _retrying(self, action: str, request: Callable[[_Attempt], T], *, hedged: str | None = None,
                  size: int | None = None) -> T:
        """``request`` (one HTTP request; ``size`` is its body's size when known), repeated while
        its connection breaks, at most ATTEMPTS times; botocore's errors become StorageError.
        ``hedged`` ("GET" or "PUT") races stragglers against a twin: only for requests that are
        safe to repeat (see the module docstring)."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if hedged is None:
                    return request(_Attempt(size))
                return self._hedged(request, self._paces[hedged], size, action)
            except self._broken as e:
                self._retry_or_raise(e, attempt, action)
            except self._errors as e:
                raise self._error(e, action) from None
        raise AssertionError("unreachable")  # the last attempt returns or raises

    # -- stalls and hedges ---------------------------------------------------------------------
    def _refuse_cancelled(self, **kwargs) -> None:
        """botocore's before-send hook: a request whose twin won is not sent (nor re-sent)."""
        attempt = getattr(_CURRENT, "attempt", None)
        if attempt is not None:
            attempt.check()

    def _notice_stall(self, caught_exception=None, **kwargs) -> None:
        """botocore's needs-retry hook: count the read timeouts that botocore itself retries
        (headers that never came); the retry decision stays botocore's."""
        if isinstance(caught_exception, self._read_timeout):
            self._stalled(f"{getattr(kwargs.get('operation'), 'name', 'a')} request")

    def _stalled(self, what: str) -> None:
        self._count(stalls=1, abandoned=1)
        log.debug("%s in %s went silent for %gs: abandoned", what, self.location, self.stall_seconds)

    def _run(self, request: Callable[[_Attempt], T], attempt: _Attempt, pace: _Pace) -> T:
        """One copy of a hedged request, on a pool thread; its time feeds ``pace``."""
        _CURRENT.attempt = attempt
        started = time.monotonic()
        try:
            result = request(attempt)
        finally:
            _CURRENT.attempt = None
        if not attempt.cancelled:
            pace.observe(attempt.size or 0, time.monotonic() - started)
        return result

    def _until_straggler(self, pace: _Pace, size: int | None, started: float) -> float | None:
        """Seconds left before a request started at ``started`` becomes a straggler (<= 0: it is
        one); None while this backend has not seen a request complete (nothing to compare with)."""
        expected = pace.expected(size)
        if expected is None:
            return None
        return started + max(self._hedge_floor, HEDGE_FACTOR * expected) - time.monotonic()

    def _hedged(self, request: Callable[[_Attempt], T], pace: _Pace, size: int | None, action: str) -> T:
        """Run ``request``; each time its newest copy straggles and a hedge slot is free, start
        another copy on a fresh connection (MAX_COPIES in all: a hedge may stall too). The first
        copy to succeed wins and the others are cancelled. A copy whose connection broke or went
        silent waits for the others; any other failure (not found, too large) is final at once."""
        race = _Race(self._hedge_slots)
        copies: dict[Future, _Attempt] = {}
        first = _Attempt(size)
        newest = started = time.monotonic()
        race.add(copies, self._pool.submit(self._run, request, first, pace), first)
        try:
            while copies:
                timeout = None
                if race.started < MAX_COPIES:
                    left = self._until_straggler(pace, first.size, newest)
                    if left is not None and left <= 0 and race.take_slot():
                        hedge = _Attempt(first.size)
                        race.add(copies, self._pool.submit(self._run, request, hedge, pace), hedge)
                        newest = time.monotonic()
                        self._count(hedges=1)
                        log.debug("%s in %s: no answer after %.2fs: hedged (copy %d)", action, self.location,
                                  newest - started, race.started)
                        left = self._until_straggler(pace, first.size, newest)
                    # Not a straggler yet, or no slot free: look again then, or after a hedge floor.
                    timeout = left if left is not None and left > 0 else self._hedge_floor
                done, _ = wait(copies, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    attempt = copies.pop(future)
                    error = future.exception()
                    if error is None:
                        if attempt is not first:
                            self._count(hedges_won=1)
                        return future.result()
                    if not copies or not isinstance(error, self._broken_body):
                        raise error
                    # Its connection broke or went silent: another copy may still complete.
            raise AssertionError("unreachable")  # the last copy to end returns or raises
        finally:
            for attempt in copies.values():  # the losers, or every copy when we leave on an error
                attempt.cancel()
                self._count(abandoned=1)
            race.close()

    def _read_body(self, key: str, response: dict, max_size: int | None, attempt: _Attempt) -> bytes:
        """The body of a GET, read in pieces: never more than ``max_size + 1`` bytes, whatever
        Content-Length claims (or whether it is there at all)."""
        body = response["Body"]
        try:
            attempt.reading(body)
            length = response.get("ContentLength")
            if max_size is not None and length is not None and int(length) > max_size:
                raise ObjectTooLargeError(key, max_size)  # refused unread
            if length is not None:
                attempt.size = int(length)
            limit = None if max_size is None else max_size + 1
            pieces: list[bytes] = []
            got = 0
            while True:
                attempt.check()
                piece = body.read(PIECE if limit is None else min(PIECE, limit - got))
                if not piece:  # the end; read() has checked the length against Content-Length
                    break
                pieces.append(piece)
                got += len(piece)
                if limit is not None and got >= limit:
                    raise ObjectTooLargeError(key, max_size)
            attempt.size = got
            return b"".join(pieces)
        except self._broken_body as e:
            attempt.check()  # shut down by a winning twin: not a failure of the link
            if isinstance(e, self._read_timeout):
                self._stalled(f"reading {key}")
            raise _Retryable(e) from None  # botocore never retries a body read: we do
        finally:
            body.close()  # after a complete read the connection is back in the pool already

    # -- the Backend protocol ------------------------------------------------------------------
    def get(self, key: str, max_size: int | None = None) -> bytes:
        full = self._key(key)

        def request(attempt: _Attempt) -> bytes:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full)
            except self._errors as e:
                # NoSuchBucket is a StorageError, not a missing key: only NoSuchKey means "absent".
                if _error_code(e) in _NOT_FOUND_CODES:
                    raise KeyNotFoundError(key) from None
                raise
            return self._read_body(key, response, max_size, attempt)

        return self._retrying(f"reading {key}", request, hedged="GET", size=max_size)

    def put(self, key: str, data: Bytes, *, hedge: bool = True) -> None:
        full = self._key(key)
        body = _as_bytes(data)

        def request(attempt: _Attempt) -> None:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=body)

        self._retrying(f"writing {key}", request, hedged="PUT" if hedge else None, size=len(body))

    def put_if_absent(self, key: str, data: Bytes) -> bool:
        full = self._key(key)
        body = _as_bytes(data)

        def request(attempt: _Attempt) -> bool:
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=body, IfNoneMatch="*")
                return True
            except self._errors as e:
                code, status = _error_code(e), _http_status(e)
                # If the response to our write was lost, the retry sees 412 for our own object and
                # we return False: the caller reads the object back and compares, so that is safe.
                if code == "PreconditionFailed" or status == 412:
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    # A concurrent write or delete of this key was in flight; S3 asks for a retry,
                    # which then either creates the object or sees the winner's (412).
                    raise _Retryable(e) from None
                raise

        # Never hedged: two copies of a conditional write would race each other.
        return self._retrying(f"creating {key}", request)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        # HEAD responses have no body, so a missing bucket also reads as 404 here: callers find a
        # missing bucket earlier, through check_access().
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            if _error_code(e) in _NOT_FOUND_CODES:
                return None
            raise self._error(e, f"looking up {key}") from None
        return int(response["ContentLength"])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")  # 1000 keys per page
        pages = iter(paginator.paginate(Bucket=self.bucket, Prefix=self._key_base + prefix))
        cut = len(self._key_base)
        while True:
            # Only the request is guarded, not the yield: an exception thrown into this generator
            # by its consumer must not be reported as a storage error.
            try:
                page = next(pages)
            except StopIteration:
                return
            except self._errors as e:
                raise self._error(e, f"listing {prefix or 'all keys'}") from None
            for obj in page.get("Contents", ()):
                yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]))

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            if _error_code(e) in _NOT_FOUND_CODES:  # S3 answers 204, but some servers 404
                return
            raise self._error(e, f"deleting {key}") from None

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[dict] = []
        for key in keys:
            batch.append({"Key": self._key(key)})
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, objects: Sequence[dict]) -> None:
        action = f"deleting {len(objects)} objects"
        try:
            response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        except self._errors as e:
            raise self._error(e, action) from None
        # DeleteObjects answers 200 even when some keys failed; the failures are in Errors.
        errors = [err for err in response.get("Errors", ()) if err.get("Code") not in _NOT_FOUND_CODES]
        if errors:
            first = errors[0]
            key = first.get("Key", "")[len(self._key_base) :]
            code = first.get("Code", "")
            hint = (
                "check that these credentials may delete objects in this bucket and prefix"
                if code == "AccessDenied"
                else "retry; the objects that were deleted stay deleted"
            )
            raise StorageError(
                f"could not delete {len(errors)} of {len(objects)} objects in {self.location} "
                f"(first: {key}: {code} {first.get('Message', '')})",
                hint,
            )

    def sync(self) -> None:
        """Nothing to do: S3 has made an object durable when its PUT returns."""

    def clean_incomplete(self, older_than: float, dirs: Sequence[str] = ()) -> tuple[int, int]:
        """Nothing to do: a single PUT is never visible in part and leaves nothing behind."""
        return 0, 0

    def check_access(self) -> None:
        # One-key listing rather than HeadBucket: it needs only s3:ListBucket on our prefix (a
        # policy restricted with an s3:prefix condition denies HeadBucket), and its error responses
        # carry a code (NoSuchBucket, InvalidAccessKeyId ...) where HEAD's have no body.
        try:
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key_base, MaxKeys=1)
        except self._errors as e:
            raise self._error(e, "checking access") from None

    def close(self) -> None:
        """Close the client's pooled connections; requests still racing are not waited for."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def find_in_parents(self, key: str) -> str | None:
        """The nearest parent prefix (up to the bucket) holding ``key``: one HEAD per level. A
        level these credentials may not read (a prefix-scoped policy) counts as not holding it."""
        parts = self.prefix.split("/") if self.prefix else []
        for n in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:n])
            try:
                self._client.head_object(Bucket=self.bucket, Key=f"{base}/{key}" if base else key)
            except self._errors as e:
                if _error_code(e) in _NOT_FOUND_CODES or _http_status(e) == 403:
                    continue
                raise self._error(e, f"looking for {key} above {self.location}") from None
            return f"s3://{self.bucket}/{base}" if base else f"s3://{self.bucket}"
        return None
