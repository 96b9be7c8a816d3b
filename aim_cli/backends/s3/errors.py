"""What an S3 failure means to the user: botocore's and urllib3's exceptions mapped to one-line
``StorageError``s that name the location and the next step, so that no botocore traceback escapes.

botocore and urllib3 are imported when a failure is mapped, never at import time.
"""

from __future__ import annotations

from functools import cache

from aim_cli.errors import StorageError

CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, configure ~/.aws/credentials, "
    "or set `profile:` for this repository in model_repos.yaml"
)
# Error codes that mean "these credentials are not valid here" (as opposed to "not allowed").
BAD_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
ACCESS_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
WRONG_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
#: Answers that ask for less load (botocore retries them; the transfer gate backs off).
THROTTLING_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ("NoSuchKey", "403" ...); "" for anything else."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ClientError's response, if it has one."""
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


@cache
def _failure_table() -> tuple[tuple[tuple[type[BaseException], ...], str, str], ...]:
    """(exception classes, message, hint) for failures other than an S3 error response, tried in
    this order: a class comes before its bases (botocore's SSLError is one of its ConnectionErrors,
    its ReadTimeoutError a urllib3 HTTPError). Messages are formatted with ``where``, ``endpoint``,
    ``exc``, ``location`` and ``profile``."""
    from botocore import exceptions as bx
    from urllib3.exceptions import HTTPError as Urllib3HTTPError

    return (
        ((bx.NoCredentialsError, bx.PartialCredentialsError), "no AWS credentials found {where}", CREDENTIALS_HINT),
        ((bx.CredentialRetrievalError,), "could not load AWS credentials {where}: {exc}", CREDENTIALS_HINT),
        (
            (bx.ProfileNotFound,),
            "AWS profile {profile!r} not found (for {location})",
            "define it in ~/.aws/config or ~/.aws/credentials, or fix `profile:` in model_repos.yaml",
        ),
        (
            (bx.SSLError,),
            "TLS connection to S3 endpoint {endpoint} failed {where}",
            "check endpoint_url in model_repos.yaml (http:// vs https://) and the server's certificate (AWS_CA_BUNDLE)",
        ),
        # bx.ConnectionError covers EndpointConnectionError, ConnectTimeoutError and ProxyConnectionError.
        (
            (bx.ConnectionError, bx.ConnectionClosedError),
            "cannot reach S3 endpoint {endpoint} {where}",
            "check your network, and endpoint_url/region for this repository in model_repos.yaml",
        ),
        (
            (bx.ReadTimeoutError,),
            "S3 endpoint {endpoint} stopped answering {where}",
            "check your network and retry; a lower --jobs may help on a slow link",
        ),
        (
            (bx.ResponseStreamingError, bx.IncompleteReadError, Urllib3HTTPError, ConnectionError),
            "the connection to S3 endpoint {endpoint} kept breaking {where}",
            "check your network and retry; a lower --jobs may help on a flaky link",
        ),
        ((bx.BotoCoreError,), "S3 request failed {where}: {exc}", "check the repository's configuration and retry"),
    )


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
    from botocore.exceptions import ClientError

    if isinstance(exc, StorageError):
        return exc
    where = f"while {action} in {location}"
    kwargs = getattr(exc, "kwargs", None) or {}  # botocore's exceptions carry their details here
    # The configured endpoint, not botocore's request URL (which carries the bucket and query).
    endpoint = endpoint or kwargs.get("endpoint_url") or "the S3 endpoint"

    if isinstance(exc, ClientError):
        return _from_error_response(exc, where, location, bucket)
    for classes, message, hint in _failure_table():
        if isinstance(exc, classes):
            fields = {"where": where, "endpoint": endpoint, "exc": exc, "location": location}
            return StorageError(message.format(**fields, profile=kwargs.get("profile") or profile), hint)
    return StorageError(f"S3 request failed {where}: {exc!r}", "retry; if it persists, please report it")


def _from_error_response(exc, where: str, location: str, bucket: str | None) -> StorageError:
    """The StorageError for an error response of S3 (a botocore ClientError)."""
    code = error_code(exc)
    status = http_status(exc)
    message = exc.response.get("Error", {}).get("Message") or ""
    if code in BAD_CREDENTIAL_CODES:
        return StorageError(
            f"the AWS credentials were rejected ({code}) {where}",
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile's keys "
            "(and the system clock: signatures expire)",
        )
    if code == "NoSuchBucket" or (exc.operation_name == "HeadBucket" and code in NOT_FOUND_CODES):
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
    if code in ACCESS_DENIED_CODES or status == 403:
        return StorageError(
            f"access denied {where}",
            "check that these credentials may list, read, write and delete objects in this "
            "bucket and prefix (IAM or bucket policy)",
        )
    if code in WRONG_REGION_CODES or status == 301:
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


def delete_failure(errors: list[dict], total: int, location: str, key_base: int) -> StorageError:
    """The StorageError for a DeleteObjects answer whose ``Errors`` (not-found codes left out) are
    ``errors``, of ``total`` keys; keys are shown without their first ``key_base`` characters
    (the prefix)."""
    first = errors[0]
    key = first.get("Key", "")[key_base:]
    code = first.get("Code", "")
    hint = (
        "check that these credentials may delete objects in this bucket and prefix"
        if code == "AccessDenied"
        else "retry; the objects that were deleted stay deleted"
    )
    return StorageError(
        f"could not delete {len(errors)} of {total} objects in {location} "
        f"(first: {key}: {code} {first.get('Message', '')})",
        hint,
    )
