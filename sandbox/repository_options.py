"""Knobs of the sandbox repository: limits, flavour and fault injection.

One flat, typed set of options so the same names work as CLI flags
(`--error-rate 0.1`), keyword arguments of `start_repository(...)`, and keys of
the runtime admin endpoint (`POST /_sandbox/config {"error_rate": 0.1}`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

GB = 10**9
# NRP's single-PUT limit ("about 50 MB"): 50 MiB, the same as its smallest multipart part,
# so a client that goes multipart above 50 MiB (ferry's default threshold) never hits it.
NRP_SINGLE_PUT = 50 * 1024 * 1024

PublishWorkflow = Literal["direct", "auto", "curator"]
MultipartChecksum = Literal["multipart", "missing"]


@dataclass
class RepositoryOptions:
    """Everything a test may want to change. Mutable: the admin endpoint edits it live."""

    # Rate limits per authenticated user (anonymous: per client address), two sliding
    # windows like InvenioRDM's defaults (100/min, 5000/h).
    rate_per_minute: int = 100
    rate_per_hour: int = 5000
    # Record limits (InvenioRDM: 100 files, 10 GB per file and per record).
    max_files: int = 100
    max_file_size: int = 10 * GB
    max_record_size: int = 10 * GB
    # NRP caps one whole-file (L) PUT at about 50 MB; larger files must go as M transfers,
    # whose parts (>= 50 MiB on NRP) are not capped. -1: NRP's cap (NRP_SINGLE_PUT) when
    # `nrp` is on, none otherwise; 0: no cap (stock InvenioRDM); N: at most N bytes.
    max_single_put: int = -1
    # NRP flavour: /.well-known/repository and the `particles` model under /api/particles.
    nrp: bool = True
    # Publishing NRP drafts: "direct" (actions/publish allowed, publish_draft request
    # auto-accepted too), "auto" (only via request, auto-accepted), "curator" (only via
    # request, left "submitted" until someone accepts it).
    publish_workflow: PublishWorkflow = "direct"
    # Known community slugs for parent.communities.default; empty accepts any slug.
    communities: list[str] = field(default_factory=list)
    # Search sees a change only after this delay (OpenSearch refresh interval).
    index_delay_ms: float = 0.0
    # After a multipart commit the md5 is computed by a background task that finishes
    # after this delay; until then the checksum is "multipart:..." or missing.
    checksum_delay_ms: float = 300.0
    multipart_checksum: MultipartChecksum = "multipart"
    # --- faults (seeded, so a test run is repeatable) ---
    seed: int = 0
    # Fraction of API requests answered 500/503 before doing anything.
    error_rate: float = 0.0
    # Fraction of API requests that take effect and then answer 502/504 (lost response).
    error_after_rate: float = 0.0
    # Regex on "METHOD /path" restricting the two error rates above ("" = every request).
    error_match: str = ""
    # Added latency per API request.
    latency_ms: float = 0.0
    # Bytes per second each upload body is read at (0 = as fast as it comes): a wide-area
    # link per connection, so a benchmark is bound by latency and bandwidth, not by CPU.
    body_bytes_per_s: float = 0.0
    # Content uploads (L content and M parts) whose connection is dropped mid-body.
    drop_rate: float = 0.0
    drop_next: int = 0
    # Content uploads answered 200 {"errors": "File upload transfer failed."} (entry deleted).
    transfer_fail_rate: float = 0.0
    transfer_fail_next: int = 0
    # Content uploads stored with one byte flipped: the md5 the server reports is wrong.
    corrupt_next: int = 0
    # The next N API requests answer 429 regardless of the windows.
    force_429: int = 0
    # Retry-After (seconds) sent with forced 429s and 503s.
    retry_after: int = 1
    # Every answer echoes the request's Authorization header (a response header, and the
    # message of error bodies): a leak test plants the token in everything the client reads.
    echo_auth: bool = False

    def update(self, values: dict[str, Any]) -> None:
        """Apply knob values (from JSON or CLI), converting and checking types."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        converted = {name: _convert(name, known[name].type, value) for name, value in values.items()}
        for name, value in converted.items():
            setattr(self, name, value)

    def single_put_cap(self) -> int:
        """The effective cap on one L content PUT in bytes (0: none)."""
        if self.max_single_put < 0:
            return NRP_SINGLE_PUT if self.nrp else 0
        return self.max_single_put

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_LITERALS: dict[str, tuple[str, ...]] = {
    "publish_workflow": get_args(PublishWorkflow),
    "multipart_checksum": get_args(MultipartChecksum),
}


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError("not a boolean")
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("not an integer")
    return int(value)


def _to_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]


# One converter per field type name; anything else (str, Optional[str]) is kept as text.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {"bool": _to_bool, "int": _to_int, "float": float}


def _convert(name: str, type_name: Any, value: Any) -> Any:
    """Coerce one knob value; strings are accepted for every type (CLI flags)."""
    kind = str(type_name)
    try:
        if name in _LITERALS:
            if value not in _LITERALS[name]:
                raise ValueError(f"must be one of {', '.join(_LITERALS[name])}")
            return value
        if kind.startswith("list"):
            return _to_list(value)
        return _CONVERTERS.get(kind, str)(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"knob {name}: {value!r}: {exc}") from exc


def knob_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RepositoryOptions)]
