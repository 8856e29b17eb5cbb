"""S3 failures as ``ferry.core.errors`` classes: ``map_s3_error``, the one place they are made.

The rule that matters most: only a real 404 means "absent". A 403, a bare 400 on a HEAD
(no body, so no reason: in practice expired or malformed credentials), a 500 or a
timeout is an error, so a refusal to read never makes us overwrite what we could not see.
Expired session credentials are ``CredentialsExpired``: not retryable, the run stops and a
re-run resumes once they are renewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import botocore.exceptions as bce

from ferry.core.errors import (
    AuthError,
    ConfigError,
    Conflict,
    FerryError,
    QuotaError,
    RateLimited,
    TargetError,
    TargetNotFound,
    TargetUnavailable,
    VerificationError,
)
from ferry.core.retry import server_delay


class CredentialsExpired(AuthError):
    """The credentials ran out mid-run (STS/Access Grants session tokens): nothing more can be
    written until they are renewed. Not retryable; the run stops and a re-run resumes."""


# --- errors ------------------------------------------------------------------------------

_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
_AUTH = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "AuthorizationHeaderMalformed",
    "InvalidSecurity",
    "AccountProblem",
    "NotSignedUp",
}
_NOT_FOUND = {"NoSuchKey", "NotFound", "NoSuchUpload", "NoSuchBucket", "NoSuchVersion", "404"}
_SLOW = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_TRANSIENT = {"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "OperationAborted"}
_DIGEST = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "IncompleteBody"}
_QUOTA = {"EntityTooLarge", "MaxMessageLengthExceeded", "TooManyParts", "QuotaExceeded"}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "BucketAlreadyOwnedByYou", "InvalidObjectState"}


def map_s3_error(
    exc: BaseException,
    *,
    what: str,
    bucket: str | None = None,
    key: str | None = None,
    recid: str | None = None,
    file: str | None = None,
    write: bool = False,
) -> FerryError:
    """The ``ferry.core.errors`` class for anything a client call raised.

    ``what`` names the operation (``HEAD``, ``upload part 3``); ``bucket``/``key`` where;
    ``recid``/``file`` the record and file it was for. ``write``: the request changes
    state, so a lost answer is marked ``maybe_applied`` (the caller looks before repeating).
    Messages carry the server's code and words, never credentials.
    """
    if isinstance(exc, FerryError):
        return exc
    place = f"s3://{bucket}/{key}" if bucket and key else f"s3://{bucket}" if bucket else "S3"
    kw: dict[str, Any] = {"recid": recid, "file": file}
    err: FerryError
    if isinstance(exc, bce.ClientError):
        response: Mapping[str, Any] = exc.response or {}
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        status = int(meta.get("HTTPStatusCode") or 0) or None
        code = str(error.get("Code") or status or "")
        text = str(error.get("Message") or "").strip()
        headers = {str(k).title(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
        message = f"{what} {place}: {code}" + (f" ({text})" if text and text != code else "")
        kw["status"] = status
        if code in _EXPIRED:
            err = CredentialsExpired(f"{message}: the credentials have expired; renew them and run again", **kw)
        elif code in _AUTH or status in (401, 403):
            err = AuthError(message, **kw)
        elif code in _SLOW or status == 429:
            err = RateLimited(message, retry_after=server_delay(headers), status=status)
            err.recid, err.file = recid, file
        elif code in _NOT_FOUND or status == 404:
            err = TargetNotFound(message, **kw)
        elif code in _DIGEST:
            err = VerificationError(f"{message}: the bytes sent do not match their checksum", recid=recid, file=file)
        elif code in _QUOTA or status == 413:
            err = QuotaError(message, **kw)
        elif code in _CONFLICT or status in (409, 412):
            err = Conflict(message, **kw)
        elif code in _TRANSIENT or (status is not None and status >= 500):
            err = TargetUnavailable(message, **kw)
            err.maybe_applied = write
        elif status == 400 and what == "HEAD" and code == "400":
            # A HEAD answer has no body, hence no reason: in practice expired or malformed
            # credentials or a wrong region. Never "absent".
            err = AuthError(f"{message}: refused without a reason (expired credentials or wrong region?)", **kw)
        else:
            err = TargetError(message, **kw)
    elif isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        err = AuthError(f"{what} {place}: no usable AWS credentials ({exc}); set a profile or AWS_* variables", **kw)
    elif isinstance(exc, bce.ProfileNotFound):
        err = ConfigError(f"{what} {place}: {exc}")
    elif isinstance(
        exc,
        bce.CredentialRetrievalError | bce.TokenRetrievalError | bce.SSOTokenLoadError | bce.UnauthorizedSSOTokenError,
    ):
        err = CredentialsExpired(f"{what} {place}: credentials could not be renewed ({exc}); renew them and run again")
    elif isinstance(exc, bce.ParamValidationError | bce.InvalidRegionError | bce.NoRegionError):
        err = ConfigError(f"{what} {place}: {exc}")
    elif isinstance(exc, bce.HTTPClientError | bce.EndpointConnectionError | bce.ResponseStreamingError):
        # Connection refused/reset, timeouts (ConnectTimeoutError, ReadTimeoutError are here too).
        err = TargetUnavailable(f"{what} {place}: {type(exc).__name__}: {exc}", **kw)
        err.maybe_applied = write and not isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError)
    elif isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        err = TargetUnavailable(f"{what} {place}: {type(exc).__name__}: {exc}", **kw)
        err.maybe_applied = write
    elif isinstance(exc, bce.BotoCoreError):
        err = TargetError(f"{what} {place}: {type(exc).__name__}: {exc}", **kw)
    else:
        err = TargetError(f"{what} {place}: unexpected {type(exc).__name__}: {exc}", **kw)
    return err
