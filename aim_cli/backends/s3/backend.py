"""An S3 bucket (or S3-compatible server) under a key prefix, on botocore: ``S3Backend``.

Importing this module must stay cheap: botocore (~150 ms) is imported by the constructor, so that
``aim_cli --help`` and local-only commands never pay for it.

Atomicity comes from S3 itself: a PUT is all-or-nothing and read-after-write consistent, and
``put_if_absent`` is a conditional PUT (``If-None-Match: *``) that S3 resolves atomically.

Every request that can stall goes through the runner (``resilience.RequestRunner``): retried when
its connection breaks, and hedged when it straggles unless it must not be sent twice (the
``resilience`` module says how and why); only deletes are left to botocore's own retries. Every call to S3
goes through ``errors.storage_error_from``, which turns botocore's exceptions into a one-line
``StorageError`` naming the location and the next step; no botocore traceback escapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import partial

from aim_cli.backends.base import Bytes, ObjectInfo
from aim_cli.backends.s3.access import AccessChecked, read, write
from aim_cli.backends.s3.client import client_config, import_botocore, new_client
from aim_cli.backends.s3.concurrency import Concurrency, TransferGate
from aim_cli.backends.s3.copies import Attempt
from aim_cli.backends.s3.errors import (
    NOT_FOUND_CODES,
    THROTTLING_CODES,
    delete_failure,
    error_code,
    http_status,
    storage_error_from,
)
from aim_cli.backends.s3.resilience import (
    Failures,
    RequestRunner,
    Retryable,
    TransferStats,
    first_byte_seconds_from_env,
    stall_seconds_from_env,
)
from aim_cli.errors import ConfigError, KeyNotFoundError, ObjectTooLargeError, StorageError

#: Bodies are read in pieces of at most this size: memory stays bounded by max_size whatever the
#: server claims, a request whose hedge won stops between pieces, and each piece is progress (a
#: body that stops moving mid-way gets a hedge).
PIECE = 256 * 1024
#: DeleteObjects accepts at most 1000 keys per request.
DELETE_BATCH = 1000


def _as_bytes(data: Bytes) -> bytes:
    # botocore's parameter validation accepts bytes and bytearray but not memoryview; a copy of
    # one chunk (a few MiB) is cheap next to sending it.
    return data if isinstance(data, bytes) else bytes(data)


class S3Backend(AccessChecked):
    """Objects ``<prefix>/<key>`` in one bucket. ``location`` is ``s3://bucket/prefix``.

    Thread-safe: one botocore client is shared by every worker thread, with a connection pool of at
    least ``max_connections`` (plus room for hedges) so that ``--jobs`` parallel transfers never
    wait for a connection. Of these, ``gate`` lets as many GETs and PUTs run at once as the link
    rewards (concurrency.py): ``max_connections`` is their ceiling. ``stall_seconds`` is the
    stall deadline (default: from STALL_ENV),
    ``first_byte_seconds`` the first-byte bound (default: from FIRST_BYTE_ENV).
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
        first_byte_seconds: float | None = None,
    ):
        self.stall_seconds = stall_seconds_from_env() if stall_seconds is None else stall_seconds
        first_byte = first_byte_seconds_from_env() if first_byte_seconds is None else first_byte_seconds
        import_botocore()
        failures = Failures.load()

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.profile = profile
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._endpoint = endpoint_url
        self._key_base = f"{self.prefix}/" if self.prefix else ""

        self._errors = failures.errors
        self._broken_body = failures.broken_body
        self._read_timeouts = failures.read_timeouts
        self._runner = RequestRunner(
            self.location, self.stall_seconds, max_connections, failures, self._error, first_byte_seconds=first_byte
        )

        config = client_config(
            read_timeout=self.stall_seconds,
            max_pool_connections=max(max_connections + self._runner.extra_connections, 10),
            addressing_style=addressing_style,
        )
        try:
            self._client = new_client(profile, region, endpoint_url, config)
        except self._errors as e:
            raise self._error(e, "connecting") from None
        except ValueError as e:  # botocore: invalid endpoint_url or region
            raise ConfigError(
                f"invalid S3 settings for {self.location}: {e}",
                "fix endpoint_url/region for this repository in model_repos.yaml",
            ) from None
        if self._endpoint is None:
            self._endpoint = self._client.meta.endpoint_url
        self.gate = TransferGate(Concurrency(max_connections))
        self._client.meta.events.register("before-send.s3", self._runner.refuse_cancelled)
        self._client.meta.events.register("needs-retry.s3", self._runner.notice_stall)
        self._client.meta.events.register("needs-retry.s3", self._notice_trouble)

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
        return self._runner.stats

    # -- helpers -------------------------------------------------------------------------------
    def _notice_trouble(self, response=None, caught_exception=None, **kwargs) -> None:
        """botocore's needs-retry hook, on every answer: tell the gate of throttling (503
        SlowDown and kin, 429) and of connections that broke, or stayed silent until the stall
        deadline, before the answer (concurrency.py says why these are congestion). Not in a copy
        given up already: a loser's late deadline says nothing of the link now."""
        if self._runner.abandoned_here():
            return
        if isinstance(caught_exception, self._errors + self._broken_body):
            self.gate.troubled()
        elif response is not None and (
            response[0].status_code in (429, 503)
            or (response[1] or {}).get("Error", {}).get("Code") in THROTTLING_CODES
        ):
            self.gate.throttled()

    def _transfer(self, size: int, action: str, request, hedged: str):
        """A GET or PUT of data, run when the gate admits it; a GET counts what it read, not its
        bound. A request whose hedges straggled too (resilience.py's HEDGES_OF_CONGESTION) is
        trouble for the gate; one a hedge fixed is not: that was one connection's fault."""
        with self.gate.admit(size) as admitted:
            result = self._runner.run(action, request, hedged=hedged, size=size, congested=self.gate.troubled)
            admitted.moved = len(result) if isinstance(result, bytes) else size
            return result

    def _key(self, key: str) -> str:
        # The same rule as the local backend, so a key valid on one is valid on the other.
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self._key_base + key

    def _error(self, exc: BaseException, action: str) -> StorageError:
        if isinstance(exc, Retryable):
            exc = exc.cause
        return storage_error_from(
            exc, action, location=self.location, endpoint=self._endpoint, bucket=self.bucket, profile=self.profile
        )

    def _read_body(self, key: str, response: dict, max_size: int | None, attempt: Attempt) -> bytes:
        """The body of a GET, read in pieces: never more than ``max_size + 1`` bytes, whatever
        Content-Length claims (or whether it is there at all). Pieces are what the socket has
        (urllib3's ``read1``, up to PIECE): each one is progress, seen as soon as bytes arrive, so
        a slow body that keeps moving is told apart from one that stopped (resilience.py)."""
        body = response["Body"]
        read = getattr(getattr(body, "_raw_stream", None), "read1", None) or body.read
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
                piece = read(PIECE if limit is None else min(PIECE, limit - got))
                if not piece:
                    if length is not None and got != int(length):  # urllib3 checks it too
                        raise ConnectionError(f"body cut after {got} of {length} bytes")
                    break
                pieces.append(piece)
                got += len(piece)
                attempt.progress(got)  # a body that stops moving gets a hedge (resilience.py)
                if limit is not None and got >= limit:
                    raise ObjectTooLargeError(key, limit - 1)
            attempt.size = got
            return b"".join(pieces)
        except self._broken_body as e:
            attempt.check()  # shut down by a winning twin: not a failure of the link
            if isinstance(e, self._read_timeouts):
                self._runner.stalled(f"reading {key}")
            self.gate.troubled()  # a broken connection, or the stall deadline: congestion
            raise Retryable(e) from None  # botocore never retries a body read: we do
        finally:
            body.close()  # after a complete read the connection is back in the pool already

    # -- the Backend protocol ------------------------------------------------------------------
    @read
    def get(self, key: str, max_size: int | None = None) -> bytes:
        full = self._key(key)

        def request(attempt: Attempt) -> bytes:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full)
            except self._errors as e:
                # NoSuchBucket is a StorageError, not a missing key: only NoSuchKey means "absent".
                if error_code(e) in NOT_FOUND_CODES:
                    raise KeyNotFoundError(key) from None
                raise
            return self._read_body(key, response, max_size, attempt)

        if max_size is None:  # metadata of unknown size: small, and not what the gate paces
            return self._runner.run(f"reading {key}", request, hedged="GET")
        return self._transfer(max_size, f"reading {key}", request, "GET")

    def get_once(self, key: str, max_size: int | None = None) -> bytes:
        return self.get(key, max_size)  # an S3 read passes through no cache of ours

    @read
    def get_prefix(self, key: str, n: int) -> bytes:
        full = self._key(key)

        def request(attempt: Attempt) -> bytes:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=full, Range=f"bytes=0-{max(n, 1) - 1}")
            except self._errors as e:
                if error_code(e) in NOT_FOUND_CODES:
                    raise KeyNotFoundError(key) from None
                if http_status(e) == 416:  # an empty object has no byte 0
                    return b""
                raise
            return self._read_body(key, response, max(n, 1), attempt)[:n]

        return self._runner.run(f"reading {key}", request, hedged="GET", size=n)

    @write
    def put(self, key: str, data: Bytes, *, hedge: bool = True, durable: bool = False) -> None:  # durable once answered
        full = self._key(key)
        body = _as_bytes(data)

        def request(attempt: Attempt) -> None:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=body)

        if not hedge:  # a lease: never waits behind data transfers
            self._runner.run(f"writing {key}", request, size=len(body))
            return
        self._transfer(len(body), f"writing {key}", request, "PUT")

    @write
    def put_if_absent(self, key: str, data: Bytes) -> bool:
        full = self._key(key)
        body = _as_bytes(data)

        def request(attempt: Attempt) -> bool:
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=body, IfNoneMatch="*")
                return True
            except self._errors as e:
                code, status = error_code(e), http_status(e)
                # If the response to our write was lost, the retry sees 412 for our own object and
                # we return False: the caller reads the object back and compares, so that is safe.
                if code == "PreconditionFailed" or status == 412:
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    # A concurrent write or delete of this key was in flight; S3 asks for a retry,
                    # which then either creates the object or sees the winner's (412).
                    raise Retryable(e) from None
                raise

        # Never hedged: two copies of a conditional write would race each other.
        return self._runner.run(f"creating {key}", request)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @read
    def size(self, key: str) -> int | None:
        # HEAD responses have no body, so a missing bucket also reads as 404 here: the access
        # check's failure comes first (access.py).
        full = self._key(key)

        def request(attempt: Attempt) -> int | None:
            try:
                return int(self._client.head_object(Bucket=self.bucket, Key=full)["ContentLength"])
            except self._errors as e:
                if error_code(e) in NOT_FOUND_CODES:
                    return None
                raise

        return self._runner.run(f"looking up {key}", request, hedged="HEAD")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Page by page (1000 keys each), each page a request of its own that is retried and hedged:
        # a LIST answer that goes silent must not hold a command for the deadline.
        action = f"listing {prefix or 'all keys'}"
        params = {"Bucket": self.bucket, "Prefix": self._key_base + prefix}
        cut = len(self._key_base)
        while True:
            # Only the request is guarded, not the yield: an exception thrown into this generator
            # by its consumer must not be reported as a storage error.
            request = partial(self._runner.run, action, partial(self._list_page, dict(params)), hedged="LIST")
            page = self._after_access(request)  # a read (access.py)
            for obj in page.get("Contents", ()):
                modified = obj.get("LastModified")  # a datetime (botocore parses it); some servers omit it
                mtime = modified.timestamp() if modified is not None else None
                yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]), mtime)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    def _list_page(self, params: dict, _attempt: Attempt) -> dict:
        return self._client.list_objects_v2(**params)

    @write
    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as e:
            if error_code(e) in NOT_FOUND_CODES:  # S3 answers 204, but some servers 404
                return
            raise self._error(e, f"deleting {key}") from None

    @write
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
        errors = [err for err in response.get("Errors", ()) if err.get("Code") not in NOT_FOUND_CODES]
        if errors:
            raise delete_failure(errors, len(objects), self.location, len(self._key_base))

    def sync(self) -> None:
        """Nothing to do: S3 has made an object durable when its PUT returns."""

    def clean_incomplete(self, older_than: float, dirs: Sequence[str] = ()) -> tuple[int, int]:
        """Nothing to do: a single PUT is never visible in part and leaves nothing behind."""
        return 0, 0

    def check_access(self) -> None:
        # One-key listing rather than HeadBucket: it needs only s3:ListBucket on our prefix (a
        # policy restricted with an s3:prefix condition denies HeadBucket), and its error responses
        # carry a code (NoSuchBucket, InvalidAccessKeyId ...) where HEAD's have no body. The first
        # request of most commands, with no pace yet: hedged after the first-byte bound.
        params = {"Bucket": self.bucket, "Prefix": self._key_base, "MaxKeys": 1}
        self._runner.run("checking access", partial(self._list_page, params), hedged="LIST")

    def close(self) -> None:
        """Close the client's pooled connections; requests still racing are not waited for."""
        self._runner.close()
        self._client.close()

    @read
    def find_in_parents(self, key: str) -> str | None:
        """The nearest parent prefix (up to the bucket) holding ``key``: one HEAD per level. A
        level these credentials may not read (a prefix-scoped policy) counts as not holding it."""
        parts = self.prefix.split("/") if self.prefix else []
        for n in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:n])
            action = f"looking for {key} above {self.location}"
            if self._runner.run(action, partial(self._holds, f"{base}/{key}" if base else key), hedged="HEAD"):
                return f"s3://{self.bucket}/{base}" if base else f"s3://{self.bucket}"
        return None

    def _holds(self, full_key: str, _attempt: Attempt) -> bool:
        """One HEAD of a key outside our prefix: False when absent or not ours to read (403)."""
        try:
            self._client.head_object(Bucket=self.bucket, Key=full_key)
        except self._errors as e:
            if error_code(e) in NOT_FOUND_CODES or http_status(e) == 403:
                return False
            raise
        return True
