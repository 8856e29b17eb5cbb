"""S3 failures as ``ferry.core.errors`` classes: ``map_s3_error``, the one place they are made.

The rule that matters most: only a real 404 means "absent". A 403, a bare 400 on a HEAD
(no body, so no reason: in practice expired or malformed credentials), a 500 or a
timeout is an error, so a refusal to read never makes us overwrite what we could not see.
Expired session credentials are ``CredentialsExpired``: not retryable, the run stops and a
re-run resumes once they are renewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Answer:
    """What an S3 error answer says: code, words, HTTP status and headers."""

    message: str  # "<what> <place>: <code> (<server's words>)"
    code: str
    status: int | None
    headers: dict[str, str]
    kw: dict[str, Any]  # recid, file, status: for the error class
    write: bool

    @classmethod
    def of(cls, exc: bce.ClientError, where: str, kw: dict[str, Any], write: bool) -> _Answer:
        response: Mapping[str, Any] = exc.response or {}
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        status = int(meta.get("HTTPStatusCode") or 0) or None
        code = str(error.get("Code") or status or "")
        text = str(error.get("Message") or "").strip()
        headers = {str(k).title(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
        message = f"{where}: {code}" + (f" ({text})" if text and text != code else "")
        return cls(message, code, status, headers, {**kw, "status": status}, write)


def _plain(cls: type[FerryError]) -> Callable[[_Answer], FerryError]:
    return lambda a: cls(a.message, **a.kw)


def _expired(a: _Answer) -> FerryError:
    return CredentialsExpired(f"{a.message}: the credentials have expired; renew them and run again", **a.kw)


def _slow_down(a: _Answer) -> FerryError:
    err = RateLimited(a.message, retry_after=server_delay(a.headers), status=a.status)
    err.recid, err.file = a.kw["recid"], a.kw["file"]
    return err


def _bad_digest(a: _Answer) -> FerryError:
    message = f"{a.message}: the bytes sent do not match their checksum"
    return VerificationError(message, recid=a.kw["recid"], file=a.kw["file"])


def _unavailable(a: _Answer) -> FerryError:
    err = TargetUnavailable(a.message, **a.kw)
    err.maybe_applied = a.write
    return err


def _statuses(*statuses: int) -> Callable[[int | None], bool]:
    return lambda status: status in statuses


def _server_side(status: int | None) -> bool:
    return status is not None and status >= 500


# An error answer's class: the first row whose codes hold its code, or whose status test
# accepts its HTTP status, decides (so an expired token wins over its 403, a SlowDown over its 503).
_ANSWERS: tuple[tuple[set[str], Callable[[int | None], bool], Callable[[_Answer], FerryError]], ...] = (
    (_EXPIRED, _statuses(), _expired),
    (_AUTH, _statuses(401, 403), _plain(AuthError)),
    (_SLOW, _statuses(429), _slow_down),
    (_NOT_FOUND, _statuses(404), _plain(TargetNotFound)),
    (_DIGEST, _statuses(), _bad_digest),
    (_QUOTA, _statuses(413), _plain(QuotaError)),
    (_CONFLICT, _statuses(409, 412), _plain(Conflict)),
    (_TRANSIENT, _server_side, _unavailable),
)


def _from_answer(a: _Answer, what: str) -> FerryError:
    for codes, status_test, make in _ANSWERS:
        if a.code in codes or status_test(a.status):
            return make(a)
    if a.status == 400 and what == "HEAD" and a.code == "400":
        # A HEAD answer has no body, hence no reason: in practice expired or malformed
        # credentials or a wrong region. Never "absent".
        return AuthError(f"{a.message}: refused without a reason (expired credentials or wrong region?)", **a.kw)
    return TargetError(a.message, **a.kw)


# What no error answer came with, by exception class: (classes, maker(exc, "<what> <place>", kw, write)).
_Maker = Callable[[BaseException, str, dict[str, Any], bool], FerryError]


def _lost(exc: BaseException, where: str, kw: dict[str, Any], write: bool) -> FerryError:
    # Connection refused/reset, timeouts (ConnectTimeoutError, ReadTimeoutError are botocore's HTTPClientError).
    err = TargetUnavailable(f"{where}: {type(exc).__name__}: {exc}", **kw)
    # A request that never reached the server cannot have been applied.
    never_sent = isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError)
    err.maybe_applied = write and not never_sent
    return err


def _lost_aiohttp(exc: BaseException, where: str, kw: dict[str, Any], write: bool) -> FerryError:
    err = TargetUnavailable(f"{where}: {type(exc).__name__}: {exc}", **kw)
    err.maybe_applied = write
    return err


def _no_credentials(exc: BaseException, where: str, kw: dict[str, Any], write: bool) -> FerryError:
    return AuthError(f"{where}: no usable AWS credentials ({exc}); set a profile or AWS_* variables", **kw)


def _not_renewed(exc: BaseException, where: str, kw: dict[str, Any], write: bool) -> FerryError:
    return CredentialsExpired(f"{where}: credentials could not be renewed ({exc}); renew them and run again")


def _bad_config(exc: BaseException, where: str, kw: dict[str, Any], write: bool) -> FerryError:
    return ConfigError(f"{where}: {exc}")


def _client_side(exc: BaseException, where: str, kw: dict[str, Any], write: bool) -> FerryError:
    return TargetError(f"{where}: {type(exc).__name__}: {exc}", **kw)


_NO_ANSWER: tuple[tuple[tuple[type[BaseException], ...], _Maker], ...] = (
    ((bce.NoCredentialsError, bce.PartialCredentialsError), _no_credentials),
    ((bce.ProfileNotFound,), _bad_config),
    (
        (bce.CredentialRetrievalError, bce.TokenRetrievalError, bce.SSOTokenLoadError, bce.UnauthorizedSSOTokenError),
        _not_renewed,
    ),
    ((bce.ParamValidationError, bce.InvalidRegionError, bce.NoRegionError), _bad_config),
    ((bce.HTTPClientError, bce.EndpointConnectionError, bce.ResponseStreamingError), _lost),
    ((aiohttp.ClientError, asyncio.TimeoutError, OSError), _lost_aiohttp),
    ((bce.BotoCoreError,), _client_side),
)


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
    where = f"{what} {place}"
    kw: dict[str, Any] = {"recid": recid, "file": file}
    if isinstance(exc, bce.ClientError):
        return _from_answer(_Answer.of(exc, where, kw, write), what)
    for classes, make in _NO_ANSWER:
        if isinstance(exc, classes):
            return make(exc, where, kw, write)
    return TargetError(f"{where}: unexpected {type(exc).__name__}: {exc}", **kw)
