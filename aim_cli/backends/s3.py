"""An S3 bucket (or S3-compatible server) under a key prefix, on boto3.

Importing this module must stay cheap: boto3 and botocore (~190 ms) are imported by the
constructor, so that ``aim_cli --help`` and local-only commands never pay for them.

Atomicity comes from S3 itself: a PUT is all-or-nothing and read-after-write consistent, and
``put_if_absent`` is a conditional PUT (``If-None-Match: *``) that S3 resolves atomically.

Retries. botocore retries every request ("standard" mode) when the connection fails or the server
answers 5xx, but only until the response headers arrive: a connection that breaks while a GET's body
is being read surfaces as an exception from ``Body.read()`` and is never retried by botocore. So
``get`` retries the whole request itself, and ``put``/``put_if_absent`` likewise retry a broken
connection that is still failing after botocore's own attempts (e.g. once its retry quota is spent).
Connection *establishment* failures (refused, connect timeout) are not retried a second time here:
botocore already did, and an unreachable endpoint must be reported within seconds, not minutes.

Every call to S3 goes through ``storage_error_from``, which turns botocore's exceptions into a
one-line ``StorageError`` naming the location and the next step; no botocore traceback escapes.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from aim_cli.backends.base import Bytes, ObjectInfo
from aim_cli.errors import ConfigError, KeyNotFoundError, ObjectTooLargeError, StorageError

log = logging.getLogger(__name__)

#: botocore's attempts per request (standard mode; its backoff starts at 50 ms). With
#: CONNECT_TIMEOUT this bounds how long an unreachable endpoint takes to report: 5 x 5 s < 30 s.
BOTOCORE_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
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


class S3Backend:
    """Objects ``<prefix>/<key>`` in one bucket. ``location`` is ``s3://bucket/prefix``.

    Thread-safe: one boto3 client is shared by every worker thread, with a connection pool of at
    least ``max_connections`` so that ``--jobs`` parallel transfers never wait for a connection.
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
    ):
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
        )
        # Reading a GET's body: botocore never retried it, so a read timeout is worth one too.
        self._broken_body = (*self._broken, bx.ReadTimeoutError)

        config = Config(
            retries={"mode": "standard", "max_attempts": BOTOCORE_MAX_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=max(max_connections, 10),
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

    # -- helpers -------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        # The same rule as the local backend, so a key valid on one is valid on the other.
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self._key_base + key

    def _error(self, exc: BaseException, action: str) -> StorageError:
        return storage_error_from(
            exc, action, location=self.location, endpoint=self._endpoint, bucket=self.bucket, profile=self.profile
        )

    def _retry_or_raise(self, exc: BaseException, attempt: int, action: str) -> None:
        """Sleep before the next attempt, or raise the mapped error after the last one."""
        if attempt >= ATTEMPTS:
            raise self._error(exc, action) from None
        delay = _backoff(attempt)
        log.debug(
            "%s in %s failed (%r); retry %d/%d in %.2fs", action, self.location, exc, attempt, ATTEMPTS - 1, delay
        )
        time.sleep(delay)

    # -- the Backend protocol ------------------------------------------------------------------
    def get(self, key: str, max_size: int | None = None) -> bytes:
        full = self._key(key)
        action = f"reading {key}"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full)
            except self._broken as e:
                self._retry_or_raise(e, attempt, action)
                continue
            except self._errors as e:
                # NoSuchBucket is a StorageError, not a missing key: only NoSuchKey means "absent".
                if _error_code(e) in _NOT_FOUND_CODES:
                    raise KeyNotFoundError(key) from None
                raise self._error(e, action) from None
            body = response["Body"]
            if max_size is not None and int(response.get("ContentLength", 0)) > max_size:
                body.close()  # refused unread: a hostile object must not fill our memory
                raise ObjectTooLargeError(key, max_size)
            try:
                # read() checks the length against Content-Length (IncompleteReadError if short).
                return body.read()
            except self._broken_body as e:
                self._retry_or_raise(e, attempt, action)
            finally:
                body.close()
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def put(self, key: str, data: Bytes) -> None:
        full = self._key(key)
        body = _as_bytes(data)
        action = f"writing {key}"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=body)
                return
            except self._broken as e:
                self._retry_or_raise(e, attempt, action)
            except self._errors as e:
                raise self._error(e, action) from None

    def put_if_absent(self, key: str, data: Bytes) -> bool:
        full = self._key(key)
        body = _as_bytes(data)
        action = f"creating {key}"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=body, IfNoneMatch="*")
                return True
            except self._broken as e:
                # If the response to our write was lost, the retry sees 412 for our own object and
                # we return False: the caller reads the object back and compares, so that is safe.
                self._retry_or_raise(e, attempt, action)
            except self._errors as e:
                code, status = _error_code(e), _http_status(e)
                if code == "PreconditionFailed" or status == 412:
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    # A concurrent write or delete of this key was in flight; S3 asks for a retry,
                    # which then either creates the object or sees the winner's (412).
                    self._retry_or_raise(e, attempt, action)
                    continue
                raise self._error(e, action) from None
        raise AssertionError("unreachable")

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
        """Close the client's pooled connections."""
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
