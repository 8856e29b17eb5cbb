"""The one error tree of dataferry.

Every failure the pipeline can meet is a ``FerryError``. Library errors (aiohttp, XRootD,
OS) are translated where they enter, with ``raise ... from exc``. Each class says whether a
retry can help (``retryable``); only the CLI turns errors into messages and exit codes.
Subclasses also inherit the matching built-in where one exists, so generic handlers work.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping, Sequence


class FerryError(Exception):
    """Root of all dataferry errors. ``recid``/``file``/``field`` name what went wrong.

    The facts a caller decides on are typed fields, set by whoever learns them:
    ``retryable`` (a retry can help), ``maybe_applied`` (a request that changes state may
    have taken effect although its answer was lost: look before repeating it),
    ``retry_after`` (seconds the server asked us to wait), ``attempts`` (tries spent) and
    ``bytes_transferred`` (bytes moved before the failure).
    """

    retryable: bool = False
    maybe_applied: bool = False
    retry_after: float | None = None
    attempts: int = 1
    bytes_transferred: int = 0

    def __init__(
        self,
        message: str,
        *,
        recid: str | None = None,
        file: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.recid = recid
        self.file = file
        self.field = field

    def where(self) -> str:
        parts = []
        if self.recid is not None:
            parts.append(f"record {self.recid}")
        if self.file is not None:
            parts.append(f"file {self.file}")
        if self.field is not None:
            parts.append(f"field {self.field}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    @property
    def kind(self) -> str:
        """Short type name used in stats (``error_type``)."""
        return type(self).__name__


# --- local faults -------------------------------------------------------------------------


class DiskFull(FerryError):
    """A local write found no space (ENOSPC, SQLite's "database or disk is full"). Not a
    record's fault and not retryable in this run: the run stops, naming what it was writing,
    how much it needed and what was free; run again once there is space."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str],
        needed: int | None = None,
        recid: str | None = None,
        file: str | None = None,
    ) -> None:
        self.path = str(path)
        self.needed = needed
        self.free = _free_bytes(self.path)
        facts = [f"while writing {self.path}"]
        if needed is not None:
            facts.append(f"needed {needed} bytes")
        if self.free is not None:
            facts.append(f"{self.free} bytes free")
        super().__init__(f"{message}: disk full ({', '.join(facts)}); free space and run again", recid=recid, file=file)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, here or anywhere in the cause chain (a wrapped OSError counts)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DiskFull):
            return True
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(cur) and type(cur).__name__ == "OperationalError":
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _free_bytes(path: str) -> int | None:
    probe = os.path.dirname(path) or "."
    while probe and not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    try:
        return shutil.disk_usage(probe or ".").free
    except OSError:
        return None


# --- configuration and input -------------------------------------------------------------


class ConfigError(FerryError, ValueError):
    """The configuration file, a flag or an environment variable is wrong."""


class InputError(FerryError, ValueError):
    """Input data (a record, a recid list, a cache) is malformed."""


class ChecksumFormatError(InputError):
    """A checksum string cannot be parsed (unknown algorithm, bad hex)."""


class UnsafePathError(InputError):
    """A URI, key or archive entry would escape its folder (``..``, absolute, NUL, empty)."""


class NoFilesError(InputError):
    """A record lists no files at all (parents with only ``relations``)."""


# --- sources ------------------------------------------------------------------------------


class SourceError(FerryError):
    """Reading from a source (portal API, XRootD, HTTPS) failed."""


class RecordNotFound(SourceError, LookupError):
    """The source does not know this recid."""


class SourceUnavailable(SourceError, ConnectionError):
    """The source did not answer or answered with a transient error."""

    retryable = True


class SourceFileMissing(SourceError, FileNotFoundError):
    """The source has no such file."""


class DownloadFailed(SourceError):
    """Some files of a record could not be fetched and verified; ``failures`` names them."""

    def __init__(
        self,
        message: str,
        *,
        failures: Mapping[str, str],
        retryable: bool = False,
        recid: str | None = None,
    ) -> None:
        super().__init__(message, recid=recid)
        self.failures = dict(failures)
        self.retryable = retryable


class VerificationError(FerryError):
    """Bytes arrived but their size or checksum is not the expected one."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        actual: str | None = None,
        recid: str | None = None,
        file: str | None = None,
    ) -> None:
        super().__init__(message, recid=recid, file=file)
        self.expected = expected
        self.actual = actual


# --- targets ------------------------------------------------------------------------------


class TargetError(FerryError):
    """A target repository refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        recid: str | None = None,
        file: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, recid=recid, file=file, field=field)
        self.status = status


class AuthError(TargetError, PermissionError):
    """Missing, wrong or insufficient credentials (401/403)."""


class ValidationError(TargetError):
    """Metadata does not satisfy a schema; ``errors`` maps field paths to messages."""

    def __init__(
        self,
        message: str,
        *,
        errors: Mapping[str, Sequence[str]] | None = None,
        status: int | None = None,
        recid: str | None = None,
    ) -> None:
        super().__init__(message, status=status, recid=recid)
        self.errors: dict[str, list[str]] = {k: list(v) for k, v in (errors or {}).items()}

    def __str__(self) -> str:
        base = super().__str__()
        if not self.errors:
            return base
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(self.errors.items()))
        return f"{base} ({details})"


class QuotaError(TargetError):
    """A target limit is exceeded (files per record, bytes per file or record)."""


class RateLimited(TargetError):
    """The target asked us to slow down (429/503); ``retry_after`` is in seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after: float | None = retry_after


class TransferFailed(TargetError):
    """Upload of file content failed (including InvenioRDM's 200-with-errors)."""

    retryable = True


class TargetNotFound(TargetError, LookupError):
    """The target does not have the record or file asked for."""


class TargetUnavailable(TargetError, ConnectionError):
    """The target did not answer, or answered 5xx."""

    retryable = True


class Conflict(TargetError):
    """The request conflicts with the target's state (duplicate key, locked files, 412)."""


def is_retryable(exc: BaseException) -> bool:
    """True when repeating the same operation may succeed."""
    return isinstance(exc, FerryError) and exc.retryable


def maybe_applied(exc: BaseException) -> bool:
    """True when a failed request may still have taken effect on the server."""
    return isinstance(exc, FerryError) and exc.maybe_applied
